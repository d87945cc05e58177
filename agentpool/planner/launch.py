"""Starting agents: whether a pool may get one now, and the Provision with the budget it leaves.

A :class:`Budget` is what is left this pass: each pool's capacity, the hosts' room, the
names taken and the free volumes of reuse pools. :func:`launch` returns the action and a
new budget; nothing is changed in place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agentpool.config import Config, PoolConfig
from agentpool.model import PoolMemory, Provision, Reason, UnservedReason, Volume
from agentpool.planner.capacity import HostCapacity, PoolCapacity
from agentpool.planner.names import agent_name

# reuse pools' free volumes by (pool, host), most recently used first
FreeVolumes = Mapping[tuple[str, str], tuple[Volume, ...]]


@dataclass(frozen=True, slots=True)
class Budget:
    pools: Mapping[str, PoolCapacity]
    hosts: HostCapacity
    free_volumes: FreeVolumes
    taken: frozenset[str]  # names of agents, nodes and containers that exist
    new_agents: tuple[str, ...] = ()  # started this pass, in order

    def with_pool(self, name: str, capacity: PoolCapacity) -> Budget:
        pools = dict(self.pools)
        pools[name] = capacity
        return Budget(pools, self.hosts, self.free_volumes, self.taken, self.new_agents)


@dataclass(frozen=True, slots=True)
class Context:
    """What every phase of one pass reads: the config, the pools' memory and the time."""

    config: Config
    pools: Mapping[str, PoolConfig]
    pool_memory: Mapping[str, PoolMemory]
    now: float


@dataclass(frozen=True, slots=True)
class Blocked:
    """Why a pool cannot get another agent now."""

    reason: UnservedReason
    why: str


def blocked(ctx: Context, pool: PoolConfig, budget: Budget) -> Blocked | None:
    """Why ``pool`` cannot get another agent now, or None when it can."""
    state, now = ctx.pool_memory[pool.name], ctx.now
    if state.draining:
        return Blocked(UnservedReason.DRAINING, UnservedReason.DRAINING.value)
    if state.backoff_until > now:
        return Blocked(
            UnservedReason.BACKOFF, f"{UnservedReason.BACKOFF} ({state.backoff_until - now:.0f}s left)"
        )
    if budget.pools[pool.name].agents >= pool.max_agents:
        return Blocked(
            UnservedReason.CAP, f"{UnservedReason.CAP} (pool {pool.name}: max_agents {pool.max_agents})"
        )
    if budget.hosts.choose(pool, now) is None:
        return no_host(budget.hosts, pool, now)
    return None


def no_host(hosts: HostCapacity, pool: PoolConfig, now: float) -> Blocked:
    """Why no docker host takes an agent of ``pool``: the most telling reason, every host's detail."""
    seen = [(h.name, hosts.obstacle(h, pool, now)) for h in hosts.hosts if h.selected_by(pool.hosts)]
    detail = ", ".join(f"{name}: {why}" for name, why in seen)
    whys = [why or "" for _, why in seen]
    if all(why == "unreachable" for why in whys):
        reason = UnservedReason.NO_HOST
        text = reason.value + (
            f" (of the pool's hosts: {', '.join(n for n, _ in seen)})" if pool.hosts else ""
        )
        return Blocked(reason, text)
    if any(why.startswith("cooling down") for why in whys):
        reason = UnservedReason.BACKOFF
        return Blocked(reason, f"{reason} (every docker host for pool {pool.name} is out: {detail})")
    if "image missing" in whys:
        reason = UnservedReason.NO_IMAGE
        return Blocked(reason, f"{reason} ({pool.image}; {detail})")
    if "full" in whys:
        return Blocked(UnservedReason.CAP, f"{UnservedReason.CAP} (every docker host is full: {detail})")
    return Blocked(UnservedReason.DRAINING, f"{UnservedReason.DRAINING} (docker hosts: {detail})")


class _Taken:
    def __init__(self, budget: Budget) -> None:
        self._budget = budget

    def __contains__(self, name: object) -> bool:
        return name in self._budget.taken or name in self._budget.new_agents


def launch(
    ctx: Context,
    pool: PoolConfig,
    budget: Budget,
    reason: Reason,
    detail: str,
    needed_since: float | None = None,
) -> tuple[Provision, Budget]:
    """A new agent of ``pool`` on the host with the most room (the caller checked :func:`blocked`)."""
    host = budget.hosts.choose(pool, ctx.now)
    assert host is not None
    name = agent_name(ctx.config.instance, pool.name, ctx.now, len(budget.new_agents), _Taken(budget))
    free_volumes = budget.free_volumes
    lease = None
    if pool.docker_volume == "reuse":
        free = free_volumes.get((pool.name, host))
        if free:
            lease = free[0].name
            free_volumes = {**free_volumes, (pool.name, host): free[1:]}
    action = Provision(
        pool.name,
        host,
        name,
        reason,
        detail,
        lease_volume=lease,
        needed_since=needed_since,
        planned_at=ctx.now,
    )
    capacity = budget.pools[pool.name] + PoolCapacity(1, 0, pool.executors)
    pools = dict(budget.pools)
    pools[pool.name] = capacity
    hosts = budget.hosts.add({(host, pool.name): 1}, ctx.pools)
    return action, Budget(pools, hosts, free_volumes, budget.taken, (*budget.new_agents, name))
