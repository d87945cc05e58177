"""The JSON ``agentpool status`` prints and the daemon serves on ``/status``.

One function of values the engine holds (config, memory, last pass, image states), kept
out of :class:`agentpool.engine.Engine` so the engine is its pass and its controls while
what is shown about it reads like the document it produces.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from agentpool import planner
from agentpool.config import Config
from agentpool.hoststatus import ImageState, host_status
from agentpool.model import AgentMemory, Memory, Node
from agentpool.report import PassReport


def status(
    config: Config,
    memory: Memory,
    report: PassReport | None,
    last_success: float | None,
    retired: Iterable[str],
    images: Mapping[str, Mapping[str, ImageState]],
    now: float,
) -> dict[str, Any]:
    """The status document at ``now``; ``retired`` names hosts gone from the config but kept."""
    nodes = {n.name: n for n in (report.observed.nodes or ())} if report else {}
    agents = [
        agent_status(memory, agent, nodes.get(name), now) for name, agent in sorted(memory.agents.items())
    ]
    plan = report.plan if report else None
    return {
        "instance": config.instance,
        "last_pass": report.started if report else None,
        "last_success": last_success,
        "error": report.error if report else "",
        "agents": agents,
        "demand": dict(plan.demand) if plan else {},
        "unserved": [
            {"item": u.item_id, "task": u.task_name, "label": u.label, "why": u.why}
            | ({"label_inferred": True} if u.inferred else {})
            for u in (plan.unserved if plan else ())
        ],
        "labels_inferred": {str(item): how for item, how in (plan.inferred if plan else {}).items()},
        "daemon_id": memory.daemon_id,
        "neighbours": list(plan.neighbours) if plan else [],
        "retired_hosts": sorted(retired),
        "pools": {
            name: {
                "draining": mem.draining,
                "backoff_until": mem.backoff_until,
                "consecutive_failures": mem.consecutive_failures,
            }
            for name, mem in memory.pools.items()
        },
        "hosts": host_status(config, memory, report, images, now),
    }


def agent_status(memory: Memory, agent: AgentMemory, node: Node | None, now: float) -> dict[str, Any]:
    """One agent as ``status`` lists it: where it runs, its state, age and idle seconds."""
    pool_memory = memory.pools.get(agent.pool)
    host_memory = memory.hosts.get(agent.host)
    draining = bool(pool_memory and pool_memory.draining) or bool(host_memory and host_memory.draining)
    state = planner.agent_state(agent, node, draining)
    return {
        "name": agent.name,
        "pool": agent.pool,
        "host": agent.host,
        "state": state.value,
        "age": round(now - agent.launched_at, 1),
        "idle": round(now - agent.idle_since, 1) if agent.idle_since is not None else None,
    }
