"""The pool's ``security`` profile as Docker container options, in one place.

The executor (when it starts agent containers) and ``agentpool doctor`` (when it proves a
profile really starts on a host) must ask the engine for exactly the same thing, or doctor
would vouch for a container the daemon never starts. Both create containers through
:func:`create_container`, which applies :func:`host_config_kwargs` (Docker SDK keywords) and
:func:`host_config_fields` (raw Engine API fields). Those two are pure and tested directly.

Why two: ``--security-opt systempaths=unconfined`` is not an Engine API option. The docker
CLI translates it into empty ``MaskedPaths`` and ``ReadonlyPaths`` in the HostConfig; the
engine rejects it as a security option (``invalid --security-opt 2``), and the SDK has no
keyword for those two fields. Without it ``/proc/sys`` stays read-only and an inner dockerd
cannot set up its networking.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from docker.models.containers import _create_container_args

from agentpool.capabilities import CAPABILITIES

PROFILES = ("privileged", "capabilities", "sysbox")


def normalise_capability(name: str) -> str:
    """``cap_sys_resource`` / ``CAP_SYS_RESOURCE`` / ``SYS_RESOURCE`` → ``SYS_RESOURCE``."""
    cap = name.strip().upper()
    cap = cap.removeprefix("CAP_")
    if cap not in CAPABILITIES:
        raise ValueError(f"unknown capability {name!r} in cap_drop (expected e.g. SYS_RESOURCE)")
    return cap


def missing_capabilities(bounding_set: int, last_cap: int = len(CAPABILITIES) - 1) -> list[str]:
    """Capabilities up to ``last_cap`` absent from a ``CapBnd`` bit mask (``/proc/PID/status``)."""
    top = min(last_cap, len(CAPABILITIES) - 1)
    return [CAPABILITIES[bit] for bit in range(top + 1) if not bounding_set >> bit & 1]


def host_config_kwargs(security: str, cap_drop: list[str]) -> dict[str, Any]:
    """Docker SDK keywords (``containers.create``, ``api.create_host_config``) for a profile.

    ``privileged``: Privileged (every capability, every device, no confinement).
    ``capabilities``: every capability except ``cap_drop``, unconfined AppArmor, seccomp and
    (with :func:`host_config_fields`) /proc, /sys paths, and every device: enough for an inner dockerd where
    privileged is refused (a host whose capability bounding set lacks one).
    ``sysbox``: the sysbox-runc runtime, which needs no extra privilege at all.
    """
    if security == "capabilities":
        return {
            "cap_add": ["ALL"],
            "cap_drop": [normalise_capability(c) for c in cap_drop],
            # systempaths=unconfined: see host_config_fields.
            "security_opt": ["apparmor=unconfined", "seccomp=unconfined"],
            "device_cgroup_rules": ["a *:* rwm"],
        }
    if security not in PROFILES:
        raise ValueError(f"unknown security profile {security!r}: expected one of {', '.join(PROFILES)}")
    if cap_drop:
        raise ValueError(f"cap_drop applies only to security: capabilities, not {security!r}")
    if security == "privileged":
        return {"privileged": True}
    return {"runtime": "sysbox-runc"}


def host_config_fields(security: str) -> dict[str, Any]:
    """Engine API HostConfig fields the SDK has no keyword for (``systempaths=unconfined``)."""
    if security == "capabilities":
        return {"MaskedPaths": [], "ReadonlyPaths": []}
    return {}


def host_config(api: Any, security: str, cap_drop: Sequence[str], **kwargs: Any) -> dict[str, Any]:
    """``api.create_host_config(**kwargs)`` (the SDK's low-level API) with the profile applied."""
    config: dict[str, Any] = api.create_host_config(**kwargs, **host_config_kwargs(security, list(cap_drop)))
    config.update(host_config_fields(security))
    return config


def create_container(client: Any, image: str, security: str, cap_drop: list[str], **kwargs: Any) -> Any:
    """``client.containers.create(image, **kwargs)`` with the pool's security profile applied.

    ``kwargs`` are the SDK's ``containers.create`` keywords (name, labels, environment,
    volumes, entrypoint, command, mem_limit, nano_cpus, …). Returns the SDK ``Container``.
    """
    kwargs.update(host_config_kwargs(security, cap_drop))
    kwargs.update(image=image, version=client.api._version)
    kwargs.setdefault("command", None)
    create_kwargs = _create_container_args(kwargs)
    create_kwargs["host_config"].update(host_config_fields(security))
    created = client.api.create_container(**create_kwargs)
    return client.containers.get(created["Id"])
