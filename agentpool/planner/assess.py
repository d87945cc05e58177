"""Assessing one agent: from its memory, node and container, the action it needs, the capacity
it adds to its pool and its new memory. Idle reaps, which weigh a pool's idle agents against
``min_idle`` and waiting items, come after every agent has been assessed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from agentpool.config import PoolConfig
from agentpool.model import (
    AgentMemory,
    AgentResource,
    AgentState,
    CompleteLaunch,
    Cordon,
    Node,
    Reap,
    Reason,
    ResourceState,
)
from agentpool.planner.capacity import NO_CAPACITY, PoolCapacity

# An agent whose Jenkins node is gone (and orphans, which have no launch to race) waits this long.
ORPHAN_GRACE = 60.0
# A container still only created this long after its creation was left by an interrupted
# launch (a launch in progress starts it within a second or two): it is completed.
INTERRUPTED_GRACE = 10.0

_CLEAN_REAPS = frozenset({Reason.IDLE_TIMEOUT, Reason.DRAIN, Reason.ONE_SHOT_DONE})
_GONE = frozenset({ResourceState.EXITED, ResourceState.DEAD, ResourceState.REMOVING})


@dataclass(frozen=True, slots=True)
class Assessment:
    """What one pass makes of one agent."""

    memory: AgentMemory  # the agent's memory for the next pass
    action: Reap | Cordon | CompleteLaunch | None = None
    capacity: PoolCapacity = NO_CAPACITY  # its contribution to its pool
    on_host: bool = False  # counts against its host's max_agents
    idle: bool = False  # may be reaped for idleness (see idle_reaps)
    recovered: bool = False  # connected for the first time: its pool's failures are forgiven

    @property
    def gone(self) -> bool:
        """Reaped for good this pass (no re-check that could keep it)."""
        return isinstance(self.action, Reap) and not self.action.check_idle


@dataclass(frozen=True, slots=True)
class AgentView:
    """Everything the assessment of one agent reads."""

    memory: AgentMemory
    pool: PoolConfig | None  # None: its pool left the config
    draining: bool
    node: Node | None
    container: AgentResource | None
    reachable: bool  # its host answered this pass


def reap(
    agent: AgentMemory,
    pool: PoolConfig | None,
    reason: Reason,
    detail: str,
    *,
    check_idle: bool,
    count_launch_failure: bool = False,
) -> Reap:
    # A cleanly reaped agent of a reuse pool leaves its volume as a warm cache; a lost
    # one or one that never started does not (its inner daemon may have died mid-write).
    keep = pool is not None and pool.docker_volume == "reuse" and reason in _CLEAN_REAPS
    return Reap(
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


def assess(view: AgentView, now: float) -> Assessment:
    am, pool, node, container = view.memory, view.pool, view.node, view.container
    if not view.reachable:
        # Nothing is decided about an agent on an engine we cannot see; it still counts.
        if node is None or node.offline:
            return Assessment(am, capacity=PoolCapacity(1, 0, pool.executors if pool else 0))
        return Assessment(am, capacity=PoolCapacity(1, node.idle_executors, 0))
    if container is None or container.state in _GONE:
        what = "gone" if container is None else container.state.value
        never_online = am.online_at is None
        detail = f"container {what}" + (" before the agent came online" if never_online else "")
        action = reap(am, pool, Reason.LOST, detail, check_idle=False, count_launch_failure=never_online)
        return Assessment(am, action)
    if node is None:
        return _without_node(am, pool, now)
    if container.state is ResourceState.CREATED and pool is not None and not view.draining:
        interrupted = _interrupted(am, pool, container, now)
        if interrupted is not None:
            return interrupted
    # A temporarily offline node may or may not be connected (Jenkins does not say): its
    # executors decide, and an idle one is reaped through the idle rules, never forced.
    if not (not node.offline or node.temporarily_offline or node.busy):
        return _disconnected(view, node, now)
    return _connected(view, node, now)


def _interrupted(
    am: AgentMemory, pool: PoolConfig, container: AgentResource, now: float
) -> Assessment | None:
    """A created, never started container with its node: completed while its launch_timeout runs."""
    if am.online_at is not None or now - am.launched_at >= pool.launch_timeout:
        return None  # the usual rules (launch_timeout) decide
    capacity = PoolCapacity(1, 0, pool.executors)
    if now - container.created < INTERRUPTED_GRACE:
        return Assessment(am, capacity=capacity, on_host=True)
    detail = f"container created {now - container.created:.0f}s ago and never started"
    action = CompleteLaunch(am.name, am.pool, am.host, container.id, Reason.INTERRUPTED_LAUNCH, detail)
    return Assessment(am, action, capacity, on_host=True)


def _without_node(am: AgentMemory, pool: PoolConfig | None, now: float) -> Assessment:
    # Deleted in Jenkins (or missing from one answer): the agent can never connect.
    missing_since = am.offline_since if am.offline_since is not None else now
    am = replace(am, offline_since=missing_since)
    if now - missing_since >= ORPHAN_GRACE:
        detail = f"its Jenkins node is gone for {now - missing_since:.0f}s"
        return Assessment(am, reap(am, pool, Reason.LOST, detail, check_idle=False), on_host=True)
    return Assessment(am, capacity=PoolCapacity(agents=1), on_host=True)


def _disconnected(view: AgentView, node: Node, now: float) -> Assessment:
    am, pool = view.memory, view.pool
    if view.draining:
        action = reap(am, pool, Reason.DRAIN, "pool is draining; agent not connected", check_idle=True)
        return Assessment(am, action, PoolCapacity(agents=1), on_host=True)
    assert pool is not None
    online = am.online_at is not None
    if online:
        since = am.offline_since if am.offline_since is not None else now
        am = replace(am, offline_since=since)
        waited = now - since
    else:
        waited = am.waited if am.waited is not None else now - am.launched_at
    if waited < pool.launch_timeout:
        return Assessment(am, capacity=PoolCapacity(1, 0, pool.executors), on_host=True)
    if online:
        action = reap(am, pool, Reason.LOST, f"disconnected for {waited:.0f}s", check_idle=False)
    else:
        detail = f"not online {waited:.0f}s after launch (launch_timeout {pool.launch_timeout:g}s)"
        action = reap(am, pool, Reason.LAUNCH_TIMEOUT, detail, check_idle=False, count_launch_failure=True)
    return Assessment(am, action, on_host=True)


def _connected(view: AgentView, node: Node, now: float) -> Assessment:
    am, pool = view.memory, view.pool
    recovered = am.online_at is None and not node.offline
    online_at = now if am.online_at is None else am.online_at
    accepting = not node.temporarily_offline
    if node.busy:
        started = am.builds_started + (1 if am.idle_since is not None or am.builds_started == 0 else 0)
        am = _updated(am, online_at=online_at, idle_since=None, builds_started=started)
        if pool is not None and pool.one_shot:
            detail = "one-shot agent started its build"
            cordon = Cordon(am.name, am.pool, am.host, Reason.ONE_SHOT_BUSY, detail) if accepting else None
            return Assessment(am, cordon, PoolCapacity(agents=1), on_host=True, recovered=recovered)
        idle = node.idle_executors if accepting else 0
        return Assessment(am, None, PoolCapacity(1, idle, 0), on_host=True, recovered=recovered)
    idle_since = now if am.idle_since is None else am.idle_since
    am = _updated(am, online_at=online_at, idle_since=idle_since, builds_started=am.builds_started)
    if view.draining:
        action = reap(am, pool, Reason.DRAIN, "pool is draining", check_idle=True)
        return Assessment(am, action, PoolCapacity(agents=1), on_host=True, recovered=recovered)
    assert pool is not None
    if pool.one_shot and am.builds_started > 0:
        # Offline already (cordoned): no build can start, the reap needs no re-check.
        detail = "one-shot agent finished its build"
        action = reap(am, pool, Reason.ONE_SHOT_DONE, detail, check_idle=accepting)
        # gone for sure when offline; a re-checked one might stay after all
        return Assessment(am, action, PoolCapacity(agents=1 if accepting else 0), True, recovered=recovered)
    idle = node.idle_executors if accepting else 0
    return Assessment(am, None, PoolCapacity(1, idle, 0), on_host=True, idle=True, recovered=recovered)


def _updated(
    am: AgentMemory, *, online_at: float, idle_since: float | None, builds_started: int
) -> AgentMemory:
    """The memory of a connected agent (cheaper than ``dataclasses.replace``, once per agent and pass)."""
    return AgentMemory(
        name=am.name,
        pool=am.pool,
        host=am.host,
        launched_at=am.launched_at,
        online_at=online_at,
        idle_since=idle_since,
        builds_started=builds_started,
        volume=am.volume,
        offline_since=None,
        needed_since=am.needed_since,
        waited=am.waited,
    )


def idle_reaps(
    pool: PoolConfig,
    idle: Sequence[AgentMemory],
    capacity: PoolCapacity,
    wanted: bool,
    nodes: Mapping[str, Node],
    now: float,
) -> tuple[list[Reap], PoolCapacity]:
    """Reap the pool's agents idle past ``idle_timeout``, longest idle first, down to ``min_idle``.

    While items wait for the pool (``wanted``), an idle accepting agent is about to take one
    and is kept; a temporarily offline one is not.
    """
    reaps: list[Reap] = []
    remaining = len(idle)
    for am in sorted(idle, key=lambda a: (a.idle_since if a.idle_since is not None else now, a.name)):
        if remaining <= pool.min_idle:
            break
        idle_for = now - (am.idle_since if am.idle_since is not None else now)
        if idle_for < pool.idle_timeout:
            break
        node = nodes.get(am.name)
        accepting = node is not None and not node.temporarily_offline
        if wanted and (node is None or accepting):
            continue
        detail = f"idle {idle_for:.0f}s (idle_timeout {pool.idle_timeout:g}s)"
        reaps.append(reap(am, pool, Reason.IDLE_TIMEOUT, detail, check_idle=True))
        remaining -= 1
        if node is not None and accepting:
            capacity = capacity.without_idle(node.idle_executors)
    return reaps, capacity


def agent_state(agent: AgentMemory, node: Node | None, draining: bool = False) -> AgentState:
    """The state `status` shows for one agent."""
    if node is None or agent.online_at is None or (node.offline and not node.temporarily_offline):
        return AgentState.STARTING
    if node.busy:
        return AgentState.BUSY
    if draining or node.temporarily_offline:
        return AgentState.DRAINING
    return AgentState.ONLINE_IDLE
