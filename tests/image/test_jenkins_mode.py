"""The dind agent in Jenkins mode against the project's Jenkins-compatible controller.

The container downloads agent.jar from the controller (over the Docker bridge, as from a real
Jenkins), connects over WebSocket, and runs a freestyle build whose shell step uses the
container's own Docker engine. SIGTERM then takes the agent offline and the container down.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import jenkins
import pytest

from agentpool_testing.jenkins import Controller, freestyle_config
from agentpool_testing.jenkins.stub import AGENT_SOURCE, BUILT_JAR
from agentpool_testing.network import bridge_gateway
from tests.image.dindtools import BUSYBOX, REPO, Agents, docker

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def agent_jar() -> Path:
    newest = max(p.stat().st_mtime for p in AGENT_SOURCE.rglob("*.java"))
    if not BUILT_JAR.exists() or BUILT_JAR.stat().st_mtime < newest:
        subprocess.run([str(REPO / "scripts/build-agent-jar")], check=True, capture_output=True)
    return BUILT_JAR


@pytest.fixture
def controller(agent_jar: Path) -> Iterator[tuple[Controller, jenkins.Jenkins]]:
    user, token = "admin", secrets.token_hex(16)
    gateway = bridge_gateway()  # where containers reach the host
    with Controller(listen=f"{gateway}:0", user=user, token=token, quiet_period=0) as ctl:
        yield ctl, jenkins.Jenkins(ctl.url, username=user, password=token, timeout=10)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_agent_connects_and_builds_with_its_own_docker(
    agents: Agents, controller: tuple[Controller, jenkins.Jenkins]
) -> None:
    ctl, server = controller
    node = f"dind-{secrets.token_hex(3)}"
    server.create_node(
        node,
        numExecutors=1,
        remoteFS="/home/jenkins/agent",
        labels="docker",
        exclusive=True,
        launcher=jenkins.LAUNCHER_JNLP,
        launcher_params={"webSocket": True},
    )
    secret = ctl.secret(node)
    agent = agents.start(
        "jenkins",
        env={
            "JENKINS_URL": ctl.url,
            "JENKINS_SECRET": secret,
            "JENKINS_AGENT_NAME": node,
            "JENKINS_WEB_SOCKET": "true",
        },
    )
    # No registry is reachable from the inner engine either: give it the image the build runs.
    agent.wait_ready()
    agent.load_busybox()
    wait_until(lambda: not server.get_node_info(node)["offline"], f"{node} to connect")

    token = secrets.token_hex(6)
    script = (
        f"docker run --rm {BUSYBOX} sh -c 'echo inner-$((6 * 7))-{token}'\n"
        "docker info --format 'driver={{.Driver}}'"
    )
    server.create_job("dind", freestyle_config("docker", script))
    server.build_job("dind")
    assert ctl.wait_for_build("dind", 1, timeout=90) == "SUCCESS"
    console = server.get_build_console_output("dind", 1)
    assert f"inner-42-{token}" in console
    assert "driver=overlay2" in console
    assert server.get_build_info("dind", 1)["builtOn"] == node

    start = time.monotonic()
    docker("kill", "--signal", "TERM", agent.name)
    status = docker("wait", agent.name, timeout=30).stdout.strip()
    assert time.monotonic() - start < 10
    assert status == "143"
    wait_until(lambda: server.get_node_info(node)["offline"], f"{node} to go offline", timeout=15)
    logs = agent.logs()
    assert "stopping the Jenkins agent" in logs
    assert "-secret ********" in logs
    assert secret not in logs


def test_agent_exit_stops_the_engine_and_the_container_with_its_status(
    agents: Agents, controller: tuple[Controller, jenkins.Jenkins]
) -> None:
    ctl, server = controller
    node = f"dind-{secrets.token_hex(3)}"
    server.create_node(
        node,
        numExecutors=1,
        remoteFS="/home/jenkins/agent",
        labels="docker",
        launcher=jenkins.LAUNCHER_JNLP,
        launcher_params={"webSocket": True},
    )
    wrong = secrets.token_hex(32)  # the controller refuses it (403): the agent exits 1
    proc = agents.run_to_end(
        "refused",
        env={
            "JENKINS_URL": ctl.url,
            "JENKINS_SECRET": wrong,
            "JENKINS_AGENT_NAME": node,
            "JENKINS_WEB_SOCKET": "true",
        },
    )
    assert proc.returncode == 1
    assert "the Jenkins agent exited with status 1" in proc.stderr
    assert "stopping dockerd" in proc.stderr
    assert wrong not in proc.stdout + proc.stderr
    assert server.get_node_info(node)["offline"]


def test_secret_given_as_a_file_stays_out_of_inspect_environ_and_ps(
    agents: Agents, controller: tuple[Controller, jenkins.Jenkins], tmp_path: Path
) -> None:
    """As agentpool starts agents: JENKINS_SECRET_FILE, the agent run with `-secret @FILE`."""
    ctl, server = controller
    node = f"dind-{secrets.token_hex(3)}"
    server.create_node(
        node,
        numExecutors=1,
        remoteFS="/home/jenkins/agent",
        labels="docker",
        launcher=jenkins.LAUNCHER_JNLP,
        launcher_params={"webSocket": True},
    )
    secret = ctl.secret(node)
    secret_file = tmp_path / "jenkins-secret"
    secret_file.write_text(secret + "\n")
    agent = agents.start(
        "secretfile",
        env={
            "JENKINS_URL": ctl.url,
            "JENKINS_SECRET_FILE": "/run/agentpool/jenkins-secret",
            "JENKINS_AGENT_NAME": node,
            "JENKINS_WEB_SOCKET": "true",
        },
        mounts=[f"{secret_file}:/run/agentpool/jenkins-secret:ro"],
    )
    agent.wait_ready()
    wait_until(lambda: not server.get_node_info(node)["offline"], f"{node} to connect")
    assert secret not in docker("inspect", agent.name).stdout
    seen = agent.exec("sh", "-c", "cat /proc/1/environ; ps -eo args; cat /proc/[0-9]*/environ; true")
    assert secret not in seen
    assert "-secret @/run/agentpool/jenkins-secret" in agent.logs()
    assert secret not in agent.logs()


def test_the_agent_connects_while_the_engine_starts_and_a_builds_docker_waits_for_it(
    agents: Agents, controller: tuple[Controller, jenkins.Jenkins]
) -> None:
    ctl, server = controller
    node = f"dind-{secrets.token_hex(3)}"
    server.create_node(
        node,
        numExecutors=1,
        remoteFS="/home/jenkins/agent",
        labels="docker",
        launcher=jenkins.LAUNCHER_JNLP,
        launcher_params={"webSocket": True},
    )
    # The build is queued before the agent exists: it starts the moment the agent connects.
    script = "ls /run/dind-agent; docker info --format 'driver={{.Driver}}'"
    server.create_job("early", freestyle_config("docker", script))
    server.build_job("early")
    env = {"JENKINS_URL": ctl.url, "JENKINS_SECRET": ctl.secret(node), "JENKINS_AGENT_NAME": node}
    agent = agents.start("early", env={**env, "JENKINS_WEB_SOCKET": "true"})
    assert ctl.wait_for_build("early", 1, timeout=90) == "SUCCESS"
    assert "driver=overlay2" in server.get_build_console_output("early", 1)
    logs = agent.logs()
    # the agent was started before the engine answered: max(engine, agent), not their sum
    assert logs.index("starting the Jenkins agent") < logs.index("inner docker engine ready"), logs
    # the engine started niced (yielding the CPU to the JVM) and is back at 0 once it answers:
    # containers the build starts from now on do not inherit a lower priority
    niceness = agent.exec("sh", "-c", "ps -o ni= -p $(pgrep -d, -x dockerd),$(pgrep -d, -x containerd)")
    assert niceness.split() == ["0", "0"], niceness
