"""Memory updates: the planner's state from pass to pass, changed only by returning a new one.

The engine folds the executor's outcomes back through the ``record_*`` functions; the
planner's own phases return the new memory of each agent. None of them changes its input.
"""

from __future__ import annotations

from dataclasses import fields

from agentpool.model import AgentMemory, Cooldown, HostMemory, Memory, PoolMemory, Provision, ResourceKind

# A pool's launch failures back it off 10 s · 2^(n-1), at most 10 minutes.
BACKOFF_BASE = 10.0
BACKOFF_MAX = 600.0

_AGENT_FIELDS = tuple(f.name for f in fields(AgentMemory))
_POOL_FIELDS = tuple(f.name for f in fields(PoolMemory))
_HOST_FIELDS = tuple(f.name for f in fields(HostMemory))
_COOLDOWN_FIELDS = tuple(f.name for f in fields(Cooldown))


def copy_memory(memory: Memory) -> Memory:
    """A copy sharing nothing mutable with ``memory`` (faster than ``deepcopy`` for 1,000s of agents)."""
    return Memory(
        agents={
            name: AgentMemory(**{f: getattr(a, f) for f in _AGENT_FIELDS})
            for name, a in memory.agents.items()
        },
        pools={
            name: PoolMemory(**{f: getattr(p, f) for f in _POOL_FIELDS}) for name, p in memory.pools.items()
        },
        hosts={
            name: HostMemory(**{f: getattr(h, f) for f in _HOST_FIELDS}) for name, h in memory.hosts.items()
        },
        cooldowns={
            key: Cooldown(**{f: getattr(c, f) for f in _COOLDOWN_FIELDS})
            for key, c in memory.cooldowns.items()
        },
        orphan_seen=dict(memory.orphan_seen),
        item_first_seen=dict(memory.item_first_seen),
        item_labels=dict(memory.item_labels),
        item_refused=dict(memory.item_refused),
        daemon_id=memory.daemon_id,
        boot=memory.boot,
        last_ticks=memory.last_ticks,
    )


def record_provisioned(memory: Memory, action: Provision, now: float, volume: str | None = None) -> Memory:
    """A Provision succeeded (node, volume, container): remember the agent as starting."""
    out = copy_memory(memory)
    out.agents[action.agent] = AgentMemory(
        name=action.agent,
        pool=action.pool,
        host=action.host,
        launched_at=now,
        volume=volume if volume is not None else (action.lease_volume or f"{action.agent}-docker"),
        needed_since=action.needed_since,
        waited=0.0,
    )
    return out


def record_launch_failure(
    memory: Memory,
    pool: str,
    now: float,
    *,
    host: str | None = None,
    error: str = "",
    planned_at: float | None = None,
) -> Memory:
    """A launch failed (provision error, launch timeout, died before connecting).

    On a ``host`` (the backend refused, or the agent never came up there): that host cools
    down for the pool, which goes on elsewhere; without one (Jenkins refused the node) the
    pool backs off. The actions of one pass (``planned_at``) count one failure per host and
    pool, however many of them fail.
    """
    out = copy_memory(memory)
    state = out.pools.setdefault(pool, PoolMemory())
    if planned_at is None or state.counted_pass != planned_at:
        state.consecutive_failures += 1
        state.counted_pass = planned_at
        if host is None:
            state.backoff_until = now + backoff_delay(state.consecutive_failures)
    if host is not None:
        cooldown = out.cooldowns.setdefault((host, pool), Cooldown())
        cooldown.error = error
        if planned_at is None or cooldown.counted_pass != planned_at:
            cooldown.failures += 1
            cooldown.counted_pass = planned_at
            cooldown.until = now + backoff_delay(cooldown.failures)
        host_state = out.hosts.setdefault(host, HostMemory())
        host_state.last_error, host_state.last_error_at = error, now
    return out


def backoff_delay(failures: int) -> float:
    """Seconds a pool waits after ``failures`` consecutive launch failures."""
    if failures <= 0:
        return 0.0
    return min(BACKOFF_MAX, BACKOFF_BASE * 2.0 ** min(failures - 1, 30))


def record_pool_success(memory: Memory, pool: str) -> Memory:
    """An agent of ``pool`` came online: its failures and backoff are forgotten."""
    out = copy_memory(memory)
    state = out.pools.setdefault(pool, PoolMemory())
    state.consecutive_failures = 0
    state.backoff_until = 0.0
    return out


def set_host_draining(memory: Memory, host: str, draining: bool) -> Memory:
    """Drain a docker host: no new agents there, its idle agents reaped as for a draining pool."""
    out = copy_memory(memory)
    out.hosts.setdefault(host, HostMemory()).draining = draining
    return out


def record_reaped(memory: Memory, agent: str) -> Memory:
    """A Reap completed (node, container, volume gone or released): forget the agent."""
    out = copy_memory(memory)
    out.agents.pop(agent, None)
    return out


def record_orphan_removed(memory: Memory, key: str) -> Memory:
    """A leftover was removed: forget when it was first seen orphaned."""
    out = copy_memory(memory)
    out.orphan_seen.pop(key, None)
    return out


def set_draining(memory: Memory, pool: str, draining: bool) -> Memory:
    """Drain a pool: no new agents, idle ones reaped whatever idle_timeout and min_idle say."""
    out = copy_memory(memory)
    out.pools.setdefault(pool, PoolMemory()).draining = draining
    return out


def orphan_key(kind: ResourceKind, host: str, name: str) -> str:
    """The key of ``Memory.orphan_seen``: ``node:NAME``, ``container:HOST/ID``, ``volume:HOST/NAME``."""
    return f"node:{name}" if kind is ResourceKind.NODE else f"{kind.value}:{host}/{name}"
