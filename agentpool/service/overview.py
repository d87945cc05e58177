"""The one status dict behind ``/status``, the status page and ``agentpool status``.

The engine's own :meth:`~agentpool.engine.Engine.status` says what it remembers (agents,
demand, unserved items, pool memory). An operator also wants each pool's cap and agents by
state, the Docker hosts and whether they answered, the build each agent runs, and, from a
running daemon, the recent decisions and queued → online percentiles. This module adds those
from the engine's last report and config, without changing the engine, so the three views
can never disagree: they all render this dict.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from agentpool import planner
from agentpool.logs import redact
from agentpool.model import AgentState, Memory, Plan

if TYPE_CHECKING:
    from agentpool.config import Config
    from agentpool.report import EngineControl
    from agentpool.service.recent import Recent

# The planner's why texts, as the short reason the metrics and alerts use.
_REASONS = (
    (planner.WHY_NO_POOL, "no-pool"),
    (f"{planner.WHY_CAP} (every docker host", "hosts-full"),
    (planner.WHY_CAP, "cap"),
    (planner.WHY_BACKOFF, "backoff"),
    (planner.WHY_DRAINING, "draining"),
    (planner.WHY_NO_HOST, "no-host"),
    ("label unknown", "label-unknown"),
)


def unserved_reason(why: str) -> str:
    """``cap reached (pool p: max_agents 3)`` → ``cap``; ``other`` for a text not known here."""
    return next((reason for prefix, reason in _REASONS if why.startswith(prefix)), "other")


def unserved_counts(plan: Plan, config: Config) -> dict[tuple[str, str], int]:
    """Unserved items per ``(pool, reason)``; the pool is the one that would serve the label, or ""."""
    counts: Counter[tuple[str, str]] = Counter()
    for item in plan.unserved:
        pools = planner.matching_pools(item.label, config.pools) if item.label is not None else []
        counts[(pools[0].name if pools else "", unserved_reason(item.why))] += 1
    return dict(counts)


def pool_gauges(memory: Memory, config: Config, now: float) -> dict[str, dict[str, float]]:
    """Per configured pool: ``max_agents``, ``backoff`` (1 while backing off), ``draining`` (1/0)."""
    gauges = {}
    for pool in config.pools:
        mem = memory.pools.get(pool.name)
        gauges[pool.name] = {
            "max_agents": float(pool.max_agents),
            "backoff": 1.0 if mem is not None and mem.backoff_until > now else 0.0,
            "draining": 1.0 if mem is not None and mem.draining else 0.0,
        }
    return gauges


def _public_url(url: str) -> str:
    """``url`` without a password (``tcp://user:pw@host`` → ``tcp://user@host``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def overview(engine: EngineControl, recent: Recent | None = None) -> dict[str, Any]:
    status = engine.status()
    now = engine.clock()
    config = engine.config
    report = engine.last_report
    nodes = {n.name: n for n in (report.observed.nodes or ())} if report else {}
    status["generated"] = round(now, 3)
    status["poll_interval"] = config.poll_interval

    for agent in status["agents"]:
        node = nodes.get(agent["name"])
        builds = [e.build_url for e in node.executors if e.build_url] if node else []
        agent["build"] = builds[0] if builds else None

    by_pool: Counter[tuple[str, str]] = Counter((a["pool"], a["state"]) for a in status["agents"])
    remembered = status.get("pools") or {}
    pools: dict[str, Any] = {}
    for pool in config.pools:
        mem = remembered.get(pool.name, {})
        backoff_until = float(mem.get("backoff_until") or 0.0)
        states = {s.value: by_pool[(pool.name, s.value)] for s in AgentState}
        pools[pool.name] = {
            **mem,
            "labels": sorted(pool.labels),
            "max_agents": pool.max_agents,
            "min_idle": pool.min_idle,
            "agents": sum(states.values()),
            "states": states,
            "draining": bool(mem.get("draining", False)),
            "consecutive_failures": int(mem.get("consecutive_failures") or 0),
            "backoff_until": backoff_until,
            "backoff_seconds": max(0, round(backoff_until - now)) if backoff_until > now else 0,
            "at_cap": sum(states.values()) >= pool.max_agents,
        }
    status["pools"] = pools

    views = {h.name: h for h in (report.observed.hosts if report else ())}
    per_host = Counter(a["host"] for a in status["agents"])
    status["hosts"] = [
        {
            "name": host.name,
            "url": _public_url(host.url),
            "max_agents": host.max_agents,
            "agents": per_host[host.name],
            "reachable": views[host.name].reachable if host.name in views else None,
            "error": redact(views[host.name].error) if host.name in views else "",
        }
        for host in config.docker_hosts
    ]

    # Items whose label Jenkins hides are not in the demand (label None): listed apart.
    for item in status["unserved"]:
        item["reason"] = unserved_reason(item["why"])
    unserved_by_label: Counter[str | None] = Counter(u["label"] for u in status["unserved"])
    status["waiting"] = [
        {"label": label, "count": count, "unserved": unserved_by_label[label]}
        for label, count in sorted(status.get("demand", {}).items())
    ]
    if unserved_by_label[None]:
        hidden = unserved_by_label[None]
        status["waiting"].append({"label": None, "count": hidden, "unserved": hidden})
    status["queued_to_online"] = recent.waits(now) if recent is not None else None
    status["decisions"] = recent.decisions() if recent is not None else []
    return status
