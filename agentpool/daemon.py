"""The daemon: observe, plan, execute, remember — once per ``poll_interval``.

One pass reads Jenkins (nodes, then queue: two requests) and every Docker host (two
requests each), asks the pure planner what to do, has the executor do it, and folds the
outcomes back into the planner's memory. Passes never overlap (APScheduler job with one
instance, missed runs coalesced). The daemon holds no state file: after a restart the
planner adopts what it finds. SIGTERM finishes the current pass and exits, leaving agents
running; SIGHUP reloads the config, keeping the old one when the new one is invalid.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentpool import planner
from agentpool.adapters.docker import DockerHost
from agentpool.adapters.jenkins import JenkinsAdapter
from agentpool.config import Config, ConfigError, load_config
from agentpool.errors import ExternalError
from agentpool.executor import Executor, Outcome
from agentpool.logs import register_secret
from agentpool.model import (
    Cordon,
    HostView,
    Memory,
    Node,
    Observed,
    Plan,
    Provision,
    Reap,
    RemoveOrphan,
)

if TYPE_CHECKING:
    from agentpool.service.layer import ServiceLayer

log = logging.getLogger("agentpool")


def decision(event: str, level: int = logging.INFO, /, **fields: object) -> None:
    """One log line per decision: the event as the message, its facts as fields (key=value or JSON)."""
    log.log(level, event, extra={"event": event, **fields})


@dataclass
class PassReport:
    """What one pass saw and did; kept for `status`, health and metrics."""

    started: float
    duration: float
    observed: Observed
    plan: Plan
    outcomes: list[Outcome] = field(default_factory=list)
    ok: bool = True
    error: str = ""


class Hooks:
    """Where the service layer (metrics, sd_notify) listens; every method may be left as is."""

    def pass_done(self, report: PassReport, memory: Memory, config: Config) -> None:
        """Called after every pass."""

    def api_error(self, system: str, kind: str) -> None:
        """Called for every failed call to Jenkins or Docker."""

    def outcome(self, outcome: Outcome, memory: Memory, now: float) -> None:
        """Called for every performed action."""

    def agent_online(self, pool: str, waited: float) -> None:
        """Called when an agent connects for the first time: seconds since it was needed."""


class Engine:
    """Config, adapters, memory and one pass; the scheduler and signals live in :class:`Daemon`."""

    def __init__(self, config: Config, hooks: Hooks | None = None, clock: Callable[[], float] = time.time):
        self.hooks = hooks or Hooks()
        self.clock = clock
        self.memory = Memory()
        self.last_report: PassReport | None = None
        self.last_success: float | None = None
        self.lock = threading.Lock()
        self._configure(config)

    def _configure(self, config: Config) -> None:
        self.config = config
        jenkins = config.jenkins
        token = jenkins.token.get_secret_value() if jenkins.token is not None else ""
        register_secret(token)
        self.jenkins = JenkinsAdapter(jenkins.url, jenkins.user, token, timeout=jenkins.timeout)
        self.hosts = {h.name: DockerHost.from_config(h) for h in config.docker_hosts}
        previous = getattr(self, "executor", None)
        self.executor = Executor(config, self.jenkins, self.hosts)
        if previous is not None:
            self.executor.agent_secrets = previous.agent_secrets

    def reconfigure(self, config: Config) -> None:
        with self.lock:
            if config == self.config:
                return
            old_hosts = self.hosts
            self._configure(config)
            for host in old_hosts.values():
                host.close()

    def close(self) -> None:
        for host in self.hosts.values():
            host.close()

    # -- one pass --------------------------------------------------------------------------

    def observe(self) -> Observed:
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
                self.hooks.api_error("docker", "unreachable")
            views.append(view)
        return Observed(queue=queue, nodes=nodes, hosts=tuple(views), jenkins_error=error)

    def run_pass(self, *, execute: bool = True) -> PassReport:
        with self.lock:
            started = self.clock()
            observed = self.observe()
            now = self.clock()
            plan, memory = planner.plan(observed, self.config, self.memory, now)
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
            report.duration = self.clock() - started
            if report.ok:
                self.last_success = self.clock()
            self.last_report = report
            self.hooks.pass_done(report, self.memory, self.config)
            return report

    def _log_new_online(self, before: Memory, after: Memory) -> None:
        for name, agent in after.agents.items():
            previous = before.agents.get(name)
            if agent.online_at is not None and (previous is None or previous.online_at is None):
                waited = agent.online_at - (agent.needed_since or agent.launched_at)
                decision("online", agent=name, pool=agent.pool, host=agent.host, waited=round(waited, 1))
                if previous is not None:
                    self.hooks.agent_online(agent.pool, max(0.0, waited))

    def _apply(self, outcome: Outcome) -> None:
        action = outcome.action
        now = self.clock()
        if not outcome.ok:
            self.hooks.api_error(outcome.error_system or "docker", outcome.error_kind or "error")
        tail = {"log_tail": outcome.log_tail} if outcome.log_tail else {}
        if isinstance(action, Provision):
            where = {"agent": action.agent, "pool": action.pool, "host": action.host}
            if outcome.ok:
                self.memory = planner.record_provisioned(self.memory, action, now, volume=outcome.volume)
                decision("provisioned", **where, reason=action.reason.value, detail=action.detail)
            else:
                self.memory = planner.record_launch_failure(self.memory, action.pool, now)
                backoff = round(self.memory.pools[action.pool].backoff_until - now)
                decision("launch failed", logging.WARNING, **where, error=outcome.error, **tail)
                decision(
                    "backoff",
                    logging.WARNING,
                    pool=action.pool,
                    seconds=backoff,
                    failures=self.memory.pools[action.pool].consecutive_failures,
                )
        elif isinstance(action, Reap):
            where = {"agent": action.agent, "pool": action.pool, "reason": action.reason.value}
            if not outcome.ok:
                decision("reap failed", logging.WARNING, **where, error=outcome.error)
            elif not outcome.removed:
                decision("kept", **where, detail="a build arrived while it was being reaped; back online")
            else:
                self.memory = planner.record_reaped(self.memory, action.agent)
                decision("reaped", **where, detail=action.detail, **tail)
                if action.count_launch_failure:
                    self.memory = planner.record_launch_failure(self.memory, action.pool, now)
                    decision(
                        "backoff",
                        logging.WARNING,
                        pool=action.pool,
                        seconds=round(self.memory.pools[action.pool].backoff_until - now),
                        failures=self.memory.pools[action.pool].consecutive_failures,
                    )
        elif isinstance(action, Cordon):
            where = {"agent": action.agent, "pool": action.pool, "reason": action.reason.value}
            if outcome.ok:
                decision("cordoned", **where, detail=action.detail)
            else:
                decision("cordon failed", logging.WARNING, **where, error=outcome.error)
        elif isinstance(action, RemoveOrphan):
            where = {
                "kind": action.kind,
                "resource": action.name,
                "host": action.host,
                "reason": action.reason.value,
            }
            if outcome.ok:
                self.memory = planner.record_orphan_removed(
                    self.memory, planner.orphan_key(action.kind, action.host, action.name)
                )
                decision("removed", **where, detail=action.detail, **tail)
            else:
                decision("removal failed", logging.WARNING, **where, error=outcome.error)
        if (isinstance(action, Provision) and not outcome.ok) or (
            isinstance(action, Reap) and outcome.ok and outcome.removed
        ):
            self.executor.forget_agent(action.agent)
        self.hooks.outcome(outcome, self.memory, now)

    # -- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The JSON `agentpool status` prints (and the daemon serves on /status)."""
        report = self.last_report
        now = self.clock()
        nodes = {n.name: n for n in (report.observed.nodes or ())} if report else {}
        agents = []
        for name, agent in sorted(self.memory.agents.items()):
            node = nodes.get(name)
            pool_memory = self.memory.pools.get(agent.pool)
            state = planner.agent_state(agent, node, bool(pool_memory and pool_memory.draining))
            agents.append(
                {
                    "name": name,
                    "pool": agent.pool,
                    "host": agent.host,
                    "state": state.value,
                    "age": round(now - agent.launched_at, 1),
                    "idle": round(now - agent.idle_since, 1) if agent.idle_since is not None else None,
                }
            )
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
                for u in (plan.unserved if plan else ())
            ],
            "pools": {
                name: {
                    "draining": mem.draining,
                    "backoff_until": mem.backoff_until,
                    "consecutive_failures": mem.consecutive_failures,
                }
                for name, mem in self.memory.pools.items()
            },
        }

    def set_draining(self, pool: str | None, draining: bool) -> list[str]:
        names = [p.name for p in self.config.pools if pool is None or p.name == pool]
        if not names:
            raise LookupError(f"no pool named {pool!r}")
        with self.lock:
            for name in names:
                self.memory = planner.set_draining(self.memory, name, draining)
        return names

    def agents_of(self, pools: list[str]) -> int:
        return sum(1 for a in self.memory.agents.values() if a.pool in pools)


class Daemon:
    """The long-running process: scheduler, signals, reload, and the service hooks."""

    MAX_BACKOFF = 60.0

    def __init__(self, config_path: str, engine: Engine, service: ServiceLayer | None = None) -> None:
        self.config_path = config_path
        self.engine = engine
        self.service = service
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._failures = 0
        self._skip_until = 0.0
        self._scheduler: Any = None

    # -- scheduling ------------------------------------------------------------------------

    def _tick(self) -> None:
        now = time.time()
        if now < self._skip_until:
            return
        try:
            report = self.engine.run_pass()
        except Exception:  # a bug must not stop the loop; the traceback goes to the log
            log.exception("pass failed unexpectedly")
            report = None
        # Only an unreadable Jenkins (or a bug) slows the loop down: with one engine down the
        # planner still serves through the others, and nothing about that engine is decided.
        if report is not None and report.observed.queue is not None:
            self._failures = 0
            self._skip_until = 0.0
            if not report.ok:
                decision("pass incomplete", logging.WARNING, error=report.error, next_in=0)
        else:
            self._failures += 1
            # The exponent is capped: 2 ** 1024 overflows a float after ~17 h of outage.
            doublings = min(self._failures - 1, 16)
            delay = min(self.engine.config.poll_interval * 2**doublings, self.MAX_BACKOFF)
            self._skip_until = time.time() + delay
            decision(
                "pass incomplete",
                logging.WARNING,
                failures=self._failures,
                next_in=round(delay),
                error=report.error if report else "unexpected error (traceback above)",
            )

    def _schedule(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        # Its INFO lines ("Running job …") would double every pass in the log.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)

        self._scheduler = BackgroundScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
        )
        self._scheduler.add_job(
            self._tick,
            "interval",
            seconds=self.engine.config.poll_interval,
            id="pass",
            next_run_time=_now_local(),
        )
        self._scheduler.start()

    # -- signals ---------------------------------------------------------------------------

    def request_stop(self, *_: object) -> None:
        self._stop.set()

    def request_reload(self, *_: object) -> None:
        self._reload.set()

    def reload(self) -> bool:
        """Load the config file again; keep the running config when the new one is invalid."""
        try:
            config = load_config(self.config_path)
        except ConfigError as exc:
            decision(
                "reload refused",
                logging.ERROR,
                path=self.config_path,
                detail="keeping the running config",
                error=str(exc),
            )
            return False
        old_interval = self.engine.config.poll_interval
        self.engine.reconfigure(config)
        if self.service is not None:
            self.service.reconfigured(config)
        if self._scheduler is not None and config.poll_interval != old_interval:
            self._scheduler.reschedule_job("pass", trigger="interval", seconds=config.poll_interval)
        decision("config reloaded", path=self.config_path)
        return True

    def run(self) -> int:
        import signal

        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)
        if self.service is not None:
            self.service.start(self)
        self._schedule()
        decision("started", instance=self.engine.config.instance, path=self.config_path)
        try:
            while not self._stop.is_set():
                self._stop.wait(0.2)
                if self._reload.is_set():
                    self._reload.clear()
                    self.reload()
        finally:
            decision("stopping", detail="finishing the current pass; agents keep running")
            self._scheduler.shutdown(wait=True)
            if self.service is not None:
                self.service.stopping()
            if self.service is not None:
                self.service.stop()
            self.engine.close()
        return 0


def _now_local() -> Any:
    from datetime import datetime

    return datetime.now().astimezone()
