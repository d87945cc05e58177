"""The engine: observe, plan, execute, remember — one pass, with no scheduling of its own.

One pass folds the outcomes of actions finished since the last pass into the planner's
memory, reads Jenkins (nodes, then queue: two requests) and every backend (two requests
each for a Docker engine), asks the pure planner what to do — telling it what is still in
flight — and hands the actions to the executor, which performs them in the background.
The daemon's passes do not wait for them (``wait=False``); ``once``, ``drain`` and tests do. The engine holds no state file: after a
restart the planner adopts what it finds. When passes run, signals and reloads are the
daemon's business (:mod:`agentpool.daemon`); metrics and sd_notify listen through
:class:`agentpool.report.Hooks`. What each finished action means for the memory is
:mod:`agentpool.outcomes`; the ``status`` document is :mod:`agentpool.status`.

Two clocks are injected: ``clock`` (wall time, epoch seconds) for what is compared with
Jenkins' and the backends' timestamps or shown, and ``monotonic`` for durations.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from agentpool import outcomes, planner
from agentpool.backend import Backend, JenkinsPort
from agentpool.config import Config, DockerHostConfig
from agentpool.errors import ErrorKind, ExternalError, System
from agentpool.executor import Executor
from agentpool.gcpause import collector_paused
from agentpool.hostimages import ImageKeeper
from agentpool.logs import register_secret
from agentpool.model import (
    NOTHING_IN_FLIGHT,
    HostView,
    InFlight,
    Memory,
    Node,
    Observed,
)
from agentpool.outcomes import decision as decision  # the daemon logs its decisions through it
from agentpool.planner.ownership import node_marker
from agentpool.report import Hooks, Outcome, PassReport
from agentpool.state import State, default_state_dir
from agentpool.status import status as status_document

log = logging.getLogger("agentpool")

# Seconds a stop or reload waits for in-flight actions beyond the longest container stop
# and one Jenkins call (a launch is a few calls of each).
DRAIN_MARGIN = 20.0

Clock = Callable[[], float]
BackendFactory = Callable[[DockerHostConfig], Backend]
JenkinsFactory = Callable[[Config], JenkinsPort]


def docker_backend(host: DockerHostConfig) -> Backend:
    from agentpool.adapters.docker import DockerHost

    return DockerHost.from_config(host)


def jenkins_adapter(config: Config) -> JenkinsPort:
    from agentpool.adapters.jenkins import JenkinsAdapter

    jenkins = config.jenkins
    token = jenkins.token.get_secret_value() if jenkins.token is not None else ""
    return JenkinsAdapter(jenkins.url, jenkins.user, token, timeout=jenkins.timeout)


class Engine:
    """Config, adapters, memory and one pass; the scheduler and signals live in the daemon."""

    def __init__(
        self,
        config: Config,
        hooks: Hooks | None = None,
        clock: Clock = time.time,
        *,
        monotonic: Clock = time.monotonic,
        backend: BackendFactory = docker_backend,
        jenkins: JenkinsFactory = jenkins_adapter,
        images: ImageKeeper | None = None,
    ) -> None:
        self.hooks = hooks or Hooks()
        self.clock = clock
        self.monotonic = monotonic
        self._backend_factory = backend
        self._jenkins_factory = jenkins
        self.state = State(config.state_dir or default_state_dir(), config.instance)
        self.memory = Memory(daemon_id=self.state.daemon_id(), boot=secrets.token_hex(3))
        drained = self.state.drained()
        for pool in sorted(drained.pools):
            self.memory = planner.set_draining(self.memory, pool, True)
        for host in sorted(drained.hosts):
            self.memory = planner.set_host_draining(self.memory, host, True)
        self.last_report: PassReport | None = None
        self.last_success: float | None = None
        self.lock = threading.Lock()
        self.images = images or ImageKeeper()
        self._neighbours: frozenset[str] = frozenset()
        self._configure(config, {})

    def _configure(
        self, config: Config, agent_secrets: dict[str, str], retired: dict[str, Backend] | None = None
    ) -> None:
        self.config = config
        token = config.jenkins.token
        register_secret(token.get_secret_value() if token is not None else "")
        self.jenkins = self._jenkins_factory(config)
        # hosts gone from the config stay reachable while agents run there: they are drained
        self.hosts = {**(retired or {}), **{h.name: self._backend_factory(h) for h in config.docker_hosts}}
        self.executor = Executor(config, self.jenkins, self.hosts)
        self.executor.agent_secrets = agent_secrets
        self.executor.marker = node_marker(config.instance, self.memory.daemon_id, self.memory.boot)
        self.executor.boot = self.memory.boot

    def reconfigure(self, config: Config) -> None:
        with self.lock:
            if config == self.config:
                return
            # The old executor's actions use the old adapters: they finish (bounded) first.
            if not self.executor.wait(self.drain_timeout()):
                log.warning(
                    "reload: actions still in flight after %.0fs; their outcomes are lost",
                    self.drain_timeout(),
                )
            self._collect()
            self.executor.close()
            old_hosts = self.hosts
            used = {a.host for a in self.memory.agents.values()}
            retired = {n: b for n, b in old_hosts.items() if config.host(n) is None and n in used}
            self._configure(config, self.executor.agent_secrets, retired)
            for name, host in old_hosts.items():
                if name not in retired:
                    host.close()

    @property
    def retired(self) -> dict[str, Backend]:
        """Hosts removed from the config, kept while our agents there are drained."""
        return {n: b for n, b in self.hosts.items() if self.config.host(n) is None}

    def _drop_retired(self) -> None:
        """Close hosts gone from the config once none of our agents is left there."""
        used = {a.host for a in self.memory.agents.values()}
        for name in [n for n in self.hosts if self.config.host(n) is None and n not in used]:
            self.hosts.pop(name).close()
            decision("host retired", host=name, detail="removed from the config; its agents are gone")

    def drain_timeout(self) -> float:
        """How long a stop or reload waits for actions in flight: the longest stop, launch or call."""
        stops = max((p.stop_timeout for p in self.config.pools), default=10.0)
        return stops + self.config.jenkins.timeout + DRAIN_MARGIN

    def finish(self, timeout: float | None = None) -> bool:
        """Wait for the actions in flight (bounded) and fold their outcomes in; False when some remain."""
        done = self.executor.wait(self.drain_timeout() if timeout is None else timeout)
        with self.lock:
            self._collect()
        return done

    def close(self) -> None:
        self.executor.close()
        for host in self.hosts.values():
            host.close()

    # -- one pass --------------------------------------------------------------------------

    def observe(self, in_flight: InFlight = NOTHING_IN_FLIGHT, ticks: float | None = None) -> Observed:
        nodes: tuple[Node, ...] | None = None
        queue = None
        error = ""
        try:
            nodes = self.jenkins.read_nodes()
            queue = self.jenkins.read_queue(nodes)
        except ExternalError as exc:
            error = str(exc)
            self.hooks.api_error(exc.system, exc.kind)
            nodes, queue = None, None
        views: list[HostView] = []
        for host in self.hosts.values():
            view = host.observe(self.config.instance)
            if not view.reachable:
                self.hooks.api_error(System.DOCKER, ErrorKind.UNREACHABLE)
            views.append(view)
        views = self.images.annotate(self.config, self.hosts, views)
        return Observed(
            queue=queue,
            nodes=nodes,
            hosts=tuple(views),
            jenkins_error=error,
            in_flight=in_flight,
            ticks=ticks,
        )

    def run_pass(self, *, execute: bool = True, wait: bool = True) -> PassReport:
        """One pass; with ``wait`` it also waits for its actions and folds their outcomes in.

        ``report.outcomes`` holds the outcomes folded in during this pass: those of earlier
        passes' actions that finished since, and with ``wait`` those of this pass.
        """
        with self.lock:
            started, ticks = self.clock(), self.monotonic()
            # Outcomes first, then what is in flight, then the observation: an action that
            # finishes while we observe is still in flight for this pass' decisions.
            finished, in_flight = self._collect()
            with collector_paused():
                observed = self.observe(in_flight, ticks)
                plan, memory = planner.plan(observed, self.config, self.memory, self.clock())
            if execute:  # `status` without a daemon adopts nothing, and nothing came online
                outcomes.log_new_online(self.memory, memory, self.hooks)
            report = PassReport(started=started, duration=0.0, observed=observed, plan=plan)
            # Without execute (`status` with no daemon running) the memory still adopts what
            # was observed, so the agents can be shown; nothing is done about them.
            self.memory = memory
            if execute:
                for action in plan.actions:
                    self.executor.submit(action)
                if wait:
                    self.executor.wait()
                    finished += self._collect()[0]
            report.outcomes = finished
            report.launch_high_water = {h: st.high_water for h, st in self.executor.launch_stats().items()}
            problems = [observed.jenkins_error] + [h.error for h in observed.hosts if not h.reachable]
            report.error = "; ".join(p for p in problems if p)
            report.ok = observed.queue is not None and all(h.reachable for h in observed.hosts)
            report.duration = self.monotonic() - ticks
            if report.ok:
                self.last_success = self.clock()
            self._neighbours = outcomes.report_neighbours(
                self._neighbours, plan.neighbours, self.config.instance, self.memory.daemon_id
            )
            self.last_report = report
            self._drop_retired()
            self.hooks.pass_done(report, self.memory, self.config)
            return report

    def _collect(self) -> tuple[list[Outcome], InFlight]:
        """Fold the finished outcomes into memory; what is still in flight."""
        finished, in_flight = self.executor.collect()
        for outcome in finished:
            self._apply(outcome)
        return finished, in_flight

    # -- outcomes --------------------------------------------------------------------------

    def _apply(self, outcome: Outcome) -> None:
        self.memory = outcomes.fold(
            self.memory,
            outcome,
            self.clock(),
            config=self.config,
            hooks=self.hooks,
            images=self.images,
            forget=self.executor.forget_agent,
        )

    # -- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The JSON `agentpool status` prints (and the daemon serves on /status)."""
        return status_document(
            self.config,
            self.memory,
            self.last_report,
            self.last_success,
            self.retired,
            self.images.states(),
            self.clock(),
        )

    def set_draining(self, pool: str | None, draining: bool) -> list[str]:
        names = [p.name for p in self.config.pools if pool is None or p.name == pool]
        if not names:
            raise LookupError(f"no pool named {pool!r}")
        with self.lock:
            for name in names:
                self.memory = planner.set_draining(self.memory, name, draining)
            self._save_drain_state()
        return names

    def _save_drain_state(self) -> None:
        self.state.save_draining(
            {name for name, p in self.memory.pools.items() if p.draining},
            {name for name, h in self.memory.hosts.items() if h.draining},
        )

    def set_host_draining(self, host: str, draining: bool) -> list[str]:
        if self.config.host(host) is None:
            raise LookupError(f"no docker host named {host!r}")
        with self.lock:
            self.memory = planner.set_host_draining(self.memory, host, draining)
            self._save_drain_state()
        return [host]

    def agents_on(self, host: str) -> int:
        return sum(1 for a in self.memory.agents.values() if a.host == host)

    def agents_of(self, pools: list[str]) -> int:
        return sum(1 for a in self.memory.agents.values() if a.pool in pools)
