"""Waiting for a condition in the suites that drive real processes (e2e, systemd): one loop, so
every timeout says what was awaited and for how long."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(what: str, condition: Callable[[], Any], timeout: float, step: float = 0.5) -> Any:
    """``condition()``'s first truthy value, asked every ``step`` seconds; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(step)
