"""Every test's daemon keeps its state (daemon id, drain state) in a directory of its own.

agentpool's default state directory is ``$STATE_DIRECTORY`` or /var/lib/agentpool; a test
must neither write there nor share a daemon id or a drain with another test.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _state_directory(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("STATE_DIRECTORY", str(path))
    return path
