"""Plain data passed between the layers: what was observed, what the planner remembers, what to do.

Adapters turn Jenkins and Docker answers into these values; the planner reads them and
returns actions; the executor performs the actions. Nothing here does I/O, so every layer
can be tested with values built by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import msgspec

# Labels put on every container and volume agentpool creates: who owns it and what it is.
LABEL_INSTANCE = "agentpool.instance"
LABEL_POOL = "agentpool.pool"
LABEL_AGENT = "agentpool.agent"
# On volumes of `docker_volume: reuse` pools: "true" while no agent holds the volume.
LABEL_FREE = "agentpool.free"
# The run (boot) of the daemon that created it: a container of an earlier run without its node
# was left by a crash between deleting the node and removing the container.
LABEL_BOOT = "agentpool.boot"


class ItemKind(StrEnum):
    """The queue item's state, from its ``_class``."""

    WAITING = "waiting"  # quiet period
    BLOCKED = "blocked"
    BUILDABLE = "buildable"
    PENDING = "pending"  # handed to an executor, not yet started


class QueueItem(msgspec.Struct, frozen=True, gc=False):
    """A queued build as Jenkins exports it, with the label recovered from what is exported.

    A ``msgspec.Struct`` rather than a frozen dataclass: a pass builds one per queued item
    (ten thousand on a busy controller) and a frozen dataclass costs six times as much to
    build (``__init__`` goes through ``object.__setattr__`` field by field). Immutable,
    compared and hashed by value all the same; ``msgspec.structs.replace`` copies one.
    """

    id: int
    kind: ItemKind
    task_name: str
    why: str
    in_queue_since: float  # epoch seconds
    # The label expression (Jenkins-normalised), "" when the item needs no label. None when
    # it cannot be known: Jenkins hides it while no agent node exists (see jenkins-api.md),
    # or ``why`` names a node in its place.
    label: str | None
    # The one node ``why`` names instead of the label: the expression is some expression
    # that this node satisfies and no other node does (the planner infers from that).
    node: str | None = None
    exact: bool = False  # the label came from /scriptText (Queue.Item.getAssignedLabel)


@dataclass(frozen=True, slots=True)
class Executor:
    idle: bool
    build_url: str | None = None


@dataclass(frozen=True, slots=True)
class Node:
    """A Jenkins agent node (the built-in node is never reported)."""

    name: str
    labels: frozenset[str]  # as Jenkins exports them: includes the node's own name
    offline: bool  # not connected, or temporarily offline
    temporarily_offline: bool
    offline_reason: str
    executors: tuple[Executor, ...]
    description: str = ""  # agentpool writes its ownership marker here (see planner/ownership.py)

    @property
    def busy(self) -> bool:
        return any(not e.idle for e in self.executors)

    @property
    def idle_executors(self) -> int:
        if self.offline:
            return 0
        return sum(1 for e in self.executors if e.idle)


class ResourceState(StrEnum):
    """The state of an agent's resource on its backend (the Docker container states today)."""

    CREATED = "created"
    RUNNING = "running"
    RESTARTING = "restarting"
    PAUSED = "paused"
    EXITED = "exited"
    DEAD = "dead"
    REMOVING = "removing"


@dataclass(frozen=True, slots=True)
class AgentResource:
    """What runs one agent of this instance on its backend (a Docker container today)."""

    host: str
    id: str
    name: str
    agent: str
    pool: str
    state: ResourceState
    created: float  # epoch seconds
    volume: str = ""  # mounted at /var/lib/docker: a leased one is named after an earlier agent
    boot: str = ""  # LABEL_BOOT: the run of the daemon that started it ("" before labels had it)


# The Docker names of the two types above, which the Docker adapter and the tests use.
ContainerState = ResourceState
Container = AgentResource


@dataclass(frozen=True, slots=True)
class Volume:
    """An agent's storage on its backend (a Docker volume mounted at its /var/lib/docker)."""

    host: str
    name: str
    pool: str
    agent: str  # the agent that holds it, or held it last (reuse pools)
    free: bool  # reuse pools: released by a cleanly reaped agent, may be leased again
    created: float
    last_used: float  # when it was last released (reuse pools), else created
    boot: str = ""  # LABEL_BOOT: the run of the daemon that created it ("" before volumes had it)


@dataclass(frozen=True, slots=True)
class HostView:
    """What one backend host showed this pass; ``reachable`` False means nothing is known."""

    name: str
    reachable: bool
    containers: tuple[AgentResource, ...] = ()  # the agents' resources (containers)
    volumes: tuple[Volume, ...] = ()
    error: str = ""
    # the pools' images known to be present there; None: not checked (every image counts as there)
    images: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class InFlight:
    """The actions the executor is still performing when a pass starts (issued by earlier passes).

    The planner issues none of them again: a launching agent counts as starting capacity and
    its node, container and volume are not orphans; an agent being reaped, cordoned or having
    its interrupted launch completed gets no other action and no longer counts as its pool's capacity; an orphan being removed is not
    removed twice.
    """

    provisions: tuple[Provision, ...] = ()
    reaping: frozenset[str] = frozenset()  # agents with a Reap in flight
    cordoning: frozenset[str] = frozenset()  # agents with a Cordon in flight
    orphans: frozenset[str] = frozenset()  # orphan keys (``orphan_key``) being removed
    completing: frozenset[str] = frozenset()  # agents with a CompleteLaunch in flight

    @property
    def launching(self) -> frozenset[str]:
        return frozenset(p.agent for p in self.provisions)

    def busy(self, agent: str) -> bool:
        """Whether any action on ``agent`` is in flight."""
        return any(agent in s for s in (self.reaping, self.cordoning, self.completing, self.launching))


NOTHING_IN_FLIGHT = InFlight()


@dataclass(frozen=True, slots=True)
class Observed:
    """Everything one pass saw. ``queue``/``nodes`` are None when Jenkins could not be read."""

    queue: tuple[QueueItem, ...] | None
    nodes: tuple[Node, ...] | None
    hosts: tuple[HostView, ...]
    jenkins_error: str = ""
    in_flight: InFlight = NOTHING_IN_FLIGHT
    # monotonic seconds when observed (durations); None: use the wall clock `now` of the pass
    ticks: float | None = None


class AgentState(StrEnum):
    STARTING = "starting"
    ONLINE_IDLE = "online-idle"
    BUSY = "busy"
    DRAINING = "draining"


@dataclass(slots=True)
class AgentMemory:
    """What agentpool remembers about one of its agents between passes (not exported by Jenkins)."""

    name: str
    pool: str
    host: str
    launched_at: float
    online_at: float | None = None
    idle_since: float | None = None
    builds_started: int = 0  # one-shot pools: an agent that started a build never takes another
    volume: str = ""
    # when a node that had been online was last seen disconnected (None while connected)
    offline_since: float | None = None
    # inQueueSince of the oldest item the agent was started for (queued → online histogram)
    needed_since: float | None = None
    # Seconds counted toward launch_timeout while not yet online: monotonic time of passes
    # that read Jenkins (an outage or a wall-clock step does not count). None: not counted
    # yet (adopted after a restart), taken from the container's age on first assessment.
    waited: float | None = None


@dataclass(slots=True)
class PoolMemory:
    consecutive_failures: int = 0
    backoff_until: float = 0.0
    draining: bool = False
    counted_pass: float | None = None  # the pass whose failure was counted last (one per pass)


@dataclass(slots=True)
class HostMemory:
    """One backend host's health and maintenance state (see :mod:`agentpool.planner.hosts`)."""

    unreachable_since: float | None = None  # first pass of the current outage
    last_error: str = ""
    last_error_at: float | None = None
    draining: bool = False  # `drain --host`: no new agents, idle ones reaped


@dataclass(slots=True)
class Cooldown:
    """Launch failures of one pool on one host: while ``until > now`` that host gets none of its agents."""

    failures: int = 0
    until: float = 0.0
    counted_pass: float | None = None  # the pass whose failure was counted last (one per pass)
    error: str = ""


@dataclass(slots=True)
class Memory:
    """The planner's state carried from pass to pass; rebuilt from observation after a restart."""

    agents: dict[str, AgentMemory] = field(default_factory=dict)
    pools: dict[str, PoolMemory] = field(default_factory=dict)
    hosts: dict[str, HostMemory] = field(default_factory=dict)
    # (host, pool) -> launch failures of that pool on that host
    cooldowns: dict[tuple[str, str], Cooldown] = field(default_factory=dict)
    # resource key ("node:NAME", "container:HOST/ID", "volume:HOST/NAME") -> first pass seen orphaned
    orphan_seen: dict[str, float] = field(default_factory=dict)
    # queue item id -> epoch seconds first seen waiting (for the queued → online histogram)
    item_first_seen: dict[int, float] = field(default_factory=dict)
    # queue item id -> label expression last seen for it. Jenkins hides Pipeline items'
    # labels whenever no agent node exists (e.g. right after the last agent was reaped); the
    # label seen while one existed still holds, since an item's label never changes.
    item_labels: dict[int, str] = field(default_factory=dict)
    # queue item id -> pools learnt unable to serve it (its label inferred from a node's name)
    item_refused: dict[int, frozenset[str]] = field(default_factory=dict)
    # Who we are on the controller: our nodes' description starts with
    # agentpool:<instance>:<daemon_id>:<boot> (see planner/ownership.py).
    daemon_id: str = ""
    boot: str = ""
    last_ticks: float | None = None  # Observed.ticks of the previous pass (see AgentMemory.waited)


class Reason(StrEnum):
    """Why an action is taken; also the value of the metrics' ``reason`` label."""

    DEMAND = "demand"
    MIN_IDLE = "min-idle"
    IDLE_TIMEOUT = "idle-timeout"
    ONE_SHOT_DONE = "one-shot-done"
    ONE_SHOT_BUSY = "one-shot-busy"  # a one-shot agent started its build: take no other
    DRAIN = "drain"
    LAUNCH_TIMEOUT = "launch-timeout"
    LOST = "lost"
    ORPHAN = "orphan"
    BUSY_AGAIN = "busy-again"
    EXCESS_FREE_VOLUME = "excess-free-volume"
    INTERRUPTED_LAUNCH = "interrupted-launch"
    HOST_LOST = "host-lost"  # its docker host is unreachable past host_lost_after


@dataclass(frozen=True, slots=True)
class Provision:
    """Create a node, read its secret, create or lease the volume, start the container."""

    pool: str
    host: str
    agent: str
    reason: Reason
    detail: str
    lease_volume: str | None = None  # reuse pools: a free volume to take instead of a new one
    needed_since: float | None = None  # inQueueSince of the oldest item it is started for
    planned_at: float | None = None  # the pass that decided it: one failure counted per pass


@dataclass(frozen=True, slots=True)
class Reap:
    """Remove an agent: node, container, and its volume (or release it, for reuse pools).

    With ``check_idle`` the executor first takes the node temporarily offline, re-reads its
    executors and only goes on when they are still idle (else brings it back online).
    """

    agent: str
    pool: str
    host: str
    reason: Reason
    detail: str
    check_idle: bool = True
    keep_volume: bool = False
    count_launch_failure: bool = False
    # The volume the agent was started on (a leased one is not named after the agent); the
    # executor uses it when the container, which would tell, is gone.
    volume: str = ""
    planned_at: float | None = None  # the pass that decided it: one failure counted per pass


@dataclass(frozen=True, slots=True)
class Cordon:
    """Take an agent's node temporarily offline (unless it already is) and leave it running.

    A one-shot agent gets this as soon as it is seen busy, so Jenkins never hands it a
    second build; it is reaped (``Reap``, ``ONE_SHOT_DONE``) once its build has ended.
    """

    agent: str
    pool: str
    host: str
    reason: Reason
    detail: str


class ResourceKind(StrEnum):
    """The kinds of resource agentpool creates for an agent (and may find left over)."""

    NODE = "node"  # the agent's Jenkins node
    CONTAINER = "container"  # the agent itself on its backend (a Docker container today)
    VOLUME = "volume"  # the agent's storage on its backend (its inner /var/lib/docker)


@dataclass(frozen=True, slots=True)
class CompleteLaunch:
    """Start an agent whose launch was cut short after its container was created (a crash or
    kill -9 between create and start): copy its secret in again and start the container, so the
    build it was started for gets this agent, not a second one."""

    agent: str
    pool: str
    host: str
    container: str  # the created container's id
    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class RemoveOrphan:
    """Remove one leftover resource of this instance that has no counterpart."""

    kind: ResourceKind
    host: str  # "" for nodes
    name: str  # node name, container id, or volume name
    reason: Reason
    detail: str


class UnservedReason(StrEnum):
    """Why a waiting item is not served this pass; ``Unserved.why`` starts with the value."""

    NO_POOL = "no pool matches"
    CAP = "cap reached"
    BACKOFF = "backoff"
    DRAINING = "draining"
    LABEL_UNKNOWN = "label unknown"
    NO_HOST = "no docker host reachable"
    NO_IMAGE = "image missing"  # on every docker host that could take the agent


class Unserved(msgspec.Struct, frozen=True, gc=False):
    """A waiting item agentpool will not serve this pass, and why (for `status` and logs); a
    Struct for the reason :class:`QueueItem` is one (one per waiting item and pass)."""

    item_id: int
    task_name: str
    label: str | None
    why: str  # the reason's value, with details: "cap reached (pool a: max_agents 1)"
    reason: UnservedReason = UnservedReason.NO_POOL
    inferred: bool = False  # the label is not known: inferred from the one node `why` names


Action = Provision | Reap | Cordon | CompleteLaunch | RemoveOrphan


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...]
    unserved: tuple[Unserved, ...] = ()
    # waiting items per label expression this pass (metrics)
    demand: dict[str, int] = field(default_factory=dict)
    # queue item id -> how its label was inferred (`why` named one node in its place)
    inferred: dict[int, str] = field(default_factory=dict)
    # daemon ids of other agentpool daemons at our instance on this controller
    neighbours: tuple[str, ...] = ()
