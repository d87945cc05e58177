"""Agent names: derived, never random, so that a pass is a pure function of its inputs."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Container


def agent_name(instance: str, pool: str, now: float, index: int, taken: Container[str]) -> str:
    """``{instance}-{pool}-{6 hex}``, derived from the time and the index in this pass.

    Deterministic (the planner is pure), and never one of ``taken``. Should the name exist
    after all (a controller or engine the planner did not see), the executor's create
    fails with "already exists" and the next pass picks another one.
    """
    attempt = 0
    while True:
        digest = hashlib.sha256(f"{instance}\0{pool}\0{now!r}\0{index}\0{attempt}".encode()).hexdigest()
        name = f"{instance}-{pool}-{digest[:6]}"
        if name not in taken:
            return name
        attempt += 1


def agent_pattern(instance: str) -> re.Pattern[str]:
    """Matches the names of this instance's agents; group ``pool`` is the pool's name."""
    return re.compile(rf"^{re.escape(instance)}-(?P<pool>[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)-[0-9a-f]{{6}}$")
