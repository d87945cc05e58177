"""The pure decision core: from what one pass observed, what to start, reap and clean up.

Everything the provisioner decides is decided here, from values only: the observation,
the config, the memory carried from the previous pass and the time, all passed in. No
I/O, no clock, no logging, so the whole decision table is unit-tested without Docker or
Jenkins. The rules are written down in docs/planner.md; the executor performs the
returned actions and reports their outcomes through the ``record_*`` helpers below, which
are pure as well (they return a new memory).
"""

from __future__ import annotations

import hashlib
import operator
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace

from agentpool.config import Config, PoolConfig
from agentpool.labels import Expr, LabelSyntaxError, parse
from agentpool.model import (
    Action,
    AgentMemory,
    AgentState,
    Container,
    ContainerState,
    Cordon,
    HostView,
    ItemKind,
    Memory,
    Node,
    Observed,
    Plan,
    PoolMemory,
    Provision,
    QueueItem,
    Reap,
    Reason,
    RemoveOrphan,
    ResourceKind,
    Unserved,
    Volume,
)

# Orphaned volumes (which have no launch to race) are removed after this long.
ORPHAN_GRACE = 60.0
# A pool's launch failures back it off 10 s · 2^(n-1), at most 10 minutes.
BACKOFF_BASE = 10.0
BACKOFF_MAX = 600.0
# The key of `Plan.demand` for items whose label Jenkins hides.
UNKNOWN_LABEL = "(unknown)"

WHY_NO_POOL = "no pool matches"
WHY_CAP = "cap reached"
WHY_BACKOFF = "backoff"
WHY_DRAINING = "draining"
WHY_UNKNOWN = "label unknown (Jenkins hides labels while no agent node exists)"
WHY_NO_HOST = "no docker host reachable"

_CLEAN_REAPS = frozenset({Reason.IDLE_TIMEOUT, Reason.DRAIN, Reason.ONE_SHOT_DONE})
_GONE = frozenset({ContainerState.EXITED, ContainerState.DEAD, ContainerState.REMOVING})


# --- memory updates the daemon makes from the executor's outcomes -------------------------


_AGENT_FIELDS = tuple(f.name for f in fields(AgentMemory))
_POOL_FIELDS = tuple(f.name for f in fields(PoolMemory))


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
        orphan_seen=dict(memory.orphan_seen),
        item_first_seen=dict(memory.item_first_seen),
        item_labels=dict(memory.item_labels),
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
    )
    return out


def record_launch_failure(memory: Memory, pool: str, now: float) -> Memory:
    """A launch failed (provision error, launch timeout, died before connecting): back off."""
    out = copy_memory(memory)
    state = out.pools.setdefault(pool, PoolMemory())
    state.consecutive_failures += 1
    state.backoff_until = now + backoff_delay(state.consecutive_failures)
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


def record_reaped(memory: Memory, agent: str) -> Memory:
    """A Reap completed (node, container, volume gone or released): forget the agent."""
    out = copy_memory(memory)
    out.agents.pop(agent, None)
    return out


def record_orphan_removed(memory: Memory, key: str) -> Memory:
    out = copy_memory(memory)
    out.orphan_seen.pop(key, None)
    return out


def set_draining(memory: Memory, pool: str, draining: bool) -> Memory:
    """Drain a pool: no new agents, idle ones reaped whatever idle_timeout and min_idle say."""
    out = copy_memory(memory)
    out.pools.setdefault(pool, PoolMemory()).draining = draining
    return out


def orphan_key(kind: str, host: str, name: str) -> str:
    """The key of ``Memory.orphan_seen``: ``node:NAME``, ``container:HOST/ID``, ``volume:HOST/NAME``."""
    return f"node:{name}" if kind == "node" else f"{kind}:{host}/{name}"


# --- names --------------------------------------------------------------------------------


def agent_name(instance: str, pool: str, now: float, index: int, taken: set[str] | frozenset[str]) -> str:
    """``{instance}-{pool}-{6 hex}``, derived from the time and the index in this pass.

    Deterministic (the planner is pure), and never one of ``taken``. Should the name exist
    after all (a controller or engine the planner did not see), the executor's create
    fails with "already exists" and the next pass picks another one.
    """
    attempt = 0
    while True:
        digest = hashlib.sha256(f"{instance}\0{pool}\0{now!r}\0{index}\0{attempt}".encode()).hexdigest()
        name = f"{instance}-{pool}-{digest[:6]}"
        if name not in taken:
            return name
        attempt += 1


def agent_pattern(instance: str) -> re.Pattern[str]:
    """Matches the names of this instance's agents; group ``pool`` is the pool's name."""
    return re.compile(rf"^{re.escape(instance)}-(?P<pool>[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)-[0-9a-f]{{6}}$")


# --- routing ------------------------------------------------------------------------------


def _expr(label: str) -> Expr | None:
    try:
        return parse(label)
    except LabelSyntaxError:
        return None


def matching_pools(label: str, pools: Iterable[PoolConfig]) -> list[PoolConfig]:
    """The pools that may serve ``label``, best fit (fewest labels) first, then config order.

    ``""`` (no label) is served only by pools that are not exclusive.
    """
    ordered = sorted(enumerate(pools), key=lambda pair: (len(pair[1].labels), pair[0]))
    if label == "":
        return [pool for _, pool in ordered if not pool.exclusive]
    expr = _expr(label)
    if expr is None:
        return []
    return [pool for _, pool in ordered if expr.matches(pool.label_set)]


def agent_state(agent: AgentMemory, node: Node | None, draining: bool = False) -> AgentState:
    """The state `status` shows for one agent."""
    if node is None or agent.online_at is None or (node.offline and not node.temporarily_offline):
        return AgentState.STARTING
    if node.busy:
        return AgentState.BUSY
    if draining or node.temporarily_offline:
        return AgentState.DRAINING
    return AgentState.ONLINE_IDLE


# --- the pass -----------------------------------------------------------------------------


@dataclass(slots=True)
class _PoolTally:
    agents: int = 0  # agents of the pool that still exist after this pass' definite reaps
    idle_slots: int = 0  # idle executors of its online, accepting agents not being reaped
    starting_slots: int = 0  # executors of its agents still starting (and of new ones)
    idle_agents: list[AgentMemory] = field(default_factory=list)
    demand: bool = False  # some waiting item is routed to the pool


class _Pass:
    def __init__(self, observed: Observed, config: Config, memory: Memory, now: float) -> None:
        self.observed = observed
        self.config = config
        self.now = now
        self.mem = copy_memory(memory)
        self.actions: list[Action] = []
        self.unserved: list[Unserved] = []
        self.demand: dict[str, int] = {}
        self.instance = config.instance
        self.prefix = f"{config.instance}-"
        self.pools = {pool.name: pool for pool in config.pools}
        for name in self.pools:
            self.mem.pools.setdefault(name, PoolMemory())
        self.tally = {name: _PoolTally() for name in self.pools}
        self.gone: set[str] = set()  # agents reaped for good this pass (lost, launch timeout)
        self.reaped: set[str] = set()  # every agent reaped this pass
        self.hosts: dict[str, HostView] = {h.name: h for h in observed.hosts}
        self.reachable = {name for name, h in self.hosts.items() if h.reachable}
        self.all_hosts_reachable = all(h.name in self.reachable for h in config.docker_hosts)
        self.containers: dict[str, Container] = {}
        self.extra_containers: list[Container] = []
        self.volumes: list[Volume] = []
        for view in observed.hosts:
            if not view.reachable:
                continue
            for c in view.containers:
                if not c.name.startswith(self.prefix):
                    continue
                agent = c.agent or c.name
                if agent in self.containers:
                    self.extra_containers.append(c)
                else:
                    self.containers[agent] = c
            self.volumes.extend(v for v in view.volumes if v.name.startswith(self.prefix))
        self.nodes: dict[str, Node] = {n.name: n for n in observed.nodes or ()}
        pattern = agent_pattern(config.instance)
        known_pools = set(self.pools) | {a.pool for a in self.mem.agents.values()}
        known_pools |= {c.pool for c in self.containers.values()}
        self.our_nodes: dict[str, Node] = {}
        for name, node in self.nodes.items():
            m = pattern.match(name)
            if name in self.mem.agents or name in self.containers or (m and m.group("pool") in known_pools):
                self.our_nodes[name] = node
        self.host_count: dict[str, int] = {h.name: 0 for h in config.docker_hosts}
        self.next_orphan_seen: dict[str, float] = {}
        self.taken: set[str] = set(self.mem.agents) | set(self.nodes) | set(self.containers)
        self.new_agents = 0
        self.host_cache: str | None = None
        self.host_cache_valid = False  # host_count only changes in provision() once demand is served

    # -- agents ---------------------------------------------------------------------------

    def reap(
        self,
        agent: AgentMemory,
        reason: Reason,
        detail: str,
        *,
        check_idle: bool,
        count_launch_failure: bool = False,
    ) -> None:
        pool = self.pools.get(agent.pool)
        # A cleanly reaped agent of a reuse pool leaves its volume as a warm cache; a lost
        # one or one that never started does not (its inner daemon may have died mid-write).
        keep = pool is not None and pool.docker_volume == "reuse" and reason in _CLEAN_REAPS
        self.actions.append(
            Reap(
                agent.name,
                agent.pool,
                agent.host,
                reason,
                detail,
                check_idle=check_idle,
                keep_volume=keep,
                count_launch_failure=count_launch_failure,
                volume=agent.volume,
            )
        )
        self.reaped.add(agent.name)
        if not check_idle:
            self.gone.add(agent.name)

    def adopt(self) -> None:
        """After a restart memory is empty: agents are whatever has both a container and a node."""
        held = {(v.host, v.agent): v.name for v in self.volumes if not v.free}
        for name, container in self.containers.items():
            node = self.our_nodes.get(name)
            if name in self.mem.agents or node is None:
                continue
            pool = self.pools.get(container.pool)
            connected = not node.offline or node.busy
            self.mem.agents[name] = AgentMemory(
                name=name,
                pool=container.pool,
                host=container.host,
                launched_at=container.created,
                online_at=self.now if connected else None,
                # a one-shot agent found idle and offline has done its build (we cordoned it)
                builds_started=1 if pool and pool.one_shot and node.temporarily_offline else 0,
                volume=container.volume or held.get((container.host, name), ""),
            )

    def agents(self) -> None:
        for name in sorted(self.mem.agents):
            self.agent(self.mem.agents[name])

    def agent(self, am: AgentMemory) -> None:
        pool = self.pools.get(am.pool)
        pool_mem = self.mem.pools.get(am.pool)
        draining = pool is None or (pool_mem is not None and pool_mem.draining)
        tally = self.tally.get(am.pool)
        node = self.nodes.get(am.name)
        if am.host not in self.reachable:
            # Nothing is decided about an agent on an engine we cannot see; it still counts.
            if tally is not None:
                tally.agents += 1
                if node is None or node.offline:
                    tally.starting_slots += pool.executors if pool else 0
                else:
                    tally.idle_slots += node.idle_executors
            return
        container = self.containers.get(am.name)
        if container is None or container.state in _GONE:
            what = "gone" if container is None else container.state.value
            never_online = am.online_at is None
            self.reap(
                am,
                Reason.LOST,
                f"container {what}" + (" before the agent came online" if never_online else ""),
                check_idle=False,
                count_launch_failure=never_online,
            )
            return
        self.host_count[am.host] = self.host_count.get(am.host, 0) + 1
        if tally is not None:
            tally.agents += 1
        if node is None:
            # Deleted in Jenkins (or missing from one answer): the agent can never connect.
            missing_since = am.offline_since if am.offline_since is not None else self.now
            am.offline_since = missing_since
            if self.now - missing_since >= ORPHAN_GRACE:
                self.reap(
                    am,
                    Reason.LOST,
                    f"its Jenkins node is gone for {self.now - missing_since:.0f}s",
                    check_idle=False,
                )
                if tally is not None:
                    tally.agents -= 1
            return
        # A temporarily offline node may or may not be connected (Jenkins does not say): its
        # executors decide, and an idle one is reaped through the idle rules, never forced.
        connected = not node.offline or node.temporarily_offline or node.busy
        if not connected:
            if draining:
                self.reap(am, Reason.DRAIN, "pool is draining; agent not connected", check_idle=True)
                return
            assert pool is not None and tally is not None
            since = (
                am.launched_at
                if am.online_at is None
                else (am.offline_since if am.offline_since is not None else self.now)
            )
            if am.online_at is not None:
                am.offline_since = since
            if self.now - since >= pool.launch_timeout:
                if am.online_at is None:
                    self.reap(
                        am,
                        Reason.LAUNCH_TIMEOUT,
                        f"not online {self.now - am.launched_at:.0f}s after launch "
                        f"(launch_timeout {pool.launch_timeout:g}s)",
                        check_idle=False,
                        count_launch_failure=True,
                    )
                else:
                    self.reap(am, Reason.LOST, f"disconnected for {self.now - since:.0f}s", check_idle=False)
                tally.agents -= 1
                return
            tally.starting_slots += pool.executors
            return
        am.offline_since = None
        if am.online_at is None:
            am.online_at = self.now
            if pool_mem is not None and not node.offline:  # the pool's first success since its failures
                pool_mem.consecutive_failures = 0
                pool_mem.backoff_until = 0.0
        if node.busy:
            if am.idle_since is not None or am.builds_started == 0:
                am.builds_started += 1
            am.idle_since = None
            if pool is not None and pool.one_shot:
                if not node.temporarily_offline:
                    self.actions.append(
                        Cordon(
                            am.name,
                            am.pool,
                            am.host,
                            Reason.ONE_SHOT_BUSY,
                            "one-shot agent started its build",
                        )
                    )
            elif tally is not None and not node.temporarily_offline:
                tally.idle_slots += node.idle_executors
            return
        if am.idle_since is None:
            am.idle_since = self.now
        if draining:
            self.reap(am, Reason.DRAIN, "pool is draining", check_idle=True)
            return
        assert pool is not None and tally is not None
        if pool.one_shot and am.builds_started > 0:
            # Offline already (cordoned): no build can start, the reap needs no re-check.
            self.reap(
                am,
                Reason.ONE_SHOT_DONE,
                "one-shot agent finished its build",
                check_idle=not node.temporarily_offline,
            )
            if node.temporarily_offline:
                tally.agents -= 1  # gone for sure; a re-checked one might stay after all
            return
        tally.idle_agents.append(am)
        if not node.temporarily_offline:
            tally.idle_slots += node.idle_executors

    def idle_reaps(self) -> None:
        for name, tally in self.tally.items():
            pool = self.pools[name]
            idle = sorted(
                tally.idle_agents,
                key=lambda a: (a.idle_since if a.idle_since is not None else self.now, a.name),
            )
            remaining = len(idle)
            for am in idle:
                if remaining <= pool.min_idle:
                    break
                idle_for = self.now - (am.idle_since if am.idle_since is not None else self.now)
                if idle_for < pool.idle_timeout:
                    break
                if tally.demand and not self._temporarily_offline(am.name):
                    continue  # items wait for this pool: an idle, accepting agent is about to take one
                self.reap(
                    am,
                    Reason.IDLE_TIMEOUT,
                    f"idle {idle_for:.0f}s (idle_timeout {pool.idle_timeout:g}s)",
                    check_idle=True,
                )
                remaining -= 1
                node = self.nodes.get(am.name)
                if node is not None and not node.temporarily_offline:
                    tally.idle_slots -= node.idle_executors

    def _temporarily_offline(self, name: str) -> bool:
        node = self.nodes.get(name)
        return node is not None and node.temporarily_offline

    # -- orphans --------------------------------------------------------------------------

    def orphan(self, kind: str, host: str, name: str, age: float | None, grace: float, detail: str) -> None:
        key = orphan_key(kind, host, name)
        first = self.mem.orphan_seen.get(key)
        self.next_orphan_seen[key] = first if first is not None else self.now
        if first is None:
            return  # seen orphaned once: wait for a second pass
        age = self.now - first if age is None else age
        if age >= grace:
            self.actions.append(RemoveOrphan(ResourceKind(kind), host, name, Reason.ORPHAN, detail))

    def grace(self, pool_name: str) -> float:
        pool = self.pools.get(pool_name)
        return max(ORPHAN_GRACE, pool.launch_timeout) if pool else ORPHAN_GRACE

    def orphans(self) -> None:
        for agent, c in [*self.containers.items(), *((c.agent or c.name, c) for c in self.extra_containers)]:
            if agent in self.mem.agents and self.containers.get(agent) is c:
                continue
            self.host_count[c.host] = self.host_count.get(c.host, 0) + 1
            self.orphan(
                "container",
                c.host,
                c.id,
                self.now - c.created,
                self.grace(c.pool),
                f"container {c.name} has no node",
            )
        if self.all_hosts_reachable:
            pattern = agent_pattern(self.instance)
            for name in self.our_nodes:
                if name in self.mem.agents or name in self.containers:
                    continue
                m = pattern.match(name)
                self.orphan(
                    "node", "", name, None, self.grace(m.group("pool") if m else ""), "node has no container"
                )
        held = {(a.host, a.volume) for a in self.mem.agents.values() if a.volume}
        for v in self.volumes:
            if (v.host, v.name) in held or (
                v.agent in self.containers and self.containers[v.agent].host == v.host
            ):
                continue
            pool = self.pools.get(v.pool)
            if v.free and pool is not None and pool.docker_volume == "reuse":
                continue  # a warm cache waiting for the pool's next agent
            self.orphan("volume", v.host, v.name, self.now - v.created, ORPHAN_GRACE, "volume has no agent")

    # -- demand ---------------------------------------------------------------------------

    def blocked(self, pool: PoolConfig) -> str | None:
        """Why ``pool`` cannot get another agent now, or None when it can."""
        state = self.mem.pools[pool.name]
        if state.draining:
            return WHY_DRAINING
        if state.backoff_until > self.now:
            return f"{WHY_BACKOFF} ({state.backoff_until - self.now:.0f}s left)"
        if self.tally[pool.name].agents >= pool.max_agents:
            return f"{WHY_CAP} (pool {pool.name}: max_agents {pool.max_agents})"
        if not self.free_host():
            if not any(h.name in self.reachable for h in self.config.docker_hosts):
                return WHY_NO_HOST
            return f"{WHY_CAP} (every docker host at its max_agents)"
        return None

    def free_host(self) -> str | None:
        """The reachable host with the most room (ties: config order), None when all are full."""
        if self.host_cache_valid:
            return self.host_cache
        best: str | None = None
        best_room = 0
        for h in self.config.docker_hosts:
            if h.name not in self.reachable:
                continue
            room = h.max_agents - self.host_count.get(h.name, 0)
            if room > best_room:
                best, best_room = h.name, room
        self.host_cache, self.host_cache_valid = best, True
        return best

    def provision(
        self, pool: PoolConfig, reason: Reason, detail: str, needed_since: float | None = None
    ) -> None:
        host = self.free_host()
        assert host is not None
        name = agent_name(self.instance, pool.name, self.now, self.new_agents, self.taken)
        self.new_agents += 1
        self.taken.add(name)
        lease = self.lease(pool, host) if pool.docker_volume == "reuse" else None
        self.actions.append(
            Provision(pool.name, host, name, reason, detail, lease_volume=lease, needed_since=needed_since)
        )
        self.host_count[host] = self.host_count.get(host, 0) + 1
        self.host_cache_valid = False
        tally = self.tally[pool.name]
        tally.agents += 1
        tally.starting_slots += pool.executors

    def lease(self, pool: PoolConfig, host: str) -> str | None:
        free = self.free_volumes.get((pool.name, host))
        return free.pop(0).name if free else None

    def prepare_volumes(self) -> None:
        held = {(a.host, a.volume) for a in self.mem.agents.values() if a.volume}
        self.free_volumes: dict[tuple[str, str], list[Volume]] = {}
        for v in self.volumes:
            pool = self.pools.get(v.pool)
            if v.free and pool is not None and pool.docker_volume == "reuse" and (v.host, v.name) not in held:
                self.free_volumes.setdefault((v.pool, v.host), []).append(v)
        for free in self.free_volumes.values():
            free.sort(key=lambda v: (-v.last_used, v.name))  # most recently used first

    def excess_volumes(self) -> None:
        by_pool: dict[str, list[Volume]] = {}
        for (pool, _host), free in self.free_volumes.items():
            by_pool.setdefault(pool, []).extend(free)
        for name, free in by_pool.items():
            keep = self.pools[name].max_agents
            free.sort(key=lambda v: (-v.last_used, v.name))
            for v in reversed(free[keep:]):  # oldest first
                self.actions.append(
                    RemoveOrphan(
                        ResourceKind.VOLUME,
                        v.host,
                        v.name,
                        Reason.EXCESS_FREE_VOLUME,
                        f"pool {name} keeps at most {keep} free volumes",
                    )
                )

    def remember_labels(self, queue: tuple[QueueItem, ...]) -> tuple[QueueItem, ...]:
        """Fill in hidden labels from earlier passes; remember the ones visible now."""
        known = self.mem.item_labels
        labels: dict[int, str] = {}
        items = []
        for item in queue:
            if item.label is None and item.id in known:
                item = replace(item, label=known[item.id])
            if item.label is not None:
                labels[item.id] = item.label
            items.append(item)
        self.mem.item_labels = labels
        return tuple(items)

    def route(self, queue: tuple[QueueItem, ...]) -> dict[str | None, list[QueueItem]]:
        groups: dict[str | None, list[QueueItem]] = {}
        buildable = ItemKind.BUILDABLE
        for item in queue:
            if item.kind is buildable:
                group = groups.get(item.label)
                if group is None:
                    groups[item.label] = [item]
                else:
                    group.append(item)
        for label, items in groups.items():
            key = UNKNOWN_LABEL if label is None else label
            self.demand[key] = len(items)
        self.routes = {
            label: matching_pools(label, self.config.pools) for label in groups if label is not None
        }
        for candidates in self.routes.values():
            for pool in candidates:
                self.tally[pool.name].demand = True
        return groups

    def serve(self, groups: dict[str | None, list[QueueItem]]) -> None:
        # Capacity that serves items without a new agent: idle executors of online accepting
        # nodes not ours (grouped by label set), then ours per pool, then starting agents.
        foreign: dict[frozenset[str], int] = {}
        for name, node in self.nodes.items():
            if name in self.our_nodes or node.offline:
                continue
            slots = node.idle_executors
            if slots:
                key = node.labels - {name}
                foreign[key] = foreign.get(key, 0) + slots
        oldest_first = operator.attrgetter("in_queue_since", "id")
        for items in groups.values():
            items.sort(key=oldest_first)
        ordered = sorted(
            ((label, items) for label, items in groups.items() if label is not None),
            key=lambda pair: oldest_first(pair[1][0]),
        )
        for label, items in ordered:
            expr = _expr(label) if label else None
            waiting = len(items)
            if label and expr is not None:
                for labels, slots in foreign.items():
                    if waiting == 0:
                        break
                    if slots and expr.matches(labels):
                        used = min(slots, waiting)
                        foreign[labels] -= used
                        waiting -= used
            for attr in ("idle_slots", "starting_slots"):
                for pool in self.routes[label]:
                    if waiting == 0:
                        break
                    tally = self.tally[pool.name]
                    slots = getattr(tally, attr)
                    used = min(slots, waiting)
                    setattr(tally, attr, slots - used)
                    waiting -= used
            why = WHY_NO_POOL
            for index, pool in enumerate(self.routes[label]):
                while waiting > 0:
                    blocked = self.blocked(pool)
                    if blocked is not None:
                        if index == 0:
                            why = blocked
                        break
                    self.provision(
                        pool,
                        Reason.DEMAND,
                        f"{waiting} item(s) wait for {label or '(no label)'}",
                        needed_since=min(i.in_queue_since for i in items),
                    )
                    tally = self.tally[pool.name]
                    used = min(tally.starting_slots, waiting)
                    tally.starting_slots -= used
                    waiting -= used
            if waiting:
                self.unserved.extend(
                    Unserved(i.id, i.task_name, label, why) for i in items[len(items) - waiting :]
                )
        unknown = groups.get(None)
        if unknown:
            self.probe(unknown)

    def probe(self, items: list[QueueItem]) -> None:
        """Labels are hidden while Jenkins has no agent node: start one so that they show."""
        detail = WHY_UNKNOWN if not self.nodes else "label unknown"
        alive = [a for a in self.mem.agents.values() if a.name not in self.gone]
        if not self.nodes and not alive and self.new_agents == 0:
            for pool in self.config.pools:
                if self.blocked(pool) is None:
                    self.provision(
                        pool,
                        Reason.DEMAND,
                        f"{len(items)} item(s) with hidden labels: one agent reveals them",
                        needed_since=min(i.in_queue_since for i in items),
                    )
                    detail = f"{WHY_UNKNOWN}; starting one agent of pool {pool.name} to reveal them"
                    break
        self.unserved.extend(Unserved(i.id, i.task_name, None, detail) for i in items)

    def min_idle(self) -> None:
        for pool in self.config.pools:
            tally = self.tally[pool.name]
            have = tally.idle_slots // pool.executors + tally.starting_slots // pool.executors
            for _ in range(pool.min_idle - have):
                if self.blocked(pool) is not None:
                    break
                self.provision(pool, Reason.MIN_IDLE, f"keep {pool.min_idle} idle agent(s)")

    def run(self) -> tuple[Plan, Memory]:
        queue = self.observed.queue
        if queue is not None:
            seen = self.mem.item_first_seen
            self.mem.item_first_seen = {i.id: seen.get(i.id, self.now) for i in queue}
            queue = self.remember_labels(queue)
            groups = self.route(queue)
        else:
            groups = {}
        self.adopt()
        self.agents()
        self.idle_reaps()
        self.orphans()
        self.prepare_volumes()
        if queue is not None:
            self.serve(groups)
        self.min_idle()
        self.excess_volumes()
        self.mem.orphan_seen = self.next_orphan_seen
        plan = Plan(actions=tuple(self.actions), unserved=tuple(self.unserved), demand=self.demand)
        return plan, self.mem


def plan(observed: Observed, config: Config, memory: Memory, now: float) -> tuple[Plan, Memory]:
    """Decide this pass' actions; return them with the memory for the next pass (a new object).

    Without Jenkins (``observed.nodes`` is None) nothing is decided: busy states and demand
    are unknown, and nothing destructive happens on a guess.
    """
    if observed.nodes is None:
        mem = copy_memory(memory)
        for pool in config.pools:
            mem.pools.setdefault(pool.name, PoolMemory())
        return Plan(actions=()), mem
    return _Pass(observed, config, memory, now).run()
