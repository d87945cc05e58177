"""Keeps the slow suites apart when pytest-xdist spreads the tests over workers, keeps the
secrets one test registers for masking from masking another test's output, and gives every
test's daemon a state directory of its own.

`scripts/test.sh` runs the suite with ``-n … --dist loadgroup``. A fleet of engines, a systemd
host or an image fixture is expensive and scoped to a session or a module: every test of such a
suite goes to one worker (its group), and each end-to-end module stays on one worker, so no
fixture is brought up twice and the workers mostly wait on real engines side by side.

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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        try:
            relative = Path(item.path).resolve().relative_to(_TESTS)
        except ValueError:
            continue
        suite = relative.parts[0] if len(relative.parts) > 1 else ""
        if suite in _WHOLE_SUITE_GROUPS:
            item.add_marker(pytest.mark.xdist_group(suite))
        elif suite == "e2e":
            item.add_marker(pytest.mark.xdist_group(str(relative)))


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
