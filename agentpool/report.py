"""What the engine tells the world: action outcomes, pass reports, hooks and its control surface.

The service layer (metrics, sd_notify, HTTP) depends on these values and interfaces only,
never on the engine or daemon modules, so the engine can be replaced by a fake in tests and
the import graph has no cycle: engine → report ← service.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from agentpool.errors import ErrorKind, System
from agentpool.model import Action, Memory, Observed, Plan

if TYPE_CHECKING:
    from agentpool.config import Config


@dataclass(frozen=True)
class Outcome:
    """What became of one action."""

    action: Action
    ok: bool
    error: str = ""
    error_system: System | None = None  # None when it was no failed call (an unexpected error)
    error_kind: ErrorKind | None = None
    # Reap: False when the agent turned out busy and was brought back online.
    removed: bool = True
    container_id: str = ""
    volume: str = ""
    log_tail: str = ""


@dataclass
class PassReport:
    """What one pass saw and did; kept for `status`, health and metrics."""

    started: float  # epoch seconds (shown)
    duration: float  # seconds, measured on a monotonic clock
    observed: Observed
    plan: Plan
    outcomes: list[Outcome] = field(default_factory=list)
    ok: bool = True
    error: str = ""
    # per host: the most launches that ran at once since the start (never above its bound)
    launch_high_water: dict[str, int] = field(default_factory=dict)


class Hooks:
    """Where the service layer (metrics, sd_notify) listens; every method may be left as is."""

    def pass_done(self, report: PassReport, memory: Memory, config: Config) -> None:
        """Called after every pass."""

    def api_error(self, system: System, kind: ErrorKind) -> None:
        """Called for every failed call to Jenkins or Docker."""

    def outcome(self, outcome: Outcome, memory: Memory, now: float) -> None:
        """Called for every performed action."""

    def agent_online(self, pool: str, waited: float) -> None:
        """Called when an agent connects for the first time: seconds since it was needed."""

    def pass_overrun(self, seconds: float) -> None:
        """Called for every pass that took longer than ``poll_interval``."""


class EngineControl(Protocol):
    """What the service layer's endpoints ask of the running engine."""

    @property
    def last_report(self) -> PassReport | None: ...

    @property
    def last_success(self) -> float | None: ...

    @property
    def config(self) -> Config: ...

    def clock(self) -> float: ...

    def status(self) -> dict[str, Any]: ...

    def set_draining(self, pool: str | None, draining: bool) -> list[str]: ...

    def set_host_draining(self, host: str, draining: bool) -> list[str]: ...
