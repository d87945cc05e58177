"""The machine's own Docker engine for the suites that need it, checked once the same way:
it answers, and the images the suite runs are built."""

from __future__ import annotations

import docker
import docker.errors
import pytest


def local_engine(*images: str) -> docker.DockerClient:
    """A client of the local engine; fails the test run with the fix when it is not ready."""
    client = docker.from_env()
    try:
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"no Docker engine answers ({exc}); scripts/test.sh starts one")
    for image in images:
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.fail(f"image {image} missing: run images/build (scripts/test.sh does)")
    return client
