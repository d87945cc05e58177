"""Fixtures for the dind agent image tests.

The images (agentpool/dind-agent:latest, agentpool/busybox:latest) are built by images/build,
which scripts/test.sh runs before pytest; the session fixture builds them when missing.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator

import pytest

from tests.image.dindtools import BUSYBOX, IMAGE, REPO, Agents


@pytest.fixture(scope="session")
def images() -> None:
    """The images under test, built by images/build when missing."""
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        pytest.fail("no Docker engine answers: start dockerd (scripts/test.sh does)")
    missing = [
        img
        for img in (IMAGE, BUSYBOX)
        if subprocess.run(["docker", "image", "inspect", img], capture_output=True, check=False).returncode
    ]
    if missing:
        subprocess.run([str(REPO / "images" / "build"), "--test-images"], check=True, timeout=900)


@pytest.fixture(scope="module")
def agents(images: None) -> Iterator[Agents]:
    registry = Agents(suffix=secrets.token_hex(3))
    try:
        yield registry
    finally:
        registry.cleanup()
