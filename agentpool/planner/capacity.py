"""Capacity arithmetic as small values: what a pool has (agents, free executors), what a host holds.

Every operation returns a new value; the planner's phases pass them along explicitly
instead of updating counters read by name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from agentpool.config import DockerHostConfig


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


@dataclass(frozen=True, slots=True)
class HostCapacity:
    """Agents per host against each reachable host's ``max_agents``."""

    limits: tuple[tuple[str, int], ...]  # reachable hosts in config order, with their max_agents
    used: Mapping[str, int]
    any_reachable: bool

    @classmethod
    def of(cls, hosts: Iterable[DockerHostConfig], reachable: frozenset[str]) -> HostCapacity:
        hosts = tuple(hosts)
        return cls(
            limits=tuple((h.name, h.max_agents) for h in hosts if h.name in reachable),
            used={h.name: 0 for h in hosts},
            any_reachable=any(h.name in reachable for h in hosts),
        )

    def add(self, counts: Mapping[str, int]) -> HostCapacity:
        used = dict(self.used)
        for host, n in counts.items():
            used[host] = used.get(host, 0) + n
        return HostCapacity(self.limits, used, self.any_reachable)

    def free_host(self) -> str | None:
        """The reachable host with the most room (ties: config order), None when all are full."""
        best: str | None = None
        best_room = 0
        for name, limit in self.limits:
            room = limit - self.used.get(name, 0)
            if room > best_room:
                best, best_room = name, room
        return best
