"""What the service layer remembers of the last hour: decisions, waits and agents' life phases.

The engine keeps no history: it plans from what it observes now. An operator asking "what
happened, and why" wants the last decisions with their reasons, how long builds waited for an
agent lately (p50/p95, not a Prometheus query), and how long agents spend launching, waiting
for their first build and working. :class:`Recent` builds all three from what the engine
already hands its hooks (outcomes, passes, agent-online waits); everything is bounded (a ring
of decisions, one hour of waits) so a daemon running for months keeps a constant footprint.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agentpool.logs import redact
from agentpool.model import AgentMemory, CompleteLaunch, Cordon, Memory, Node, Provision, Reap, RemoveOrphan

DECISIONS_KEPT = 50
WINDOW = 3600.0

# The phases of `agentpool_agent_lifecycle_seconds`, in the order an agent goes through them.
LAUNCHING = "launching"  # provisioned → online
FIRST_BUILD = "online-to-first-build"
WORKING = "first-build-to-reaped"
LIFETIME = "provisioned-to-reaped"
PHASES = (LAUNCHING, FIRST_BUILD, WORKING, LIFETIME)

PhaseFn = Callable[[str, str, float], None]


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-quantile (0..1) of ``values`` by the nearest-rank rule; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


@dataclass(slots=True)
class _Life:
    pool: str
    launched: float
    online: float | None
    first_build: float | None = None


class Recent:
    """Bounded recent history; ``phase`` receives each agent-lifecycle duration (the histogram)."""

    def __init__(self, phase: PhaseFn | None = None, keep: int = DECISIONS_KEPT, window: float = WINDOW):
        self._lock = threading.Lock()
        self._decisions: deque[dict[str, Any]] = deque(maxlen=keep)
        self._waits: deque[tuple[float, str, float]] = deque()
        self._lives: dict[str, _Life] = {}
        self._phase = phase or (lambda pool, phase, seconds: None)
        self._last_error = ""
        self.window = window

    # -- decisions -------------------------------------------------------------------------

    def decision(self, when: float, event: str, **fields: object) -> None:
        entry: dict[str, Any] = {"time": round(when, 3), "event": event}
        entry.update(
            {k: redact(v) if isinstance(v, str) else v for k, v in fields.items() if v not in ("", None)}
        )
        with self._lock:
            self._decisions.append(entry)

    def decisions(self) -> list[dict[str, Any]]:
        """Newest first."""
        with self._lock:
            return list(reversed(self._decisions))

    def outcome(
        self, action: object, ok: bool, removed: bool, error: str, memory: Memory, now: float
    ) -> None:
        """One performed action, as the log words it (event, where, reason, detail or error)."""
        if isinstance(action, Provision):
            where: dict[str, object] = {"agent": action.agent, "pool": action.pool, "host": action.host}
            if ok:
                self.decision(now, "provisioned", **where, reason=action.reason.value, detail=action.detail)
                with self._lock:
                    self._lives[action.agent] = _Life(action.pool, now, None)
                return
            self.decision(now, "launch failed", **where, error=error)
            self._backoff(action.pool, memory, now)
        elif isinstance(action, Reap):
            where = {"agent": action.agent, "pool": action.pool, "reason": action.reason.value}
            if not ok:
                self.decision(now, "reap failed", **where, error=error)
            elif not removed:
                self.decision(now, "kept", **where, detail="a build arrived while it was being reaped")
            else:
                self.decision(now, "reaped", **where, detail=action.detail)
                self._reaped(action.agent, now)
                if action.count_launch_failure:
                    self._backoff(action.pool, memory, now)
        elif isinstance(action, Cordon):
            where = {"agent": action.agent, "pool": action.pool, "reason": action.reason.value}
            if ok:
                self.decision(now, "cordoned", **where, detail=action.detail)
            else:
                self.decision(now, "cordon failed", **where, error=error)
        elif isinstance(action, CompleteLaunch):
            where = {"agent": action.agent, "pool": action.pool, "host": action.host}
            if ok:
                self.decision(
                    now, "launch completed", **where, reason=action.reason.value, detail=action.detail
                )
            else:
                self.decision(now, "launch completion failed", **where, error=error)
        elif isinstance(action, RemoveOrphan):
            where = {
                "resource": f"{action.kind} {action.name}",
                "host": action.host,
                "reason": action.reason.value,
            }
            if ok:
                self.decision(now, "removed", **where, detail=action.detail)
            else:
                self.decision(now, "removal failed", **where, error=error)

    def _backoff(self, pool: str, memory: Memory, now: float) -> None:
        pool_memory = memory.pools.get(pool)
        if pool_memory is not None and pool_memory.backoff_until > now:
            self.decision(
                now,
                "backoff",
                pool=pool,
                detail=f"{round(pool_memory.backoff_until - now)}s after "
                f"{pool_memory.consecutive_failures} consecutive launch failures",
            )

    def pass_error(self, error: str, now: float) -> None:
        """A pass that could not read everything: recorded when the error changes, not every pass."""
        with self._lock:
            changed, self._last_error = error != self._last_error, error
        if changed and error:
            self.decision(now, "pass incomplete", error=error)
        elif changed:
            self.decision(now, "pass complete", detail="Jenkins and every engine read again")

    # -- waits (queued → online) -----------------------------------------------------------

    def online(self, pool: str, waited: float, now: float) -> None:
        with self._lock:
            self._waits.append((now, pool, max(0.0, waited)))
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._waits and self._waits[0][0] < now - self.window:
            self._waits.popleft()

    def waits(self, now: float) -> dict[str, Any]:
        """Queued → online over the window: count, p50, p95 (seconds), overall and per pool."""
        with self._lock:
            self._trim(now)
            waits = list(self._waits)

        def summary(values: list[float]) -> dict[str, Any]:
            p50, p95 = percentile(values, 0.5), percentile(values, 0.95)
            return {
                "count": len(values),
                "p50": None if p50 is None else round(p50, 1),
                "p95": None if p95 is None else round(p95, 1),
                "max": round(max(values), 1) if values else None,
            }

        by_pool: dict[str, list[float]] = {}
        for _, pool, seconds in waits:
            by_pool.setdefault(pool, []).append(seconds)
        return {
            "window_seconds": self.window,
            **summary([s for _, _, s in waits]),
            "pools": {pool: summary(values) for pool, values in sorted(by_pool.items())},
        }

    # -- agent lifecycle -------------------------------------------------------------------

    def pass_seen(self, agents: Mapping[str, AgentMemory], nodes: Iterable[Node], now: float) -> None:
        """Follow each agent through its phases: online (and the "online" decision), first build."""
        busy = {n.name for n in nodes if n.busy}
        observed: list[tuple[str, str, float]] = []
        came_online: list[AgentMemory] = []
        with self._lock:
            for name, agent in agents.items():
                life = self._lives.get(name)
                if life is None:
                    # Adopted (a restart) or first seen: its launch was not watched, but the
                    # rest of its life can be.
                    self._lives[name] = life = _Life(agent.pool, agent.launched_at, agent.online_at)
                elif life.online is None and agent.online_at is not None:
                    life.online = agent.online_at
                    observed.append((life.pool, LAUNCHING, agent.online_at - life.launched))
                    came_online.append(agent)
                if life.online is not None and life.first_build is None and name in busy:
                    life.first_build = now
                    observed.append((life.pool, FIRST_BUILD, now - life.online))
            for gone in set(self._lives) - set(agents):
                # Reaped without an outcome we saw (another instance of the daemon, by hand).
                del self._lives[gone]
        for agent in came_online:
            waited = agent.online_at - (agent.needed_since or agent.launched_at) if agent.online_at else 0
            self.decision(
                now,
                "online",
                agent=agent.name,
                pool=agent.pool,
                host=agent.host,
                detail=f"waited {waited:.0f}s",
            )
        for pool, phase, seconds in observed:
            self._phase(pool, phase, max(0.0, seconds))

    def _reaped(self, agent: str, now: float) -> None:
        with self._lock:
            life = self._lives.pop(agent, None)
        if life is None:
            return
        if life.first_build is not None:
            self._phase(life.pool, WORKING, max(0.0, now - life.first_build))
        self._phase(life.pool, LIFETIME, max(0.0, now - life.launched))
