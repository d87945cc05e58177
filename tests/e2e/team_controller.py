"""Helpers for the e2e tests of a team's real controller: static agents connected from this
machine, a restricted service account, a config written for it, and the no-op agent image.

A static agent is the stub agent.jar run as a local process (as an admin's static node would
be, from another machine); it runs its builds as local shell scripts. The no-op image starts
the same stub inside a container, without the inner Docker engine, so launches take about a
second where no build needs Docker.
"""

from __future__ import annotations

import io
import secrets
import subprocess
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import jenkins

from agentpool_testing.jenkins import Controller

from .conftest import IMAGE

NOOP_IMAGE = "agentpool/noop-agent:jenkins"
AGENT_JAR = Path(__file__).resolve().parents[2] / "testing/agentpool_testing/jenkins/agent/agent.jar"
# every permission the loop needs (README), and not Overall/Administer
LOOP_PERMISSIONS = [
    "Overall/Read",
    "Job/Read",
    "Agent/Create",
    "Agent/Connect",
    "Agent/Disconnect",
    "Agent/Delete",
]

_NOOP_DOCKERFILE = f"""FROM {IMAGE}
ENTRYPOINT ["sh", "-c", "curl -fsS \\"${{JENKINS_URL}}jnlpJars/agent.jar\\" -o /tmp/agent.jar && exec java -jar /tmp/agent.jar -url \\"$JENKINS_URL\\" -secret \\"${{JENKINS_SECRET_FILE:+@$JENKINS_SECRET_FILE}}${{JENKINS_SECRET:-}}\\" -name \\"$JENKINS_AGENT_NAME\\" -webSocket -workDir \\"$JENKINS_AGENT_WORKDIR\\""]
"""


def build_noop_image(client: docker.DockerClient) -> str:
    """The dind image's layers with an entrypoint that runs only the agent (built once, cached)."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        data = _NOOP_DOCKERFILE.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=NOOP_IMAGE, rm=True)
    return NOOP_IMAGE


@contextmanager
def static_agent(
    ctl: Controller,
    client: jenkins.Jenkins,
    name: str,
    labels: str,
    work: Path,
    *,
    description: str = "",
    executors: int = 1,
    exclusive: bool = False,
) -> Iterator[None]:
    """A node created by an admin and connected from this machine, as static agents are."""
    client.create_node(
        name,
        numExecutors=executors,
        nodeDescription=description or None,
        remoteFS=str(work),
        labels=labels,
        exclusive=exclusive,
        launcher=jenkins.LAUNCHER_JNLP,
        launcher_params={"webSocket": True},
    )
    work.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            "java",
            "-jar",
            str(AGENT_JAR),
            "-url",
            ctl.url,
            "-secret",
            ctl.secret(name),
            "-name",
            name,
            "-webSocket",
            "-workDir",
            str(work),
        ],
        stdout=subprocess.DEVNULL,
        stderr=(work / "agent.log").open("ab"),
    )
    try:
        deadline = time.monotonic() + 30
        while not any(n["name"] == name and n["connected"] for n in ctl.nodes()):
            assert process.poll() is None, (work / "agent.log").read_text()
            assert time.monotonic() < deadline, "the static agent never connected"
            time.sleep(0.2)
        yield
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def service_account(ctl: Controller, permissions: list[str] | None = None) -> tuple[str, str]:
    token = secrets.token_hex(16)
    ctl.add_user("svc", token, permissions if permissions is not None else LOOP_PERMISSIONS)
    return "svc", token


def write_config(
    path: Path,
    ctl: Controller,
    instance: str,
    user: str,
    token_env: str,
    *,
    poll_interval: str = "1s",
    state_dir: Path | None = None,
    **pool: Any,
) -> Path:
    settings: dict[str, Any] = {
        "name": "dind",
        "labels": ["docker", "linux"],
        "image": NOOP_IMAGE,
        "security": "capabilities",
        "cap_drop": ["SYS_RESOURCE"],
        "idle_timeout": "4s",
        "launch_timeout": "60s",
        "max_agents": 3,
        **pool,
    }
    lines = [
        "jenkins:",
        f"  url: {ctl.url}",
        f"  user: {user}",
        f"  token_env: {token_env}",
        f"instance: {instance}",
        f"poll_interval: {poll_interval}",
        "metrics: {listen: null}",
    ]
    if state_dir is not None:
        lines.append(f"state_dir: {state_dir}")
    lines += ["pools:", f"  - name: {settings.pop('name')}"]
    for key, value in settings.items():
        if isinstance(value, list):
            lines.append(f"    {key}: [{', '.join(str(v) for v in value)}]")
        elif isinstance(value, bool):
            lines.append(f"    {key}: {'true' if value else 'false'}")
        else:
            lines.append(f"    {key}: {value}")
    path.write_text("\n".join(lines) + "\n")
    return path


def node_names(ctl: Controller, prefix: str) -> set[str]:
    return {n["name"] for n in ctl.nodes() if n["name"].startswith(prefix)}
