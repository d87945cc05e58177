"""The service layer around the engine: metrics, sd_notify and the HTTP endpoints.

It listens to the engine through :class:`agentpool.daemon.Hooks`, so the engine knows
nothing of Prometheus or systemd, and it turns the endpoints' requests (drain, resume,
status, health) into calls on the running daemon.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import TYPE_CHECKING

from pydantic import SecretStr

from agentpool import planner
from agentpool.daemon import Hooks, PassReport
from agentpool.executor import Outcome
from agentpool.model import Memory, Provision, Reap
from agentpool.service.http import ServiceHTTP, health_verdict
from agentpool.service.metrics import Metrics
from agentpool.service.notify import Notifier

if TYPE_CHECKING:
    from agentpool.config import Config
    from agentpool.daemon import Daemon

log = logging.getLogger("agentpool.service")


class ServiceLayer(Hooks):
    def __init__(self, config: Config, notifier: Notifier | None = None) -> None:
        self.config = config
        self.metrics = Metrics(p.name for p in config.pools)
        self.notifier = notifier or Notifier()
        self.http: ServiceHTTP | None = None
        self.daemon: Daemon | None = None
        self._ready = False
        self._stopping = False  # after STOPPING=1, the pass being finished notifies nothing more

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, daemon: Daemon) -> None:
        self.daemon = daemon
        if self.config.metrics.listen:
            self.http = ServiceHTTP(
                self.config.metrics.listen,
                self.metrics,
                health=self.health,
                status=lambda: daemon.engine.status(),
                drain=lambda pool: {"pools": daemon.engine.set_draining(pool, True)},
                resume=lambda pool: {"pools": daemon.engine.set_draining(pool, False)},
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

    def health(self) -> tuple[bool, str]:
        engine = self.daemon.engine if self.daemon else None
        if engine is None:
            return False, "not started"
        report = engine.last_report
        return health_verdict(
            engine.last_success, time.time(), self.config.poll_interval, report.error if report else ""
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
        if report.ok:
            m.pass_succeeded(time.time())
        if self._stopping:
            return
        if report.ok and not self._ready:
            self._ready = True
            self.notifier.ready()
        self.notifier.watchdog()
        self.notifier.status(summary(states, sum(report.plan.demand.values()), report))

    def api_error(self, system: str, kind: str) -> None:
        self.metrics.api_error(system, kind)

    def outcome(self, outcome: Outcome, memory: Memory, now: float) -> None:
        action = outcome.action
        if isinstance(action, Provision):
            if outcome.ok:
                self.metrics.provisioned(action.pool)
            else:
                self.metrics.launch_failed(action.pool)
        elif isinstance(action, Reap) and outcome.ok and outcome.removed:
            self.metrics.reaped(action.pool, action.reason.value)
            if action.count_launch_failure:
                self.metrics.launch_failed(action.pool)

    def agent_online(self, pool: str, waited: float) -> None:
        self.metrics.observe_online(pool, waited)


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
