"""Fixtures for every suite: the secrets one test registers for masking never mask another
test's output (the registry is process-wide and an xdist worker runs many tests in a row), and
every test's daemon gets a state directory of its own.

agentpool's default state directory (daemon id, drain state) is ``$STATE_DIRECTORY`` or
/var/lib/agentpool; a test must neither write there nor share a daemon id or a drain with
another test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentpool.logs import clear_secrets

_TESTS = Path(__file__).resolve().parent
_WHOLE_SUITE_GROUPS = {"fleet", "systemd", "image"}


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    """A loaded config registers its secrets process-wide: a worker runs many tests in a row."""
    yield
    clear_secrets()


@pytest.fixture(autouse=True)
def _state_directory(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("STATE_DIRECTORY", str(path))
    return path
