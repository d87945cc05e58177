"""The service layer around the engine: metrics, sd_notify and the HTTP endpoints.

It listens to the engine through :class:`agentpool.report.Hooks`, so the engine knows
nothing of Prometheus or systemd, and it turns the endpoints' requests (drain, resume,
status, health) into calls on the running engine, which it knows only through
:class:`agentpool.report.EngineControl` (never the engine or daemon modules).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, assert_never

from pydantic import SecretStr

from agentpool import planner
from agentpool.errors import ErrorKind, System
from agentpool.model import CompleteLaunch, Cordon, Memory, Provision, Reap, RemoveOrphan
from agentpool.report import EngineControl, Hooks, Outcome, PassReport
from agentpool.service.http import ServiceHTTP, health_verdict
from agentpool.service.metrics import Metrics
from agentpool.service.notify import Notifier
from agentpool.service.overview import overview, pool_gauges, unserved_counts
from agentpool.service.recent import Recent

if TYPE_CHECKING:
    from agentpool.config import Config

log = logging.getLogger("agentpool.service")


class ServiceLayer(Hooks):
    def __init__(
        self, config: Config, notifier: Notifier | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.clock = clock  # wall clock: compared with the engine's last_success timestamp
        self.metrics = Metrics(p.name for p in config.pools)
        self.notifier = notifier or Notifier()
        self.recent = Recent(phase=self.metrics.observe_phase)
        self.http: ServiceHTTP | None = None
        self.engine: EngineControl | None = None
        self._ready = False
        self._stopping = False  # after STOPPING=1, the pass being finished notifies nothing more

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, engine: EngineControl) -> None:
        self.engine = engine
        if self.config.metrics.listen:
            self.http = ServiceHTTP(
                self.config.metrics.listen,
                self.metrics,
                health=self.health,
                status=self.status,
                drain=lambda pool: {"pools": engine.set_draining(pool, True)},
                resume=lambda pool: {"pools": engine.set_draining(pool, False)},
                allowed_hosts=self.config.metrics.allowed_hosts,
                admin_token=_secret(self.config.metrics.admin_token),
            )
            self.http.start()

    def reconfigured(self, config: Config) -> None:
        self.config = config
        self.metrics.declare_pools(p.name for p in config.pools)
        self.notifier.status("config reloaded")

    def stopping(self) -> None:
        self._stopping = True
        self.notifier.stopping()

    def stop(self) -> None:
        if self.http is not None:
            self.http.stop()
            self.http = None

    def status(self) -> dict[str, Any]:
        """What ``/status``, the page at ``/`` and ``agentpool status`` show."""
        if self.engine is None:
            raise RuntimeError("the service layer is not started")
        return overview(self.engine, self.recent)

    def health(self) -> tuple[bool, str]:
        engine = self.engine
        if engine is None:
            return False, "not started"
        report = engine.last_report
        return health_verdict(
            engine.last_success, self.clock(), self.config.poll_interval, report.error if report else ""
        )

    # -- hooks -----------------------------------------------------------------------------

    def pass_done(self, report: PassReport, memory: Memory, config: Config) -> None:
        m = self.metrics
        m.observe_pass(report.duration)
        nodes = {n.name: n for n in (report.observed.nodes or ())}
        states: Counter[tuple[str, str]] = Counter()
        for agent in memory.agents.values():
            pool_memory = memory.pools.get(agent.pool)
            draining = bool(pool_memory and pool_memory.draining)
            states[(agent.pool, planner.agent_state(agent, nodes.get(agent.name), draining).value)] += 1
        m.set_agents(states)
        m.set_waiting(report.plan.demand)
        now = self.clock()
        m.set_unserved(unserved_counts(report.plan, config))
        m.set_pools(pool_gauges(memory, config, now))
        self.recent.pass_seen(memory.agents, report.observed.nodes or (), now)
        self.recent.pass_error(report.error, now)
        if report.ok:
            m.pass_succeeded(self.clock())
        if self._stopping:
            return
        if report.ok and not self._ready:
            self._ready = True
            self.notifier.ready()
        self.notifier.watchdog()
        self.notifier.status(summary(states, sum(report.plan.demand.values()), report))

    def api_error(self, system: System, kind: ErrorKind) -> None:
        self.metrics.api_error(system, kind)

    def outcome(self, outcome: Outcome, memory: Memory, now: float) -> None:
        action = outcome.action
        self.recent.outcome(action, outcome.ok, outcome.removed, outcome.error, memory, now)
        match action:
            case Provision():
                if outcome.ok:
                    self.metrics.provisioned(action.pool)
                else:
                    self.metrics.launch_failed(action.pool)
            case Reap():
                if outcome.ok and outcome.removed:
                    self.metrics.reaped(action.pool, action.reason.value)
                    if action.count_launch_failure:
                        self.metrics.launch_failed(action.pool)
            case Cordon() | CompleteLaunch() | RemoveOrphan():
                pass
            case _:
                assert_never(action)

    def agent_online(self, pool: str, waited: float) -> None:
        self.metrics.observe_online(pool, waited)
        self.recent.online(pool, waited, time.time())


def summary(states: Counter[tuple[str, str]], waiting: int, report: PassReport) -> str:
    by_state: dict[str, int] = {}
    for (_, state), count in states.items():
        by_state[state] = by_state.get(state, 0) + count
    text = (
        f"agents busy={by_state.get('busy', 0)} idle={by_state.get('online-idle', 0)} "
        f"starting={by_state.get('starting', 0)} draining={by_state.get('draining', 0)}; waiting items={waiting}"
    )
    if not report.ok:
        text += f"; degraded: {report.error[:120]}"
    return text


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()
