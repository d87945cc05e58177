"""One pass of the planner: the phases in their order, each a function of explicit values.

what is ours → adopt → hosts' health and lost hosts → assess every agent → idle reaps →
orphans → serve waiting items → warm pool → excess volumes. Each phase returns values
(actions, capacity, memory) that the next one is given; the order matters only through what is
passed along. Actions still in flight from earlier passes (``Observed.in_flight``) are never
issued again: launches count as starting capacity, agents being reaped or cordoned get no other
action.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from agentpool.config import Config, PoolConfig
from agentpool.model import (
    NOTHING_IN_FLIGHT,
    Action,
    AgentMemory,
    InFlight,
    ItemKind,
    Memory,
    Observed,
    Plan,
    PoolMemory,
    Provision,
    Reap,
    RemoveOrphan,
    ResourceKind,
    Unserved,
)
from agentpool.planner.assess import AgentView, Assessment, assess, idle_reaps
from agentpool.planner.capacity import NO_CAPACITY, HostCapacity, PoolCapacity
from agentpool.planner.demand import foreign_slots, probe, serve
from agentpool.planner.hosts import cooling, draining_hosts, host_health, lost_agents
from agentpool.planner.launch import Budget, Context
from agentpool.planner.memory import copy_memory, orphan_key
from agentpool.planner.orphans import excess_volumes, free_volumes, orphan_nodes, sweep_orphans
from agentpool.planner.ownership import Ours, adopt, what_is_ours
from agentpool.planner.routing import (
    Groups,
    Routes,
    demand_counts,
    first_seen,
    group_items,
    infer,
    remember_labels,
    route,
)
from agentpool.planner.warm import warm_pool


@dataclass(frozen=True, slots=True)
class Agents:
    """The outcome of assessing every agent, then of the idle reaps."""

    actions: tuple[Action, ...]
    memory: dict[str, AgentMemory]  # every agent's new memory, in the old order
    capacity: dict[str, PoolCapacity]  # per pool of the config
    on_hosts: dict[tuple[str, str], int]  # agents per (host, pool)
    gone: frozenset[str]  # reaped for good this pass
    recovered: frozenset[tuple[str, str]]  # (host, pool) whose launch failures are forgiven


def assess_agents(
    ours: Ours,
    pools: Mapping[str, PoolConfig],
    memory: Memory,
    wanted: frozenset[str],
    draining_hosts: frozenset[str],
    now: float,
    in_flight: InFlight = NOTHING_IN_FLIGHT,
    hosts: frozenset[str] | None = None,
    elapsed: float = 0.0,
) -> Agents:
    """Every agent assessed; ``hosts`` are the configured hosts (agents elsewhere are drained)."""
    actions: list[Action] = []
    agents = dict(memory.agents)
    capacity = dict.fromkeys(pools, NO_CAPACITY)
    idle: dict[str, list[AgentMemory]] = {name: [] for name in pools}
    on_hosts: dict[tuple[str, str], int] = {}
    gone: set[str] = set()
    recovered: set[tuple[str, str]] = set()
    for name in sorted(memory.agents):
        am = memory.agents[name]
        if am.online_at is None:
            am = replace(am, waited=(am.waited if am.waited is not None else now - am.launched_at) + elapsed)
        pool, pool_mem = pools.get(am.pool), memory.pools.get(am.pool)
        draining = pool is None or (pool_mem is not None and pool_mem.draining) or am.host in draining_hosts
        # its host was removed from the config: drained, never killed
        draining = draining or (hosts is not None and am.host not in hosts)
        view = AgentView(
            am, pool, draining, ours.nodes.get(name), ours.containers.get(name), am.host in ours.reachable
        )
        result = assess(view, now)
        agents[name] = result.memory
        reaping = name in in_flight.reaping
        if reaping:
            # Being removed: no second action, no capacity; its container holds its host's room.
            result = Assessment(result.memory, on_host=True, recovered=result.recovered)
        elif name in in_flight.cordoning or name in in_flight.completing:
            result = replace(result, action=None)
        if result.action is not None:
            actions.append(result.action)
        if result.gone or reaping:
            gone.add(name)
        if result.on_host:
            on_hosts[(am.host, am.pool)] = on_hosts.get((am.host, am.pool), 0) + 1
        if result.recovered and pool_mem is not None:
            recovered.add((am.host, am.pool))
        if pool is not None:
            capacity[pool.name] = capacity[pool.name] + result.capacity
            if result.idle:
                idle[pool.name].append(result.memory)
    for pool in pools.values():
        reaps, capacity[pool.name] = idle_reaps(
            pool, idle[pool.name], capacity[pool.name], pool.name in wanted, ours.nodes, now
        )
        actions.extend(reaps)
    return Agents(tuple(actions), agents, capacity, on_hosts, frozenset(gone), frozenset(recovered))


def _forgive(mem: Memory, recovered: frozenset[tuple[str, str]]) -> None:
    """An agent came online: its pool's failures and its (host, pool) cooldown are forgotten."""
    for host, name in recovered:
        mem.pools[name] = PoolMemory(
            consecutive_failures=0, backoff_until=0.0, draining=mem.pools[name].draining
        )
        mem.cooldowns.pop((host, name), None)


def _counted(actions: tuple[Action, ...], now: float) -> list[Action]:
    """Reaps that count a launch failure carry their pass, so that one pass counts one per host and pool."""
    return [
        replace(a, planned_at=now) if isinstance(a, Reap) and a.count_launch_failure else a for a in actions
    ]


def _queue(observed: Observed, config: Config, ours: Ours, mem: Memory, now: float) -> Queue:
    """The waiting items by label (None without a queue); remembers first sights and labels.

    Items whose ``why`` names one node in place of their label are routed by inference
    (:func:`agentpool.planner.routing.infer`) under keys of their own.
    """
    if observed.queue is None:
        return Queue(None, {}, {})
    mem.item_first_seen = first_seen(observed.queue, mem.item_first_seen, now)
    queue, mem.item_labels = remember_labels(observed.queue, mem.item_labels)
    groups = group_items(queue)
    routes = route(groups, config.pools)
    named = [i for i in queue if i.kind is ItemKind.BUILDABLE and i.label is None and i.node is not None]
    inference = infer(named, config.pools, ours.nodes, ours.node_pools, mem.item_refused)
    mem.item_refused = {i.id: inference.refused[i.id] for i in queue if inference.refused.get(i.id)}
    groups.update(inference.groups)
    routes.update(inference.routes)
    return Queue(groups, routes, inference.explained)


def _launching(in_flight: InFlight) -> dict[str, AgentMemory]:
    """Agents being started, as the memory they will have: what they hold is not an orphan."""
    return {
        p.agent: AgentMemory(p.agent, p.pool, p.host, 0.0, volume=p.lease_volume or f"{p.agent}-docker")
        for p in in_flight.provisions
    }


def _with_launching(
    agents: Agents, launches: tuple[Provision, ...], pools: Mapping[str, PoolConfig]
) -> tuple[dict[str, PoolCapacity], dict[tuple[str, str], int]]:
    """Launches in flight count as their pool's starting executors and take their host's room."""
    capacity, on_hosts = dict(agents.capacity), dict(agents.on_hosts)
    for p in launches:
        pool = pools.get(p.pool)
        if pool is not None:
            capacity[p.pool] = capacity[p.pool] + PoolCapacity(1, 0, pool.executors)
        on_hosts[(p.host, p.pool)] = on_hosts.get((p.host, p.pool), 0) + 1
    return capacity, on_hosts


def _not_in_flight(removals: Iterable[RemoveOrphan], in_flight: InFlight) -> list[RemoveOrphan]:
    return [a for a in removals if orphan_key(a.kind, a.host, a.name) not in in_flight.orphans]


@dataclass(frozen=True, slots=True)
class Queue:
    groups: Groups | None
    routes: Routes
    inferred: dict[int, str]


def _left_launching(
    ours: Ours, agents: Mapping[str, AgentMemory], pools: Mapping[str, PoolConfig]
) -> dict[str, PoolCapacity]:
    """Our nodes without container or agent that never connected: a launch in flight, or left by
    a crash. Until they are removed they hold their pool's place, so that a build waiting for
    one never gets a second node made for it."""
    out: dict[str, PoolCapacity] = {}
    for name in orphan_nodes(ours, agents):
        pool = pools.get(ours.node_pools.get(name, ""))
        node = ours.our_nodes[name]
        if pool is not None and not node.temporarily_offline:
            slots = len(node.executors) or pool.executors
            out[pool.name] = out.get(pool.name, NO_CAPACITY) + PoolCapacity(1, 0, slots)
    return out


def _demand(
    ctx: Context, queue: Queue, ours: Ours, budget: Budget, alive: bool, in_flight: InFlight
) -> tuple[list[Action], list[Unserved]]:
    """The last phases, on what the budget has left: serve waiting items (probing for unlabelled
    ones; ``alive`` says some agent of ours remains), top up the warm pool, remove excess volumes."""
    actions: list[Action] = []
    unserved: list[Unserved] = []
    groups = queue.groups
    if groups is not None:
        served = serve(ctx, groups, queue.routes, foreign_slots(ours.nodes, ours.our_nodes), budget)
        actions.extend(served.actions)
        unserved.extend(served.unserved)
        budget = served.budget
        if groups.get(None):
            probed = probe(ctx, groups[None], budget, not ours.nodes, not alive)
            actions.extend(probed.actions)
            unserved.extend(probed.unserved)
            budget = probed.budget
    warm, budget = warm_pool(ctx, budget)
    actions.extend(warm)
    actions.extend(_not_in_flight(excess_volumes(budget.free_volumes, ctx.pools), in_flight))
    return actions, unserved


def _decide(observed: Observed, config: Config, mem: Memory, now: float, elapsed: float) -> Plan:
    pools = {pool.name: pool for pool in config.pools}
    in_flight = observed.in_flight
    launching = _launching(in_flight)
    known = {**launching, **mem.agents}
    ours = what_is_ours(observed, config, replace(mem, agents=known))
    taken = frozenset(known) | frozenset(ours.nodes) | frozenset(ours.containers)
    queue = _queue(observed, config, ours, mem, now)
    wanted = frozenset(p.name for candidates in queue.routes.values() for p in candidates)
    mem.agents.update(adopt(ours, pools, known, now))
    mem.hosts = host_health(observed.hosts, config, mem.hosts, now)
    lost = lost_agents(mem.agents, ours.nodes, mem.hosts, config.host_lost_after, now)
    for name in lost.forget:
        del mem.agents[name]
    draining = draining_hosts(config, mem.hosts)
    configured = frozenset(h.name for h in config.docker_hosts)
    agents = assess_agents(ours, pools, mem, wanted, draining, now, in_flight, configured, elapsed)
    mem.agents = agents.memory
    known = {**launching, **mem.agents}
    for pool_name, extra in _left_launching(ours, known, pools).items():
        agents.capacity[pool_name] = agents.capacity[pool_name] + extra
    _forgive(mem, agents.recovered)
    sweep = sweep_orphans(ours, pools, known, mem.orphan_seen, config.instance, now)
    mem.orphan_seen = sweep.orphan_seen
    images = {h.name: h.images for h in observed.hosts}
    hosts = HostCapacity.of(
        config.docker_hosts,
        ours.reachable,
        draining=draining,
        images=images,
        cooling=cooling(mem.cooldowns, now),
    )
    capacity, on_hosts = _with_launching(agents, in_flight.provisions, pools)
    hosts = hosts.add(on_hosts, pools).add(sweep.on_hosts, pools)
    volumes = tuple(
        v for v in ours.volumes if orphan_key(ResourceKind.VOLUME, v.host, v.name) not in in_flight.orphans
    )
    budget = Budget(capacity, hosts, free_volumes(volumes, pools, known), taken)
    ctx = Context(config, pools, mem.pools, now)
    actions: list[Action] = [
        *_counted(agents.actions, now),
        *lost.actions,
        *_not_in_flight(sweep.actions, in_flight),
    ]
    alive = bool(launching) or any(name not in agents.gone for name in mem.agents)
    launches, unserved = _demand(ctx, queue, ours, budget, alive, in_flight)
    return Plan(
        actions=(*actions, *launches),
        unserved=tuple(unserved),
        demand=demand_counts(queue.groups or {}),
        inferred=queue.inferred,
        neighbours=tuple(sorted(ours.neighbours)),
    )


def plan(observed: Observed, config: Config, memory: Memory, now: float) -> tuple[Plan, Memory]:
    """Decide this pass' actions; return them with the memory for the next pass (a new object).

    Without Jenkins (``observed.nodes`` is None) nothing is decided: busy states and demand
    are unknown, and nothing destructive happens on a guess.
    """
    mem = copy_memory(memory)
    for pool in config.pools:
        mem.pools.setdefault(pool.name, PoolMemory())
    # Time toward launch_timeout: monotonic, and only between passes that read Jenkins.
    ticks = observed.ticks if observed.ticks is not None else now
    elapsed = max(0.0, ticks - mem.last_ticks) if mem.last_ticks is not None else 0.0
    mem.last_ticks = ticks
    if observed.nodes is None:
        return Plan(actions=()), mem
    return _decide(observed, config, mem, now, elapsed), mem
