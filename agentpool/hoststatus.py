"""Each docker host as ``status`` and the metrics show it: agents, room, health, last error, images.

One function of the config, the planner's memory, the last pass and the image states, shared
by the engine's ``status`` and the service layer's metrics so that both say the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from agentpool.config import Config
from agentpool.model import Memory

if TYPE_CHECKING:
    from agentpool.report import PassReport


class ImageState(Protocol):
    """An image's state on a host (:class:`agentpool.hostimages.ImageState`)."""

    @property
    def state(self) -> str: ...

    @property
    def detail(self) -> str: ...


def health(config: Config, memory: Memory, host: str, now: float) -> str:
    """``ok``, ``unreachable``, ``lost``, ``draining``, ``cooling`` (some pool), ``removed``."""
    mem = memory.hosts.get(host)
    if mem is not None and mem.unreachable_since is not None:
        return "lost" if now - mem.unreachable_since >= config.host_lost_after else "unreachable"
    if config.host(host) is None:
        return "removed"
    if mem is not None and mem.draining:
        return "draining"
    if any(h == host and cd.until > now for (h, _), cd in memory.cooldowns.items()):
        return "cooling"
    return "ok"


def host_status(
    config: Config,
    memory: Memory,
    report: PassReport | None,
    images: Mapping[str, Mapping[str, ImageState]],
    now: float,
) -> dict[str, dict[str, Any]]:
    names = [h.name for h in config.docker_hosts]
    names += sorted({a.host for a in memory.agents.values()} - set(names))
    views = {v.name: v for v in (report.observed.hosts if report else ())}
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        host = config.host(name)
        mem = memory.hosts.get(name)
        agents = sum(1 for a in memory.agents.values() if a.host == name)
        view = views.get(name)
        containers = len(view.containers) if view is not None and view.reachable else agents
        cooling = {
            pool: {"seconds_left": round(cd.until - now), "failures": cd.failures, "error": cd.error}
            for (h, pool), cd in sorted(memory.cooldowns.items())
            if h == name and cd.until > now
        }
        out[name] = {
            "url": host.url if host else None,
            "tags": list(host.tags) if host else [],
            "health": health(config, memory, name, now),
            "reachable": view.reachable if view is not None else None,
            "unreachable_for": round(now - mem.unreachable_since) if mem and mem.unreachable_since else None,
            "draining": bool(mem and mem.draining) or host is None,
            "agents": agents,
            "max_agents": host.max_agents if host else 0,
            "room": max(0, host.max_agents - max(agents, containers)) if host else 0,
            "cooling": cooling,
            "last_error": mem.last_error if mem else "",
            "images": {
                image: {"state": s.state, "detail": s.detail} for image, s in images.get(name, {}).items()
            },
        }
    return out
