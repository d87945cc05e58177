"""Fixtures for the service layer tests: clean global log state, a tiny offline image."""

from __future__ import annotations

import logging
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentpool.logs import clear_secrets


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    clear_secrets()
    root.handlers[:] = handlers
    root.setLevel(level)


def _busybox() -> Path | None:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        path = Path(candidate)
        if path.is_file():
            return path
    return None


@pytest.fixture(scope="session")
def busybox_image() -> Iterator[str]:
    """A tiny image (static busybox plus its applet links) imported offline, removed afterwards."""
    busybox = _busybox()
    if busybox is None:
        pytest.skip("busybox-static is not installed (apt-get install -y busybox-static)")
    if shutil.which("docker") is None:
        pytest.skip("no docker client on PATH")
    tag = f"agentpool-test/busybox:{secrets.token_hex(4)}"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "bin").mkdir()
        shutil.copy2(busybox, root / "bin" / "busybox")
        applets = subprocess.run(
            [str(busybox), "--list"], check=True, capture_output=True, text=True
        ).stdout.split()
        for applet in applets:
            if applet != "busybox":
                (root / "bin" / applet).symlink_to("busybox")
        for d in ("proc", "sys", "dev", "etc", "tmp"):
            (root / d).mkdir()
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            ["docker", "import", "--change", "ENV PATH=/bin", "-", tag],
            stdin=tar.stdout,
            check=True,
            capture_output=True,
        )
        assert tar.wait() == 0
    try:
        yield tag
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], check=False, capture_output=True)
