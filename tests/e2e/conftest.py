"""End-to-end fixtures: the project's Jenkins-compatible controller over real HTTP, the real
Docker engine, the real dind agent image, and agentpool's own engine driving them.

Agents run in containers and reach the controller at the bridge gateway, read from the engine
(``docker network inspect bridge``); the controller listens there, on a free port, and
agentpool talks to it at the same address. Every test run uses its own
instance name, so nothing it creates can be confused with another run's.
"""

from __future__ import annotations

import io
import os
import secrets
import socket
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import jenkins
import pytest

from agentpool.config import Config, load_config
from agentpool.daemon import Engine
from agentpool_testing.artifacts import ArtifactServer
from agentpool_testing.jenkins import Controller
from agentpool_testing.network import bridge_gateway
from tests.engine import local_engine

IMAGE = os.environ.get("AGENTPOOL_IMAGE", "agentpool/dind-agent:latest")
BUSYBOX = "agentpool/busybox:latest"
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.docker
NOTHING: dict[str, list[str]] = {"containers": [], "volumes": [], "nodes": []}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    client = local_engine(IMAGE, BUSYBOX)
    yield client
    client.close()


@pytest.fixture(scope="session")
def bridge(docker_client: docker.DockerClient) -> str:
    """The engine's bridge gateway: where agents in containers reach this machine."""
    return bridge_gateway(docker_client)


@pytest.fixture(scope="session")
def artifacts(docker_client: docker.DockerClient, bridge: str) -> Iterator[ArtifactServer]:
    """Busybox served to builds, which `docker load` it into their agent's own engine."""
    with ArtifactServer(docker_client, {"busybox": BUSYBOX}, listen=bridge) as server:
        yield server


def docker_script(artifacts: ArtifactServer, message: str) -> str:
    return artifacts.docker_run_script("busybox", BUSYBOX, f"echo {message}")


@pytest.fixture
def controller(bridge: str) -> Iterator[Controller]:
    token = secrets.token_hex(16)
    ctl = Controller(listen=f"{bridge}:0", user="admin", token=token)
    ctl.start()
    ctl.test_token = token  # type: ignore[attr-defined]
    yield ctl
    ctl.stop()


@pytest.fixture
def jenkins_client(controller: Controller) -> jenkins.Jenkins:
    return jenkins.Jenkins(
        controller.url,
        username="admin",
        password=controller.test_token,  # type: ignore[attr-defined]
        timeout=10,
    )


@pytest.fixture
def instance() -> str:
    return "t" + secrets.token_hex(3)


ConfigFactory = Callable[..., Config]


@pytest.fixture
def make_config(
    tmp_path: Path, controller: Controller, instance: str, monkeypatch: pytest.MonkeyPatch
) -> ConfigFactory:
    monkeypatch.setenv("AGENTPOOL_TEST_TOKEN", controller.test_token)  # type: ignore[attr-defined]

    def make(metrics_listen: str | None = None, poll_interval: str = "1s", **pool: Any) -> Config:
        settings: dict[str, Any] = {
            "name": "dind",
            "labels": ["docker", "linux"],
            "image": IMAGE,
            "security": "capabilities",
            "cap_drop": ["SYS_RESOURCE"],
            "idle_timeout": "8s",
            "launch_timeout": "90s",
            "max_agents": 3,
        }
        settings.update(pool)
        lines = [
            "jenkins:",
            f"  url: {controller.url}",
            "  user: admin",
            "  token_env: AGENTPOOL_TEST_TOKEN",
            f"  agent_url: {controller.url}",
            f"instance: {instance}",
            f"poll_interval: {poll_interval}",
            "metrics:",
            f"  listen: {metrics_listen or 'null'}",
            "pools:",
            "  - name: " + str(settings.pop("name")),
        ]
        for key, value in settings.items():
            if isinstance(value, list):
                lines.append(f"    {key}: [{', '.join(str(v) for v in value)}]")
            elif isinstance(value, bool):
                lines.append(f"    {key}: {'true' if value else 'false'}")
            else:
                lines.append(f"    {key}: {value}")
        path = tmp_path / "agentpool.yaml"
        path.write_text("\n".join(lines) + "\n")
        return load_config(path)

    return make


def drive(
    engine: Engine, condition: Callable[[], Any], what: str, timeout: float, interval: float = 1.0
) -> Any:
    """Run reconcile passes until ``condition`` holds; the engine is the real daemon's pass."""
    deadline = time.monotonic() + timeout
    while True:
        engine.run_pass()
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}; status={engine.status()}"
            )
        time.sleep(interval)


def build_info(client: jenkins.Jenkins, job: str, number: int = 1) -> dict[str, Any] | None:
    """The build's info once it has a result; None while it is queued or running."""
    try:
        info: dict[str, Any] = client.get_build_info(job, number)
    except jenkins.JenkinsException:  # python-jenkins' answer for a build that does not exist yet
        return None
    return info if info.get("result") else None


def result(client: jenkins.Jenkins, job: str, number: int = 1) -> str | None:
    info = build_info(client, job, number)
    return str(info["result"]) if info else None


def leftovers(
    client: docker.DockerClient, jenkins_client: jenkins.Jenkins, instance: str
) -> dict[str, list[str]]:
    """Everything of this instance still present: containers, volumes, Jenkins nodes."""
    label = f"agentpool.instance={instance}"
    return {
        "containers": [
            c.name for c in client.containers.list(all=True, filters={"label": label}, ignore_removed=True)
        ],
        "volumes": [v.name for v in client.volumes.list(filters={"label": label})],
        "nodes": [n["name"] for n in jenkins_client.get_nodes() if n["name"].startswith(instance + "-")],
    }


@pytest.fixture
def cleanup(docker_client: docker.DockerClient, instance: str) -> Iterator[None]:
    """Whatever a failing test leaves behind is removed, so later runs start clean."""
    yield
    label = f"agentpool.instance={instance}"
    for container in docker_client.containers.list(all=True, filters={"label": label}, ignore_removed=True):
        container.remove(force=True, v=True)
    for volume in docker_client.volumes.list(filters={"label": label}):
        volume.remove(force=True)


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["python3", "-m", "agentpool", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


ImageFactory = Callable[[str, str], str]


@pytest.fixture
def build_image(docker_client: docker.DockerClient, instance: str) -> Iterator[ImageFactory]:
    """Tiny images FROM busybox (``FROM`` line added), removed after the test."""
    tags: list[str] = []

    def build(suffix: str, body: str) -> str:
        tag = f"agentpool/test-{suffix}:{instance}"
        dockerfile = f"FROM {BUSYBOX}\n{body}\n".encode()
        context = io.BytesIO()
        with tarfile.open(fileobj=context, mode="w") as tar:
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(dockerfile)
            tar.addfile(info, io.BytesIO(dockerfile))
        context.seek(0)
        docker_client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True)
        tags.append(tag)
        return tag

    yield build
    for tag in tags:
        docker_client.images.remove(tag, force=True)
