"""The README's demo command does what the README says, end to end (the controller on the
bridge gateway read from the engine, a free port; the demo's instance name is fixed, so it
runs once, on its own)."""

from __future__ import annotations

import subprocess
import sys

import docker
import pytest

from agentpool_testing.network import bridge_gateway

from .conftest import REPO

pytestmark = pytest.mark.docker


def test_demo_provisions_runs_nested_docker_reaps_and_leaves_nothing(
    docker_client: docker.DockerClient,
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agentpool_testing.demo", "--timeout", "240"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one stream, in the order it was written
        text=True,
        timeout=300,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out[-6000:]
    assert f"controller at http://{bridge_gateway(docker_client)}:" in out  # the gateway, a free port
    assert "hello from a container inside" in out
    assert "demo-freestyle #1 finished: SUCCESS" in out and "demo-pipeline #1 finished: SUCCESS" in out
    assert "left behind: {'containers': [], 'volumes': [], 'nodes': []}" in out
    assert "demo succeeded" in out
    # stdout is flushed: each build's console output comes before the agents are reaped
    assert out.rindex("    | Finished: SUCCESS") < out.index("msg=reaped")
