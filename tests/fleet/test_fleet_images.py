"""Images where they are needed: the agent image copied from the machine's engine into a fleet
engine that reaches no registry, then an agent started from it there that connects to the
project's controller through the engine's NAT.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import jenkins
import pytest

from agentpool.adapters.docker import AgentSpec
from agentpool.adapters.images import ensure_image
from agentpool.model import LABEL_AGENT, LABEL_INSTANCE, LABEL_POOL
from agentpool_testing.jenkins import Controller
from agentpool_testing.jenkins.stub import BUILT_JAR
from tests.fleet.conftest import CAP_DROP, IMAGE, Fleet

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(400)]

REPO = Path(__file__).resolve().parents[2]
JAR = BUILT_JAR


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def controller(fleet: Fleet) -> Iterator[tuple[Controller, jenkins.Jenkins]]:
    if not JAR.exists():
        subprocess.run([str(REPO / "scripts/build-agent-jar")], check=True, capture_output=True)
    token, port = secrets.token_hex(16), free_port()
    # Agents in the fleet's engines reach this machine at the fleet network's gateway.
    url = f"http://{fleet.gateway}:{port}/"
    with Controller(
        listen=f"{fleet.gateway}:{port}", user="admin", token=token, url=url, quiet_period=0
    ) as ctl:
        yield ctl, jenkins.Jenkins(url, username="admin", password=token, timeout=10)


def test_agent_image_is_copied_without_a_registry_and_an_agent_runs_from_it(
    fleet: Fleet, controller: tuple[Controller, jenkins.Jenkins]
) -> None:
    ctl, server = controller
    engine = fleet.engines[0]
    target = engine.host()
    seen: list[tuple[int, int | None]] = []
    try:
        assert target.image_id(IMAGE) is None
        result = ensure_image(
            target, IMAGE, sources=[fleet.local], pull_timeout=5, progress=lambda d, e: seen.append((d, e))
        )
        print(
            f"\nimage copy: {IMAGE} {result.bytes / 1e6:.0f} MB from {result.source} to {engine.name} "
            f"in {result.seconds:.1f}s ({len(seen)} progress reports; pull: {result.pull_error})"
        )
        assert (result.how, result.source) == ("copied", "local")
        assert result.pull_error  # no registry: the pull was tried and failed
        assert target.image_id(IMAGE) == fleet.local.image_id(IMAGE)
        # Progress: rising, ending at what was sent, expected size known (save ≈ image size).
        done = [d for d, _ in seen]
        assert done == sorted(done) and len(done) > 10
        assert done[-1] == result.bytes
        expected = seen[-1][1]
        assert expected is not None and 0.8 * expected < result.bytes < 1.2 * expected + 10_000_000
        # A second call finds it present and sends nothing.
        assert ensure_image(target, IMAGE, sources=[fleet.local]).how == "present"

        instance = "t" + secrets.token_hex(3)
        node = f"{instance}-dind-1"
        server.create_node(
            node,
            numExecutors=1,
            remoteFS="/home/jenkins/agent",
            labels="docker",
            exclusive=True,
            launcher=jenkins.LAUNCHER_JNLP,
            launcher_params={"webSocket": True},
        )
        labels = {LABEL_INSTANCE: instance, LABEL_POOL: "dind", LABEL_AGENT: node}
        target.create_volume(node, labels)
        container = target.start_agent(
            AgentSpec(
                name=node,
                pool="dind",
                image=IMAGE,
                volume=node,
                env={
                    "JENKINS_URL": ctl.url,
                    "JENKINS_SECRET": ctl.secret(node),
                    "JENKINS_AGENT_NAME": node,
                    "JENKINS_WEB_SOCKET": "true",
                },
                security="capabilities",
                cap_drop=tuple(CAP_DROP),
                labels=labels,
            )
        )
        try:
            deadline = time.monotonic() + 120
            while server.get_node_info(node)["offline"]:
                assert time.monotonic() < deadline, target.logs_tail(container, 40)
                time.sleep(0.5)
        finally:
            target.remove_container(container, stop_timeout=5)
            target.remove_volume(node)
        assert not target.observe(instance).containers
    finally:
        target.close()
