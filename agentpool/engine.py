"""The engine: observe, plan, execute, remember — one pass, with no scheduling of its own.

One pass reads Jenkins (nodes, then queue: two requests) and every backend (two requests
each for a Docker engine), asks the pure planner what to do, has the executor do it, and
folds the outcomes back into the planner's memory. The engine holds no state file: after a
restart the planner adopts what it finds. When passes run, signals and reloads are the
daemon's business (:mod:`agentpool.daemon`); metrics and sd_notify listen through
:class:`agentpool.report.Hooks`.

Two clocks are injected: ``clock`` (wall time, epoch seconds) for what is compared with
Jenkins' and the backends' timestamps or shown, and ``monotonic`` for durations.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, assert_never

from agentpool import planner
from agentpool.backend import Backend, JenkinsPort
from agentpool.config import Config, DockerHostConfig
from agentpool.errors import ErrorKind, ExternalError, System
from agentpool.executor import Executor
from agentpool.logs import register_secret
from agentpool.model import (
    AgentMemory,
    CompleteLaunch,
    Cordon,
    HostView,
    Memory,
    Node,
    Observed,
    Provision,
    Reap,
    RemoveOrphan,
)
from agentpool.planner.ownership import node_marker
from agentpool.report import Hooks, Outcome, PassReport
from agentpool.state import State, default_state_dir

log = logging.getLogger("agentpool")

Clock = Callable[[], float]
BackendFactory = Callable[[DockerHostConfig], Backend]
JenkinsFactory = Callable[[Config], JenkinsPort]


def decision(event: str, level: int = logging.INFO, /, **fields: object) -> None:
    """One log line per decision: the event as the message, its facts as fields (key=value or JSON)."""
    log.log(level, event, extra={"event": event, **fields})


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
    ) -> None:
        self.hooks = hooks or Hooks()
        self.clock = clock
        self.monotonic = monotonic
        self._backend_factory = backend
        self._jenkins_factory = jenkins
        self.state = State(config.state_dir or default_state_dir(), config.instance)
        self.memory = Memory(daemon_id=self.state.daemon_id(), boot=secrets.token_hex(3))
        for pool in sorted(self.state.draining()):
            self.memory = planner.set_draining(self.memory, pool, True)
        self.last_report: PassReport | None = None
        self.last_success: float | None = None
        self.lock = threading.Lock()
        self._neighbours: frozenset[str] = frozenset()
        # hosts removed from the config on reload, kept until their agents are drained
        self.retired: dict[str, Backend] = {}
        self._configure(config, {})

    def _configure(self, config: Config, agent_secrets: dict[str, str]) -> None:
        self.config = config
        token = config.jenkins.token
        register_secret(token.get_secret_value() if token is not None else "")
        self.jenkins = self._jenkins_factory(config)
        self.hosts = {h.name: self._backend_factory(h) for h in config.docker_hosts}
        self.executor = Executor(config, self.jenkins, {**self.retired, **self.hosts})
        self.executor.agent_secrets = agent_secrets
        self.executor.marker = node_marker(config.instance, self.memory.daemon_id, self.memory.boot)
        self.executor.boot = self.memory.boot

    def reconfigure(self, config: Config) -> None:
        with self.lock:
            if config == self.config:
                return
            old_hosts = self.hosts
            keep = {h.name for h in config.docker_hosts}
            # A removed host's agents are drained, not killed: its backend stays until they are gone.
            for name, host in old_hosts.items():
                if name not in keep and any(a.host == name for a in self.memory.agents.values()):
                    self.retired[name] = host
            self._configure(config, self.executor.agent_secrets)
            for name, host in old_hosts.items():
                if name not in self.retired:
                    host.close()

    def close(self) -> None:
        for host in [*self.hosts.values(), *self.retired.values()]:
            host.close()

    # -- one pass --------------------------------------------------------------------------

    def observe(self, ticks: float | None = None) -> Observed:
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
        for host in [*self.hosts.values(), *self.retired.values()]:
            view = host.observe(self.config.instance)
            if not view.reachable:
                self.hooks.api_error(System.DOCKER, ErrorKind.UNREACHABLE)
            views.append(view)
        return Observed(queue=queue, nodes=nodes, hosts=tuple(views), jenkins_error=error, ticks=ticks)

    def run_pass(self, *, execute: bool = True) -> PassReport:
        with self.lock:
            started, ticks = self.clock(), self.monotonic()
            observed = self.observe(ticks)
            plan, memory = planner.plan(observed, self.config, self.memory, self.clock())
            self._log_new_online(self.memory, memory)
            report = PassReport(started=started, duration=0.0, observed=observed, plan=plan)
            # Without execute (`status` with no daemon running) the memory still adopts what
            # was observed, so the agents can be shown; nothing is done about them.
            self.memory = memory
            if execute:
                report.outcomes = self.executor.execute(plan.actions)
                for outcome in report.outcomes:
                    self._apply(outcome)
            problems = [observed.jenkins_error] + [h.error for h in observed.hosts if not h.reachable]
            report.error = "; ".join(p for p in problems if p)
            report.ok = observed.queue is not None and all(h.reachable for h in observed.hosts)
            report.duration = self.monotonic() - ticks
            if report.ok:
                self.last_success = self.clock()
            self._retire_empty_hosts()
            self._report_neighbours(plan.neighbours)
            self.last_report = report
            self.hooks.pass_done(report, self.memory, self.config)
            return report

    def _retire_empty_hosts(self) -> None:
        """A removed host whose last agent is gone is forgotten (and no longer counted)."""
        for name in list(self.retired):
            if not any(a.host == name for a in self.memory.agents.values()):
                self.retired.pop(name).close()
                self.executor.hosts = {**self.retired, **self.hosts}
                decision("host retired", host=name, detail="removed from the config; its agents are gone")

    def _report_neighbours(self, neighbours: tuple[str, ...]) -> None:
        """Another daemon at our instance on this controller: logged once per daemon id."""
        for other in sorted(set(neighbours) - self._neighbours):
            decision(
                "second daemon",
                logging.WARNING,
                instance=self.config.instance,
                daemon_id=self.memory.daemon_id,
                other=other,
                detail="nodes of another agentpool daemon at this instance; neither removes the "
                "other's, but give each daemon its own `instance`",
            )
        if neighbours or self._neighbours:
            self._neighbours = frozenset(neighbours)

    def _log_new_online(self, before: Memory, after: Memory) -> None:
        for name, agent in after.agents.items():
            previous = before.agents.get(name)
            if agent.online_at is not None and (previous is None or previous.online_at is None):
                waited = agent.online_at - (agent.needed_since or agent.launched_at)
                decision("online", agent=name, pool=agent.pool, host=agent.host, waited=round(waited, 1))
                if previous is not None:
                    self.hooks.agent_online(agent.pool, max(0.0, waited))

    # -- outcomes --------------------------------------------------------------------------

    def _apply(self, outcome: Outcome) -> None:
        action = outcome.action
        now = self.clock()
        if not outcome.ok and outcome.error_system is not None and outcome.error_kind is not None:
            self.hooks.api_error(outcome.error_system, outcome.error_kind)
        match action:
            case Provision():
                self._provisioned(action, outcome, now)
            case Reap():
                self._reaped(action, outcome, now)
            case Cordon():
                where = {"agent": action.agent, "pool": action.pool, "reason": action.reason.value}
                if outcome.ok:
                    decision("cordoned", **where, detail=action.detail)
                else:
                    decision("cordon failed", logging.WARNING, **where, error=outcome.error)
            case CompleteLaunch():
                where = {"agent": action.agent, "pool": action.pool, "host": action.host}
                if outcome.ok:
                    decision("launch completed", **where, reason=action.reason.value, detail=action.detail)
                else:
                    decision("launch completion failed", logging.WARNING, **where, error=outcome.error)
            case RemoveOrphan():
                self._orphan_removed(action, outcome)
            case _:
                assert_never(action)
        self.hooks.outcome(outcome, self.memory, now)

    def _provisioned(self, action: Provision, outcome: Outcome, now: float) -> None:
        where = {"agent": action.agent, "pool": action.pool, "host": action.host}
        if outcome.ok:
            self.memory = planner.record_provisioned(self.memory, action, now, volume=outcome.volume)
            decision("provisioned", **where, reason=action.reason.value, detail=action.detail)
            return
        self.memory = planner.record_launch_failure(self.memory, action.pool, now)
        decision("launch failed", logging.WARNING, **where, error=outcome.error, **_tail(outcome))
        self._log_backoff(action.pool, now)
        self.executor.forget_agent(action.agent)

    def _reaped(self, action: Reap, outcome: Outcome, now: float) -> None:
        where = {"agent": action.agent, "pool": action.pool, "reason": action.reason.value}
        if not outcome.ok:
            decision("reap failed", logging.WARNING, **where, error=outcome.error)
            return
        if not outcome.removed:
            decision("kept", **where, detail="a build arrived while it was being reaped; back online")
            return
        self.memory = planner.record_reaped(self.memory, action.agent)
        decision("reaped", **where, detail=action.detail, **_tail(outcome))
        if action.count_launch_failure:
            self.memory = planner.record_launch_failure(self.memory, action.pool, now)
            self._log_backoff(action.pool, now)
        self.executor.forget_agent(action.agent)

    def _orphan_removed(self, action: RemoveOrphan, outcome: Outcome) -> None:
        where = {"kind": action.kind.value, "resource": action.name, "host": action.host}
        where["reason"] = action.reason.value
        if outcome.ok and not outcome.removed:
            decision("removal undone", **where, detail="it connected or took a build meanwhile")
        elif outcome.ok:
            key = planner.orphan_key(action.kind, action.host, action.name)
            self.memory = planner.record_orphan_removed(self.memory, key)
            decision("removed", **where, detail=action.detail, **_tail(outcome))
        else:
            decision("removal failed", logging.WARNING, **where, error=outcome.error)

    def _log_backoff(self, pool: str, now: float) -> None:
        state = self.memory.pools[pool]
        decision(
            "backoff",
            logging.WARNING,
            pool=pool,
            seconds=round(state.backoff_until - now),
            failures=state.consecutive_failures,
        )

    # -- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The JSON `agentpool status` prints (and the daemon serves on /status)."""
        report = self.last_report
        now = self.clock()
        nodes = {n.name: n for n in (report.observed.nodes or ())} if report else {}
        agents = [
            self._agent_status(agent, nodes.get(name), now)
            for name, agent in sorted(self.memory.agents.items())
        ]
        plan = report.plan if report else None
        return {
            "instance": self.config.instance,
            "last_pass": report.started if report else None,
            "last_success": self.last_success,
            "error": report.error if report else "",
            "agents": agents,
            "demand": dict(plan.demand) if plan else {},
            "unserved": [
                {"item": u.item_id, "task": u.task_name, "label": u.label, "why": u.why}
                | ({"label_inferred": True} if u.inferred else {})
                for u in (plan.unserved if plan else ())
            ],
            "labels_inferred": {str(item): how for item, how in (plan.inferred if plan else {}).items()},
            "daemon_id": self.memory.daemon_id,
            "neighbours": list(plan.neighbours) if plan else [],
            "retired_hosts": sorted(self.retired),
            "pools": {
                name: {
                    "draining": mem.draining,
                    "backoff_until": mem.backoff_until,
                    "consecutive_failures": mem.consecutive_failures,
                }
                for name, mem in self.memory.pools.items()
            },
        }

    def _agent_status(self, agent: AgentMemory, node: Node | None, now: float) -> dict[str, Any]:
        pool_memory = self.memory.pools.get(agent.pool)
        state = planner.agent_state(agent, node, bool(pool_memory and pool_memory.draining))
        return {
            "name": agent.name,
            "pool": agent.pool,
            "host": agent.host,
            "state": state.value,
            "age": round(now - agent.launched_at, 1),
            "idle": round(now - agent.idle_since, 1) if agent.idle_since is not None else None,
        }

    def set_draining(self, pool: str | None, draining: bool) -> list[str]:
        names = [p.name for p in self.config.pools if pool is None or p.name == pool]
        if not names:
            raise LookupError(f"no pool named {pool!r}")
        with self.lock:
            for name in names:
                self.memory = planner.set_draining(self.memory, name, draining)
            self.state.save_draining({name for name, p in self.memory.pools.items() if p.draining})
        return names

    def agents_of(self, pools: list[str]) -> int:
        return sum(1 for a in self.memory.agents.values() if a.pool in pools)


def _tail(outcome: Outcome) -> dict[str, str]:
    return {"log_tail": outcome.log_tail} if outcome.log_tail else {}
