"""Pause Python's cyclic garbage collector while one pass reads and plans.

A pass decodes megabytes of JSON (the queue, the nodes, the engines' lists) into some hundred
thousand short-lived dicts and lists, then builds as many frozen records. The collector runs
by allocation count, so during that it walks the young generations hundreds of times and the
whole heap several times: measured, half the cost of decoding (bench/full_pass.py,
docs/benchmarks.md). None of it forms reference cycles; reference counting frees it when the
pass drops it. So the read-and-plan part of a pass runs with the collector paused, and it
resumes, collecting as its thresholds say, as soon as the pass' CPU part is over.

The switch is process-wide (``gc.disable``): nested or concurrent pauses are counted, and the
collector is only resumed by the last one, and only if it was running before the first.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0
_resume = False


@contextmanager
def collector_paused() -> Iterator[None]:
    """Run the body with the cyclic collector off (reference counting still frees everything)."""
    global _depth, _resume
    with _lock:
        if _depth == 0:
            _resume = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _resume:
                gc.enable()
