"""Orphans and excess volumes: what is ours but belongs to no agent, removed on the second sight.

A resource is removed only after it looked orphaned on two passes and is older than its
grace (a pool's ``launch_timeout`` at least, so that cleanup never races a launch in
progress). Free volumes of reuse pools are a warm cache, kept up to the pool's
``max_agents``; the oldest beyond that are removed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agentpool.config import PoolConfig
from agentpool.model import AgentMemory, Reason, RemoveOrphan, ResourceKind, Volume
from agentpool.planner.assess import ORPHAN_GRACE
from agentpool.planner.launch import FreeVolumes
from agentpool.planner.memory import orphan_key
from agentpool.planner.ownership import Ours


@dataclass(frozen=True, slots=True)
class Sweep:
    actions: tuple[RemoveOrphan, ...]
    orphan_seen: dict[str, float]  # the memory of what looked orphaned, for the next pass
    on_hosts: dict[tuple[str, str], int]  # orphaned containers per (host, pool): they take room


@dataclass(frozen=True, slots=True)
class _Candidate:
    kind: ResourceKind
    host: str
    name: str
    pool: str
    age: float | None  # None: unknown, counted from when it was first seen orphaned
    grace: float
    detail: str
    at_once: bool = False  # left by an earlier run: no launch of ours can be in flight


def _grace(pools: Mapping[str, PoolConfig], pool_name: str) -> float:
    pool = pools.get(pool_name)
    return max(ORPHAN_GRACE, pool.launch_timeout) if pool else ORPHAN_GRACE


def _candidates(
    ours: Ours, pools: Mapping[str, PoolConfig], agents: Mapping[str, AgentMemory], instance: str, now: float
) -> list[_Candidate]:
    found: list[_Candidate] = []
    for agent, c in [*ours.containers.items(), *((c.agent or c.name, c) for c in ours.extra_containers)]:
        if agent in agents and ours.containers.get(agent) is c:
            continue
        node = ours.nodes.get(agent)
        if node is not None and (node.busy or not node.offline):
            continue  # its agent is connected (whoever's node it is): removing it would kill a build
        detail = f"container {c.name} has no node"
        # Its node precedes it in a launch: gone, it was deleted, and an earlier run's container
        # without one can never connect again (a crash between deleting the node and the container).
        earlier = bool(c.boot) and c.boot != ours.boot and node is None
        if earlier:
            detail += " (left by an earlier run)"
        grace = _grace(pools, c.pool)
        found.append(
            _Candidate(
                ResourceKind.CONTAINER, c.host, c.id, c.pool, now - c.created, grace, detail, at_once=earlier
            )
        )
    if ours.all_hosts_reachable:
        for name in orphan_nodes(ours, agents):
            grace = _grace(pools, ours.node_pools.get(name, ""))
            if name in ours.left_behind:
                detail = "node left without its container by an earlier run"
                found.append(_Candidate(ResourceKind.NODE, "", name, "", None, grace, detail, at_once=True))
            else:
                found.append(
                    _Candidate(ResourceKind.NODE, "", name, "", None, grace, "node has no container")
                )
    held = {(a.host, a.volume) for a in agents.values() if a.volume}
    for v in ours.volumes:
        if (v.host, v.name) in held or (
            v.agent in ours.containers and ours.containers[v.agent].host == v.host
        ):
            continue
        pool = pools.get(v.pool)
        if v.free and pool is not None and pool.docker_volume == "reuse":
            continue  # a warm cache waiting for the pool's next agent
        # Created by an earlier run for an agent that has no container: no launch of ours is
        # still going to mount it (a crash between creating it and the container, or mid-reap).
        earlier = bool(v.boot) and v.boot != ours.boot and v.agent not in ours.containers
        detail = "volume has no agent" + (" (left by an earlier run)" if earlier else "")
        found.append(
            _Candidate(
                ResourceKind.VOLUME,
                v.host,
                v.name,
                v.pool,
                now - v.created,
                ORPHAN_GRACE,
                detail,
                at_once=earlier,
            )
        )
    return found


def orphan_nodes(ours: Ours, agents: Mapping[str, AgentMemory]) -> list[str]:
    """Our nodes with neither agent nor container that may be removed: never a connected or
    busy one, whoever connected it (Jenkins would abort its build)."""
    return [
        name
        for name, node in ours.our_nodes.items()
        if name not in agents and name not in ours.containers and not node.busy and node.offline
    ]


def sweep_orphans(
    ours: Ours,
    pools: Mapping[str, PoolConfig],
    agents: Mapping[str, AgentMemory],
    orphan_seen: Mapping[str, float],
    instance: str,
    now: float,
) -> Sweep:
    actions: list[RemoveOrphan] = []
    seen: dict[str, float] = {}
    on_hosts: dict[tuple[str, str], int] = {}
    for c in _candidates(ours, pools, agents, instance, now):
        if c.kind is ResourceKind.CONTAINER:
            on_hosts[(c.host, c.pool)] = on_hosts.get((c.host, c.pool), 0) + 1
        key = orphan_key(c.kind, c.host, c.name)
        first = orphan_seen.get(key)
        seen[key] = first if first is not None else now
        if c.at_once:
            actions.append(RemoveOrphan(c.kind, c.host, c.name, Reason.ORPHAN, c.detail))
            continue
        if first is None:
            continue  # seen orphaned once: wait for a second pass
        age = now - first if c.age is None else c.age
        if age >= c.grace:
            actions.append(RemoveOrphan(c.kind, c.host, c.name, Reason.ORPHAN, c.detail))
    return Sweep(tuple(actions), seen, on_hosts)


def free_volumes(
    volumes: tuple[Volume, ...], pools: Mapping[str, PoolConfig], agents: Mapping[str, AgentMemory]
) -> dict[tuple[str, str], tuple[Volume, ...]]:
    """Reuse pools' volumes no agent holds, by (pool, host), most recently used first."""
    held = {(a.host, a.volume) for a in agents.values() if a.volume}
    free: dict[tuple[str, str], list[Volume]] = {}
    for v in volumes:
        pool = pools.get(v.pool)
        if v.free and pool is not None and pool.docker_volume == "reuse" and (v.host, v.name) not in held:
            free.setdefault((v.pool, v.host), []).append(v)
    return {key: tuple(sorted(vs, key=lambda v: (-v.last_used, v.name))) for key, vs in free.items()}


def excess_volumes(free: FreeVolumes, pools: Mapping[str, PoolConfig]) -> list[RemoveOrphan]:
    """Free volumes beyond a pool's ``max_agents`` (after this pass' leases), oldest first."""
    by_pool: dict[str, list[Volume]] = {}
    for (pool, _host), volumes in free.items():
        by_pool.setdefault(pool, []).extend(volumes)
    actions: list[RemoveOrphan] = []
    for name, pooled in by_pool.items():
        keep = pools[name].max_agents
        pooled.sort(key=lambda v: (-v.last_used, v.name))
        detail = f"pool {name} keeps at most {keep} free volumes"
        for v in reversed(pooled[keep:]):  # oldest first
            actions.append(
                RemoveOrphan(ResourceKind.VOLUME, v.host, v.name, Reason.EXCESS_FREE_VOLUME, detail)
            )
    return actions
