"""The executor's lanes and in-flight bookkeeping, apart from what the actions do.

The executor decides *how* an action is carried out; this module decides *when* and *where*:
each action runs on a lane of worker threads (one lane per backend host for launches,
bounded by its ``max_parallel_launches``, and one lane for everything else, so a container
that is slow to stop never delays a launch), at most one action per agent or resource at a
time, and the engine reads the finished outcomes and what is still in flight under one lock.
It knows nothing of Jenkins or the backends: it is handed the function that performs an action.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import assert_never

from agentpool.model import Action, CompleteLaunch, Cordon, InFlight, Provision, Reap, RemoveOrphan
from agentpool.planner.memory import orphan_key
from agentpool.report import Outcome

__all__ = ["REMOVAL_WORKERS", "Lanes", "LaunchStats", "action_key", "in_flight_of"]

# The executor's logger: a refusal is the executor's to report.
log = logging.getLogger("agentpool.executor")

# A removal lane's size: reaps wait on container stops (up to a pool's stop_timeout each).
REMOVAL_WORKERS = 8


def action_key(action: Action) -> str:
    """What an action acts on: one agent, or one leftover resource; one action per key at a time."""
    match action:
        case Provision() | Reap() | Cordon() | CompleteLaunch():
            return f"agent:{action.agent}"
        case RemoveOrphan():
            return orphan_key(action.kind, action.host, action.name)
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


class Lanes:
    """Runs actions in the background with ``perform``, one per key at a time, and keeps their outcomes."""

    def __init__(self, perform: Callable[[Action], Outcome], launch_limits: Mapping[str, int]) -> None:
        self._perform = perform
        self._limits = dict(launch_limits)
        self._lock = threading.Condition()
        self._in_flight: dict[str, Action] = {}
        self._done: list[Outcome] = []
        self._running: dict[str, int] = {}
        self._high_water: dict[str, int] = {}
        self._lanes: dict[str, _Lane] = {}

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
        outcome = self._perform(action)
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

    def execute(self, actions: Iterable[Action]) -> list[Outcome]:
        """Perform ``actions`` in the background and wait for them all; their outcomes, in order."""
        batch = list(actions)
        for action in batch:
            self.submit(action)
        self.wait()
        done, _ = self.collect()
        by_action = {id(o.action): o for o in done}
        return [by_action[id(a)] for a in batch if id(a) in by_action]

    def close(self) -> None:
        """Stop the worker threads once their queues are empty (in-flight actions still finish)."""
        with self._lock:
            lanes, self._lanes = list(self._lanes.values()), {}
        for lane in lanes:
            lane.close()
