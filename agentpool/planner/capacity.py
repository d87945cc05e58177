"""Capacity arithmetic as small values: what a pool has (agents, free executors), what a host holds.

Every operation returns a new value; the planner's phases pass them along explicitly
instead of updating counters read by name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from agentpool.config import DockerHostConfig, PoolConfig


@dataclass(frozen=True, slots=True)
class PoolCapacity:
    """One pool's agents and the executors that serve waiting items without a new agent."""

    agents: int = 0  # agents that still exist after this pass' definite reaps
    idle_slots: int = 0  # idle executors of its online, accepting agents not being reaped
    starting_slots: int = 0  # executors of its agents still starting (and of new ones)

    def __add__(self, other: PoolCapacity) -> PoolCapacity:
        return PoolCapacity(
            self.agents + other.agents,
            self.idle_slots + other.idle_slots,
            self.starting_slots + other.starting_slots,
        )

    def use_idle(self, waiting: int) -> tuple[PoolCapacity, int]:
        """Hand idle executors to up to ``waiting`` items; return the rest and how many were used."""
        used = min(self.idle_slots, waiting)
        return PoolCapacity(self.agents, self.idle_slots - used, self.starting_slots), used

    def use_starting(self, waiting: int) -> tuple[PoolCapacity, int]:
        """Count up to ``waiting`` items as served by agents still starting."""
        used = min(self.starting_slots, waiting)
        return PoolCapacity(self.agents, self.idle_slots, self.starting_slots - used), used

    def without_idle(self, slots: int) -> PoolCapacity:
        """An idle agent with ``slots`` free executors is being reaped."""
        return PoolCapacity(self.agents, self.idle_slots - slots, self.starting_slots)

    def warm(self, executors: int) -> int:
        """Agents' worth of idle or starting executors (what counts toward ``min_idle``)."""
        return self.idle_slots // executors + self.starting_slots // executors


NO_CAPACITY = PoolCapacity()


# agents (and orphaned containers) per (host, pool)
OnHosts = Mapping[tuple[str, str], int]


@dataclass(frozen=True, slots=True)
class HostCapacity:
    """The docker hosts as placement sees them: what each holds, and which may take a pool's agent.

    A host takes an agent of a pool when it is configured, reachable, not draining, picked by
    the pool's ``hosts:``, has the pool's image, is not cooling down after that pool's launch
    failures, and has room: ``max_agents`` and, when set on both host and pool, ``cpus`` and
    ``memory``. The one with the most room (agents of that pool that still fit) gets it; ties
    go to the host with fewer agents, then config order.
    """

    hosts: tuple[DockerHostConfig, ...]  # configured, in config order
    reachable: frozenset[str]
    draining: frozenset[str]
    images: Mapping[str, frozenset[str] | None]  # None: not checked, every image counts as there
    cooling: Mapping[tuple[str, str], float]  # (host, pool) -> cooldown end, only those still on
    used: Mapping[str, int]
    used_cpus: Mapping[str, float]
    used_memory: Mapping[str, int]

    @property
    def any_reachable(self) -> bool:
        return any(h.name in self.reachable for h in self.hosts)

    @classmethod
    def of(
        cls,
        hosts: Iterable[DockerHostConfig],
        reachable: frozenset[str],
        *,
        draining: frozenset[str] = frozenset(),
        images: Mapping[str, frozenset[str] | None] | None = None,
        cooling: Mapping[tuple[str, str], float] | None = None,
    ) -> HostCapacity:
        hosts = tuple(hosts)
        return cls(
            hosts=hosts,
            reachable=reachable,
            draining=draining,
            images=images or {},
            cooling=cooling or {},
            used={h.name: 0 for h in hosts},
            used_cpus={},
            used_memory={},
        )

    def add(self, counts: OnHosts, pools: Mapping[str, PoolConfig]) -> HostCapacity:
        """Count agents (or orphaned containers) of (host, pool) against their hosts."""
        used = dict(self.used)
        cpus: Mapping[str, float] = self.used_cpus  # copied only when a pool has limits
        memory: Mapping[str, int] = self.used_memory
        for (host, pool_name), n in counts.items():
            used[host] = used.get(host, 0) + n
            pool = pools.get(pool_name)
            if pool is not None and pool.cpus is not None:
                cpus = {**cpus, host: cpus.get(host, 0.0) + n * pool.cpus}
            if pool is not None and pool.memory is not None:
                memory = {**memory, host: memory.get(host, 0) + n * pool.memory}
        return HostCapacity(
            self.hosts, self.reachable, self.draining, self.images, self.cooling, used, cpus, memory
        )

    def room(self, host: DockerHostConfig, pool: PoolConfig) -> int:
        """How many more agents of ``pool`` fit on ``host`` (max_agents, cpus, memory budgets)."""
        room = host.max_agents - self.used.get(host.name, 0)
        if host.cpus is not None and pool.cpus is not None:
            room = min(room, int((host.cpus - self.used_cpus.get(host.name, 0.0)) / pool.cpus + 1e-9))
        if host.memory is not None and pool.memory is not None:
            room = min(room, (host.memory - self.used_memory.get(host.name, 0)) // pool.memory)
        return room

    def _barred(self, host: DockerHostConfig, pool: PoolConfig, now: float) -> str | None:
        """Why ``host`` takes no agent of ``pool`` whatever its room, None when it may."""
        name = host.name
        if name not in self.reachable:
            return "unreachable"
        if name in self.draining:
            return "draining"
        if pool.hosts and not host.selected_by(pool.hosts):
            return "not in the pool's hosts"
        present = self.images.get(name)
        if present is not None and pool.image not in present:
            return "image missing"
        if self.cooling:
            until = self.cooling.get((name, pool.name), 0.0)
            if until > now:
                return f"cooling down {until - now:.0f}s"
        return None

    def obstacle(self, host: DockerHostConfig, pool: PoolConfig, now: float) -> str | None:
        """Why ``host`` takes no agent of ``pool`` now, None when it can."""
        barred = self._barred(host, pool, now)
        if barred is None and self.room(host, pool) <= 0:
            return "full"
        return barred

    def choose(self, pool: PoolConfig, now: float) -> str | None:
        """The host that gets the next agent of ``pool``; None when none can take it."""
        best: str | None = None
        best_key = (0, 0)
        for host in self.hosts:
            if self._barred(host, pool, now) is not None:
                continue
            room = self.room(host, pool)
            if room <= 0:
                continue
            key = (room, -self.used.get(host.name, 0))
            if best is None or key > best_key:
                best, best_key = host.name, key
        return best
