"""Unit test fixtures: the secrets a loaded config registers for masking do not outlive a test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentpool.logs import clear_secrets


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    yield
    clear_secrets()
