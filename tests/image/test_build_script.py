"""images/build on a Docker host without Debian tooling: the agent image alone needs none, and
only --test-images (the test/demo busybox image) reaches for apt-get."""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BASE = "agentpool/offline-base:bookworm"

pytestmark = pytest.mark.docker


def _present(image: str) -> bool:
    return (
        subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False).returncode
        == 0
    )


@pytest.fixture
def no_debian(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """PATH where apt-get, dpkg-deb and debootstrap exist only as stubs that fail and say so."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    called = tmp_path / "called"
    for tool in ("apt-get", "dpkg-deb", "debootstrap"):
        stub = stubs / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $*" >> {called}\nexit 1\n')
        stub.chmod(0o755)
    return {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}"}, called


def test_the_agent_image_builds_without_apt_get_and_test_images_are_asked_for(
    no_debian: tuple[dict[str, str], Path],
) -> None:
    if not _present(BASE):
        pytest.skip(f"{BASE} is not built (images/build makes it on a Debian host)")
    env, called = no_debian
    tag = secrets.token_hex(4)
    image, busybox = f"agentpool/dind-agent:test-{tag}", f"agentpool/busybox:test-{tag}"
    env.update({"AGENTPOOL_BASE": BASE, "AGENTPOOL_IMAGE": image, "AGENTPOOL_BUSYBOX": busybox})
    env.pop("AGENTPOOL_TEST_IMAGES", None)
    try:
        built = subprocess.run(
            [str(REPO / "images" / "build")],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert built.returncode == 0, built.stderr
        assert _present(image) and not _present(busybox)
        assert not called.exists(), called.read_text()

        env["AGENTPOOL_TEST_IMAGES"] = "1"
        asked = subprocess.run(
            [str(REPO / "images" / "build")],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert asked.returncode != 0 and "busybox-static" in asked.stderr, asked.stderr
        assert called.read_text().startswith("apt-get download busybox-static")
    finally:
        subprocess.run(["docker", "image", "rm", image, busybox], capture_output=True, check=False)


def test_unknown_arguments_are_refused() -> None:
    done = subprocess.run(
        [str(REPO / "images" / "build"), "--test-image"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "unknown argument --test-image (usage: images/build [--test-images])" in done.stderr
