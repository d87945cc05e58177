"""The pool's ``security`` profile as Docker SDK arguments, in one place.

The executor (when it starts agent containers) and ``agentpool doctor`` (when it proves a
profile really starts on a host) must ask the engine for exactly the same thing, or doctor
would vouch for a container the daemon never starts. Both call :func:`host_config_kwargs`.
It is pure: no engine is asked, so it is tested directly.
"""

from __future__ import annotations

from typing import Any

PROFILES = ("privileged", "capabilities", "sysbox")

# Linux capability names by number (include/uapi/linux/capability.h), without the CAP_ prefix.
CAPABILITIES: tuple[str, ...] = (
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
)


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
    """Keyword arguments for ``client.containers.run/create`` that apply a security profile.

    ``privileged``: Privileged (every capability, every device, no confinement).
    ``capabilities``: every capability except ``cap_drop``, unconfined AppArmor, seccomp and
    /proc, /sys paths, and access to every device: enough for an inner dockerd where
    privileged is refused (a host whose capability bounding set lacks one).
    ``sysbox``: the sysbox-runc runtime, which needs no extra privilege at all.
    """
    if security == "capabilities":
        return {
            "cap_add": ["ALL"],
            "cap_drop": [normalise_capability(c) for c in cap_drop],
            "security_opt": ["apparmor=unconfined", "seccomp=unconfined", "systempaths=unconfined"],
            "device_cgroup_rules": ["a *:* rwm"],
        }
    if security not in PROFILES:
        raise ValueError(f"unknown security profile {security!r}: expected one of {', '.join(PROFILES)}")
    if cap_drop:
        raise ValueError(f"cap_drop applies only to security: capabilities, not {security!r}")
    if security == "privileged":
        return {"privileged": True}
    return {"runtime": "sysbox-runc"}
