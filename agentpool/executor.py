"""The executor: performs the planner's actions against Jenkins and the agent backends.

Each action is all-or-nothing as far as it can be: a provision that fails at any step
undoes the steps before it, so a failed launch leaves no node, volume or agent behind.
A reap takes the node offline and re-reads its executors before removing anything, so a
build that was assigned in the meantime is never killed. Nothing here raises: any
exception, expected or not, is caught per action and goes through the action's undo path.

Actions run in the background (:meth:`Executor.submit`), on lanes of worker threads:
one lane per backend host for launches, bounded by its ``max_parallel_launches``, and one
lane for everything else (reaps, cordons, orphan removals), so a container that is slow to
stop never delays a launch. The engine collects finished outcomes and what is still in
flight at the start of each pass (:meth:`Executor.collect`, one lock); an action already in
flight for the same agent or resource is refused, never performed twice.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, assert_never

from agentpool.backend import AgentSpec, Backend, JenkinsPort
from agentpool.errors import ErrorKind, ExternalError
from agentpool.logs import forget_secret, register_secret
from agentpool.model import (
    LABEL_AGENT,
    LABEL_BOOT,
    LABEL_INSTANCE,
    LABEL_POOL,
    Action,
    CompleteLaunch,
    Cordon,
    InFlight,
    Provision,
    Reap,
    Reason,
    RemoveOrphan,
    ResourceKind,
)
from agentpool.planner.memory import orphan_key
from agentpool.report import Outcome
from agentpool.security import host_config_fields, host_config_kwargs

if TYPE_CHECKING:
    from agentpool.config import Config, PoolConfig

__all__ = ["Executor", "Outcome", "action_key", "volume_name"]

log = logging.getLogger("agentpool.executor")

# Reaps whose agent's last lines are worth keeping in the log.
_TAIL_REASONS = frozenset({Reason.LAUNCH_TIMEOUT, Reason.LOST})


def _failed(action: Action, exc: Exception) -> Outcome:
    if isinstance(exc, ExternalError):
        return Outcome(action, ok=False, error=str(exc), error_system=exc.system, error_kind=exc.kind)
    return Outcome(
        action, ok=False, error=f"unexpected {type(exc).__name__}: {exc}", error_kind=ErrorKind.UNEXPECTED
    )


def volume_name(agent: str) -> str:
    return f"{agent}-docker"


def action_key(action: Action) -> str:
    """What an action acts on: one agent, or one leftover resource; one action per key at a time."""
    match action:
        case Provision() | Reap() | Cordon() | CompleteLaunch():
            return f"agent:{action.agent}"
        case RemoveOrphan():
            return orphan_key(action.kind, action.host, action.name)
        case _:
            assert_never(action)


# A removal lane's size: reaps wait on container stops (up to a pool's stop_timeout each).
REMOVAL_WORKERS = 8


class _Lane:
    """A queue and its worker threads (daemon threads: an exit never waits on a stuck call)."""

    def __init__(self, name: str, workers: int) -> None:
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def put(self, job: Callable[[], None]) -> None:
        self._queue.put(job)

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            job()


@dataclass(frozen=True)
class LaunchStats:
    """Launches running at once on one host: now and the most since the executor started."""

    running: int
    high_water: int


class Executor:
    """Carries out actions; one instance per loaded config."""

    def __init__(self, config: Config, jenkins: JenkinsPort, hosts: Mapping[str, Backend]) -> None:
        self.config = config
        self.jenkins = jenkins
        self.hosts = hosts
        self._pools = {pool.name: pool for pool in config.pools}
        self._orphan_stop = max((p.stop_timeout for p in config.pools), default=10.0)
        # agent -> its secret, masked in our logs while the agent exists
        self.agent_secrets: dict[str, str] = {}
        self._lock = threading.Condition()
        self._in_flight: dict[str, Action] = {}
        self._done: list[Outcome] = []
        self._running: dict[str, int] = {}
        self._high_water: dict[str, int] = {}
        self._lanes: dict[str, _Lane] = {}
        self._limits = {h.name: h.max_parallel_launches for h in config.docker_hosts}
        # first word of our nodes' description: agentpool:<instance>:<daemon id>:<boot>
        self.marker = f"agentpool:{config.instance}:"
        self.boot = ""  # this run of the daemon, on the containers it starts (LABEL_BOOT)

    def forget_agent(self, agent: str) -> None:
        """The agent is gone and its last log lines are written: stop masking its secret."""
        secret = self.agent_secrets.pop(agent, None)
        if secret:
            forget_secret(secret)

    # -- in the background -----------------------------------------------------------------

    def submit(self, action: Action) -> bool:
        """Start ``action`` in the background; False (and nothing done) when its key is in flight."""
        key = action_key(action)
        with self._lock:
            if key in self._in_flight:
                log.error("%s of %s refused: an action on it is still in flight", type(action).__name__, key)
                return False
            self._in_flight[key] = action
            lane = self._lane(action)
        lane.put(lambda: self._run(key, action))
        return True

    def _lane(self, action: Action) -> _Lane:
        if isinstance(action, Provision | CompleteLaunch):
            name, workers = f"launch-{action.host}", self._limits.get(action.host, 1)
        else:
            name, workers = "remove", REMOVAL_WORKERS
        lane = self._lanes.get(name)
        if lane is None:
            lane = self._lanes[name] = _Lane(f"agentpool-{name}", workers)
        return lane

    def _run(self, key: str, action: Action) -> None:
        host = action.host if isinstance(action, Provision) else None
        if host is not None:
            with self._lock:
                running = self._running[host] = self._running.get(host, 0) + 1
                self._high_water[host] = max(self._high_water.get(host, 0), running)
        outcome = self.perform(action)
        with self._lock:
            if host is not None:
                self._running[host] -= 1
            del self._in_flight[key]
            self._done.append(outcome)
            self._lock.notify_all()

    def collect(self) -> tuple[list[Outcome], InFlight]:
        """The outcomes finished since the last call, in order, and what is still in flight (atomically)."""
        with self._lock:
            done, self._done = self._done, []
            actions = list(self._in_flight.values())
        return done, in_flight_of(actions)

    def in_flight(self) -> InFlight:
        """What is still in flight, leaving the finished outcomes to :meth:`collect`."""
        with self._lock:
            return in_flight_of(list(self._in_flight.values()))

    def wait(self, timeout: float | None = None) -> bool:
        """Block until nothing is in flight (True) or ``timeout`` seconds passed (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._in_flight:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._lock.wait(left)
        return True

    def launch_stats(self) -> dict[str, LaunchStats]:
        with self._lock:
            return {
                host: LaunchStats(self._running.get(host, 0), high) for host, high in self._high_water.items()
            }

    def close(self) -> None:
        """Stop the worker threads once their queues are empty (in-flight actions still finish)."""
        with self._lock:
            lanes, self._lanes = list(self._lanes.values()), {}
        for lane in lanes:
            lane.close()

    def execute(self, actions: Iterable[Action]) -> list[Outcome]:
        """Perform ``actions`` in the background and wait for them all; their outcomes, in order."""
        batch = list(actions)
        for action in batch:
            self.submit(action)
        self.wait()
        done, _ = self.collect()
        by_action = {id(o.action): o for o in done}
        return [by_action[id(a)] for a in batch if id(a) in by_action]

    def perform(self, action: Action) -> Outcome:
        try:
            match action:
                case Provision():
                    return self.provision(action)
                case Reap():
                    return self.reap(action)
                case Cordon():
                    node = self.jenkins.set_temporarily_offline(
                        action.agent, True, f"agentpool: {action.detail}"
                    )
                    if not node.temporarily_offline:  # brought back at once: the next pass cordons again
                        error = f"cordon of {action.agent}: the node did not stay offline"
                        return Outcome(action, ok=False, error=error)
                    return Outcome(action, ok=True, removed=False)
                case CompleteLaunch():
                    return self.complete_launch(action)
                case RemoveOrphan():
                    return self.remove_orphan(action)
                case _:
                    assert_never(action)
        except Exception as exc:  # one action's failure, whatever it is, must not stop the others
            if not isinstance(exc, ExternalError):
                log.exception("%s of %s failed unexpectedly", type(action).__name__, _subject(action))
            return _failed(action, exc)

    # -- provision -------------------------------------------------------------------------

    def complete_launch(self, action: CompleteLaunch) -> Outcome:
        """Nothing to undo on failure: the agent stays a starting one, reaped at launch_timeout."""
        secret = self.jenkins.agent_secret(action.agent)
        register_secret(secret)
        self.agent_secrets[action.agent] = secret
        self.hosts[action.host].complete_agent(action.container, secret)
        return Outcome(action, ok=True, container_id=action.container)

    def _labels(self, pool: str, agent: str) -> dict[str, str]:
        labels = {LABEL_INSTANCE: self.config.instance, LABEL_POOL: pool, LABEL_AGENT: agent}
        return labels | ({LABEL_BOOT: self.boot} if self.boot else {})

    def _spec(self, pool: PoolConfig, agent: str, volume: str, secret: str) -> AgentSpec:
        jenkins = self.config.jenkins
        env = {str(k): str(v) for k, v in pool.env.items()}
        env.update(
            {
                "JENKINS_URL": jenkins.agent_url or jenkins.url,
                "JENKINS_AGENT_NAME": agent,
                "JENKINS_SECRET": secret,
                "JENKINS_AGENT_WORKDIR": pool.remote_fs,
            }
        )
        if jenkins.websocket:
            env["JENKINS_WEB_SOCKET"] = "true"
        return AgentSpec(
            name=agent,
            pool=pool.name,
            image=pool.image,
            volume=volume,
            env=env,
            host_config=host_config_kwargs(pool.security, list(pool.cap_drop)),
            host_fields=host_config_fields(pool.security),
            nano_cpus=int(pool.cpus * 1e9) if pool.cpus else None,
            mem_limit=pool.memory or None,
            labels=self._labels(pool.name, agent),
        )

    def provision(self, action: Provision) -> Outcome:
        pool = self._pools[action.pool]
        host = self.hosts[action.host]
        agent = action.agent
        undo: list[tuple[ResourceKind, str]] = []
        try:
            self.jenkins.create_node(
                agent,
                labels=list(pool.labels),
                executors=pool.executors,
                remote_fs=pool.remote_fs,
                exclusive=pool.exclusive,
                websocket=self.config.jenkins.websocket,
                description=f"{self.marker} docker-in-docker agent of pool {pool.name}",
            )
            undo.append((ResourceKind.NODE, agent))
            secret = self.jenkins.agent_secret(agent)
            register_secret(secret)  # its image may print it: masked in the log tails we keep
            self.agent_secrets[agent] = secret
            if action.lease_volume and not host.volume_in_use(action.lease_volume):
                volume = action.lease_volume
            else:
                volume = volume_name(agent)
                host.create_volume(volume, self._labels(pool.name, agent))
                undo.append((ResourceKind.VOLUME, volume))
            # No undo by name for the container: a create refused for its name ("conflict")
            # would remove someone else's container; start_agent removes its own by id.
            container_id = host.start_agent(self._spec(pool, agent, volume, secret))
        except Exception as exc:  # expected or not, every step done so far is undone
            if not isinstance(exc, ExternalError):
                log.exception("provision of %s failed unexpectedly", agent)
            self._undo(host, undo)
            return _failed(action, exc)
        return Outcome(action, ok=True, container_id=container_id, volume=volume)

    def _undo(self, host: Backend, undo: list[tuple[ResourceKind, str]]) -> None:
        for kind, name in reversed(undo):
            try:
                match kind:
                    case ResourceKind.VOLUME:
                        host.remove_volume(name)
                    case ResourceKind.NODE:
                        self.jenkins.delete_node(name)
                    case ResourceKind.CONTAINER:
                        host.remove_agent(name)
                    case _:
                        assert_never(kind)
            except Exception as exc:  # left for the orphan sweep, which removes it on a later pass
                log.warning("undo of %s %s failed: %s", kind, name, exc)

    # -- reap ------------------------------------------------------------------------------

    def reap(self, action: Reap) -> Outcome:
        """Remove the agent; with ``check_idle`` only once its node was taken offline and is still idle.

        A failure before the node is deleted puts back online a node this reap took offline
        (the next pass decides again); after that, what is left has no node and is removed by
        the next pass (a lost agent) or the orphan sweep.
        """
        agent = action.agent
        took_offline = False
        if action.check_idle:
            try:
                # Offline already (an admin, or our cordon): not ours to bring back online, and
                # its offline cause (an admin's message, our one-shot record) is left as it is.
                node = self.jenkins.read_node(agent)
                was_offline = node.temporarily_offline
                if not was_offline:
                    node = self.jenkins.set_temporarily_offline(
                        agent, True, f"agentpool: removing this agent ({action.reason.value})"
                    )
            except ExternalError as exc:
                if exc.kind is not ErrorKind.NOT_FOUND:
                    raise
            else:
                # Re-read: still idle, and really offline (nobody brought it back meanwhile).
                if node.busy or not node.temporarily_offline:
                    if not was_offline and node.temporarily_offline:
                        self.jenkins.set_temporarily_offline(agent, False)
                    return Outcome(action, ok=True, removed=False)
                took_offline = not was_offline
        host = self.hosts.get(action.host)
        try:
            tail, volume = "", None
            if host is not None:
                if action.reason in _TAIL_REASONS:
                    tail = host.logs_tail(agent)
                volume = host.agent_volume(agent)
            self.jenkins.delete_node(agent)
        except Exception:
            if took_offline:
                self._back_online(agent)
            raise
        if host is not None:
            host.remove_agent(agent, self._stop_timeout(action.pool))
            volume = volume or action.volume or volume_name(agent)
            if not action.keep_volume:
                host.remove_volume(volume)
        return Outcome(action, ok=True, removed=True, volume=volume or "", log_tail=tail)

    def _stop_timeout(self, pool: str) -> float:
        config = self._pools.get(pool)
        return config.stop_timeout if config is not None else self._orphan_stop

    def _back_online(self, agent: str) -> None:
        try:
            self.jenkins.set_temporarily_offline(agent, False)
        except Exception as exc:  # it stays offline and idle: the next pass reaps it again
            log.warning("putting %s back online failed: %s", agent, exc)

    # -- orphans ---------------------------------------------------------------------------

    def remove_orphan(self, action: RemoveOrphan) -> Outcome:
        match action.kind:
            case ResourceKind.NODE:
                return self._remove_orphan_node(action)
            case ResourceKind.CONTAINER:
                host = self.hosts[action.host]
                tail = host.logs_tail(action.name)
                host.remove_agent(action.name, self._orphan_stop)
                return Outcome(action, ok=True, log_tail=tail)
            case ResourceKind.VOLUME:
                self.hosts[action.host].remove_volume(action.name)
                return Outcome(action, ok=True)
            case _:
                assert_never(action.kind)

    def _remove_orphan_node(self, action: RemoveOrphan) -> Outcome:
        """Offline → re-check → delete, as a reap: a node that connected or took a build meanwhile stays."""
        name = action.name
        try:
            node = self.jenkins.read_node(name)
            was_offline = node.temporarily_offline
            if not was_offline:
                node = self.jenkins.set_temporarily_offline(
                    name, True, "agentpool: removing this orphan node"
                )
        except ExternalError as exc:
            if exc.kind is ErrorKind.NOT_FOUND:
                return Outcome(action, ok=True)
            raise
        if node.busy or not node.temporarily_offline:
            if node.temporarily_offline and not was_offline:
                self._back_online(name)
            return Outcome(action, ok=True, removed=False)
        self.jenkins.delete_node(name)
        return Outcome(action, ok=True)


def _subject(action: Action) -> str:
    match action:
        case Provision() | Reap() | Cordon() | CompleteLaunch():
            return action.agent
        case RemoveOrphan():
            return f"{action.kind} {action.name}"
        case _:
            assert_never(action)


def in_flight_of(actions: Iterable[Action]) -> InFlight:
    """The planner's view of actions still being performed."""
    provisions: list[Provision] = []
    reaping: set[str] = set()
    cordoning: set[str] = set()
    completing: set[str] = set()
    orphans: set[str] = set()
    for action in actions:
        match action:
            case Provision():
                provisions.append(action)
            case Reap():
                reaping.add(action.agent)
            case Cordon():
                cordoning.add(action.agent)
            case CompleteLaunch():
                completing.add(action.agent)
            case RemoveOrphan():
                orphans.add(orphan_key(action.kind, action.host, action.name))
            case _:
                assert_never(action)
    return InFlight(
        tuple(provisions), frozenset(reaping), frozenset(cordoning), frozenset(orphans), frozenset(completing)
    )
