"""The daemon: runs the engine's pass once per ``poll_interval``, handles signals and reload.

Passes never overlap (APScheduler job with one instance, missed runs coalesced, its own
log lines about skipped ticks silenced) and never wait for the actions they issue: those
run in the background and the next pass sees them in flight. A pass longer than
``poll_interval`` is counted and warned about at most once a minute. An unreadable Jenkins
(or a bug) backs the loop off, bounded. SIGTERM finishes the current pass, waits (bounded)
for the actions in flight and exits 0, leaving agents running; SIGHUP reloads the config,
keeping the old one when the new one is invalid. What a pass does is the engine's business
(:mod:`agentpool.engine`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

from agentpool.config import Config, ConfigError, load_config
from agentpool.engine import Clock, Engine, decision
from agentpool.report import EngineControl

__all__ = ["Daemon", "Engine", "Service"]

log = logging.getLogger("agentpool")


class Service(Protocol):
    """The service layer as the daemon drives it (:class:`agentpool.service.layer.ServiceLayer`)."""

    def start(self, engine: EngineControl) -> None: ...

    def reconfigured(self, config: Config) -> None: ...

    def stopping(self) -> None: ...

    def stop(self) -> None: ...


class Daemon:
    """The long-running process: scheduler, signals, reload, and the service hooks."""

    MAX_BACKOFF = 60.0
    OVERRUN_WARNING_EVERY = 60.0

    def __init__(
        self,
        config_path: str,
        engine: Engine,
        service: Service | None = None,
        clock: Clock = time.time,
        *,
        monotonic: Clock = time.monotonic,
    ) -> None:
        self.config_path = config_path
        self.clock = clock
        self.monotonic = monotonic
        self._overruns = 0  # since the last warning
        self._overrun_warned: float | None = None
        self.unfinished = 0  # actions still in flight when the daemon exited
        self.engine = engine
        self.service = service
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._failures = 0
        self._skip_until = 0.0
        self._scheduler: Any = None

    # -- scheduling ------------------------------------------------------------------------

    def _tick(self) -> None:
        now = self.clock()
        if now < self._skip_until:
            return
        try:
            report = self.engine.run_pass(wait=False)
        except Exception:  # a bug must not stop the loop; the traceback goes to the log
            log.exception("pass failed unexpectedly")
            report = None
        if report is not None:
            self._check_overrun(report.duration)
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
            self._skip_until = self.clock() + delay
            decision(
                "pass incomplete",
                logging.WARNING,
                failures=self._failures,
                next_in=round(delay),
                error=report.error if report else "unexpected error (traceback above)",
            )

    def _check_overrun(self, duration: float) -> None:
        interval = self.engine.config.poll_interval
        if duration <= interval:
            return
        self.engine.hooks.pass_overrun(duration)
        self._overruns += 1
        now = self.monotonic()
        if self._overrun_warned is not None and now - self._overrun_warned < self.OVERRUN_WARNING_EVERY:
            return
        decision(
            "pass overran",
            logging.WARNING,
            seconds=round(duration, 1),
            poll_interval=interval,
            passes=self._overruns,
            detail="ticks were skipped meanwhile; at most one such line a minute",
        )
        self._overruns = 0
        self._overrun_warned = now

    def _schedule(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        # Its INFO lines ("Running job …") would double every pass in the log, and its
        # WARNING per skipped tick ("maximum number of running instances reached") repeat
        # every second of a long pass: overruns are counted and warned about in _tick.
        logging.getLogger("apscheduler").setLevel(logging.ERROR)

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
        refusal = hiding_change(
            self.engine.config, config, {a.host for a in self.engine.memory.agents.values()}
        )
        if refusal:
            decision(
                "reload refused",
                logging.ERROR,
                path=self.config_path,
                detail="keeping the running config; restart agentpool to apply it",
                error=refusal,
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
            self.service.start(self.engine)
        self._schedule()
        decision("started", instance=self.engine.config.instance, path=self.config_path)
        try:
            while not self._stop.is_set():
                self._stop.wait(0.2)
                if self._reload.is_set():
                    self._reload.clear()
                    self.reload()
        finally:
            decision(
                "stopping", detail="finishing the current pass and the actions in flight; agents keep running"
            )
            self._scheduler.shutdown(wait=True)
            if self.service is not None:
                self.service.stopping()
            if not self.engine.finish():
                left = self.engine.executor.in_flight()
                self.unfinished = (
                    len(left.provisions) + len(left.reaping) + len(left.cordoning) + len(left.orphans)
                )
                decision(
                    "stopped waiting",
                    logging.WARNING,
                    actions=self.unfinished,
                    detail="the next start adopts or removes what they leave",
                )
            if self.service is not None:
                self.service.stop()
            self.engine.close()
        return 0


def hiding_change(old: Config, new: Config, hosts_with_agents: set[str]) -> str:
    """Why ``new`` cannot be applied on reload ("" when it can).

    A new ``instance`` (or ``state_dir``, where the daemon id lives) hides every existing
    agent, and a new URL for a host with agents hides those: the next pass would reap them
    as lost and abort their builds. A removed host is fine: its agents are drained.
    """
    if new.instance != old.instance:
        return (
            f"instance changed from {old.instance!r} to {new.instance!r}: the running agents would be "
            "lost (and their builds killed)"
        )
    if (new.state_dir or "") != (old.state_dir or ""):
        return "state_dir changed: it holds this daemon's id, read once at start"
    for host in new.docker_hosts:
        before = old.host(host.name)
        if before is not None and host.url != before.url and host.name in hosts_with_agents:
            return (
                f"docker host {host.name!r} changed url from {before.url} to {host.url} while it runs "
                "agents: they would be lost (drain them first, or restart)"
            )
    return ""


def _now_local() -> Any:
    from datetime import datetime

    return datetime.now().astimezone()
