"""The executor: performs the planner's actions against Jenkins and the agent backends.

Each action is all-or-nothing as far as it can be: a provision that fails at any step
undoes the steps before it, so a failed launch leaves no node, volume or agent behind.
A reap takes the node offline and re-reads its executors before removing anything, so a
build that was assigned in the meantime is never killed. Nothing here raises: any
exception, expected or not, is caught per action and goes through the action's undo path.

Actions run in the background (:meth:`Executor.submit`), on lanes of worker threads
(the bookkeeping is :mod:`agentpool.lanes`):
one lane per backend host for launches, bounded by its ``max_parallel_launches``, and one
lane for everything else (reaps, cordons, orphan removals), so a container that is slow to
stop never delays a launch. The engine collects finished outcomes and what is still in
flight at the start of each pass (:meth:`Executor.collect`, one lock); an action already in
flight for the same agent or resource is refused, never performed twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, assert_never

from agentpool.agentspec import agent_labels, agent_spec
from agentpool.backend import Backend, JenkinsPort
from agentpool.errors import ErrorKind, ExternalError
from agentpool.lanes import REMOVAL_WORKERS, Lanes, LaunchStats, action_key, in_flight_of
from agentpool.leftovers import back_online, offline_and_idle, remove_orphan
from agentpool.logs import forget_secret, register_secret
from agentpool.model import (
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
from agentpool.report import Outcome

if TYPE_CHECKING:
    from agentpool.config import Config

__all__ = [
    "REMOVAL_WORKERS",
    "Executor",
    "LaunchStats",
    "Outcome",
    "action_key",
    "in_flight_of",
    "volume_name",
]

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
        # the lanes call self.perform at run time, as the executor's own threads did
        self._lanes = Lanes(
            lambda action: self.perform(action),
            {h.name: h.max_parallel_launches for h in config.docker_hosts},
        )
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
        return self._lanes.submit(action)

    def collect(self) -> tuple[list[Outcome], InFlight]:
        """The outcomes finished since the last call, in order, and what is still in flight (atomically)."""
        return self._lanes.collect()

    def in_flight(self) -> InFlight:
        """What is still in flight, leaving the finished outcomes to :meth:`collect`."""
        return self._lanes.in_flight()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until nothing is in flight (True) or ``timeout`` seconds passed (False)."""
        return self._lanes.wait(timeout)

    def launch_stats(self) -> dict[str, LaunchStats]:
        return self._lanes.launch_stats()

    def close(self) -> None:
        """Stop the worker threads once their queues are empty (in-flight actions still finish)."""
        self._lanes.close()

    def execute(self, actions: Iterable[Action]) -> list[Outcome]:
        """Perform ``actions`` in the background and wait for them all; their outcomes, in order."""
        return self._lanes.execute(actions)

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
        return agent_labels(self.config.instance, self.boot, pool, agent)

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
            container_id = host.start_agent(
                agent_spec(self.config, pool, agent, volume, secret, self._labels(pool.name, agent))
            )
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
            message = f"agentpool: removing this agent ({action.reason.value})"
            checked = offline_and_idle(self.jenkins, agent, message, _put_back)
            if checked is not None:  # no node: the rest of the agent is removed all the same
                if not checked.idle:
                    return Outcome(action, ok=True, removed=False)
                took_offline = checked.took_offline
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
        back_online(self.jenkins, agent)

    # -- orphans ---------------------------------------------------------------------------

    def remove_orphan(self, action: RemoveOrphan) -> Outcome:
        return remove_orphan(self.jenkins, self.hosts, action, self._orphan_stop)


def _put_back(jenkins: JenkinsPort, agent: str) -> None:
    """A reap's put-back: its failure fails the reap (reported; the next pass decides again)."""
    jenkins.set_temporarily_offline(agent, False)


def _subject(action: Action) -> str:
    match action:
        case Provision() | Reap() | Cordon() | CompleteLaunch():
            return action.agent
        case RemoveOrphan():
            return f"{action.kind} {action.name}"
        case _:
            assert_never(action)
