"""The stub agent jar against the controller: handshake, builds, refusals, socket drops.

The jar is built with ``scripts/build-agent-jar``, downloaded from the controller's
``/jnlpJars/agent.jar`` like an inbound-agent container does, and started with
agent.jar's own command line as a real subprocess.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import jenkins
import pytest
import requests

from agentpool_testing.jenkins import Controller, freestyle_config, pipeline_config
from agentpool_testing.jenkins.stub import AGENT_SOURCE, BUILT_JAR

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(scope="session")
def built_jar() -> Path:
    newest_source = max(p.stat().st_mtime for p in AGENT_SOURCE.rglob("*.java"))
    if not BUILT_JAR.exists() or BUILT_JAR.stat().st_mtime < newest_source:
        subprocess.run([str(REPO / "scripts/build-agent-jar")], check=True, capture_output=True)
    return BUILT_JAR


@pytest.fixture
def downloaded_jar(built_jar: Path, controller: Controller, tmp_path: Path) -> Path:
    r = requests.get(controller.url + "jnlpJars/agent.jar", timeout=10)
    r.raise_for_status()
    jar = tmp_path / "agent.jar"
    jar.write_bytes(r.content)
    return jar


Launch = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def launch(downloaded_jar: Path, controller: Controller, tmp_path: Path) -> Iterator[Launch]:
    procs: list[subprocess.Popen[str]] = []

    def start(name: str, secret: str | None = None, *extra: str) -> subprocess.Popen[str]:
        argv = [
            "java",
            "-jar",
            str(downloaded_jar),
            "-url",
            controller.url,
            "-secret",
            secret if secret is not None else controller.secret(name),
            "-name",
            name,
            "-webSocket",
            "-workDir",
            str(tmp_path / name),
            *extra,
        ]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def online(server: jenkins.Jenkins, name: str) -> Callable[[], bool]:
    return lambda: not server.get_node_info(name)["offline"]


def add_node(server: jenkins.Jenkins, name: str, labels: str, remote_fs: Path, executors: int = 1) -> None:
    server.create_node(
        name,
        numExecutors=executors,
        remoteFS=str(remote_fs),
        labels=labels,
        exclusive=True,
        launcher=jenkins.LAUNCHER_JNLP,
        launcher_params={"webSocket": True},
    )


def test_agent_jar_missing_is_a_clear_404(
    controller: Controller, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AGENTPOOL_AGENT_JAR", str(tmp_path / "absent.jar"))
    r = requests.get(controller.url + "jnlpJars/agent.jar", timeout=10)
    assert r.status_code == 404
    assert "scripts/build-agent-jar" in r.text


def test_freestyle_build_runs_on_the_labelled_agent(
    server: jenkins.Jenkins, controller: Controller, launch: Launch, tmp_path: Path
) -> None:
    add_node(server, "agent-1", "docker linux", tmp_path / "agent-1")
    server.create_job(
        "app", freestyle_config("docker && linux", 'echo "hello from $NODE_NAME #$BUILD_NUMBER"\npwd')
    )
    queue_id = server.build_job("app")
    assert "agent-1" in server.get_queue_item(queue_id)["why"]
    agent = launch("agent-1")
    wait_until(online(server, "agent-1"), what="agent-1 to come online")
    assert controller.wait_for_build("app", 1, timeout=60) == "SUCCESS"
    info = server.get_build_info("app", 1)
    assert info["result"] == "SUCCESS" and info["builtOn"] == "agent-1" and info["building"] is False
    console = server.get_build_console_output("app", 1)
    workspace = tmp_path / "agent-1" / "workspace" / "app"
    assert "Building remotely on agent-1 (docker linux) in workspace " + str(workspace) in console
    assert "+ echo hello from agent-1 #1\nhello from agent-1 #1\n" in console
    assert f"+ pwd\n{workspace}\n" in console
    assert console.endswith("Finished: SUCCESS\n")
    left = server.get_queue_item(queue_id)
    assert left["executable"] == {
        "_class": "hudson.model.FreeStyleBuild",
        "number": 1,
        "url": controller.url + "job/app/1/",
    }
    assert agent.poll() is None


def test_failing_step_fails_the_build(
    server: jenkins.Jenkins, controller: Controller, launch: Launch, tmp_path: Path
) -> None:
    add_node(server, "agent-1", "docker", tmp_path / "agent-1")
    launch("agent-1")
    wait_until(online(server, "agent-1"), what="agent-1 to come online")
    server.create_job("bad", freestyle_config("docker", "echo before\nfalse\necho never"))
    server.build_job("bad")
    assert controller.wait_for_build("bad", 1, timeout=60) == "FAILURE"
    console = server.get_build_console_output("bad", 1)
    assert "+ false\n" in console and "never" not in console.replace("echo never", "")
    assert "Build step 'Execute shell' marked build as failure\nFinished: FAILURE\n" in console


def test_busy_agent_is_visible_to_a_provisioner(
    server: jenkins.Jenkins, controller: Controller, launch: Launch, tmp_path: Path, http: requests.Session
) -> None:
    add_node(server, "agent-1", "docker", tmp_path / "agent-1")
    launch("agent-1")
    wait_until(online(server, "agent-1"), what="agent-1 to come online")
    marker = tmp_path / "release"
    server.create_job("slow", freestyle_config("docker", f"while [ ! -e {marker} ]; do sleep 0.1; done"))
    server.build_job("slow")
    tree = (
        "computer[displayName,offline,temporarilyOffline,idle,"
        "executors[idle,currentExecutable[url]],assignedLabels[name]]"
    )

    def busy() -> bool:
        computers = http.get(controller.url + "computer/api/json", params={"tree": tree}).json()["computer"]
        agent = next(c for c in computers if c["displayName"] == "agent-1")
        return agent["idle"] is False

    wait_until(busy, what="agent-1 to be busy")
    computers = http.get(controller.url + "computer/api/json", params={"tree": tree}).json()["computer"]
    agent = next(c for c in computers if c["displayName"] == "agent-1")
    assert agent["executors"] == [
        {
            "currentExecutable": {
                "_class": "hudson.model.FreeStyleBuild",
                "url": controller.url + "job/slow/1/",
            },
            "idle": False,
        }
    ]
    assert server.get_running_builds() == [
        {"name": "slow", "number": 1, "url": controller.url + "job/slow/1/", "node": "agent-1", "executor": 0}
    ]
    # a second build of the same job is blocked behind the running one
    queue_id = server.build_job("slow")
    item = server.get_queue_item(queue_id)
    assert item["_class"] == "hudson.model.Queue$BlockedItem"
    assert item["why"] == "Build #1 is already in progress (ETA: N/A)"
    marker.touch()
    assert controller.wait_for_build("slow", 1, timeout=30) == "SUCCESS"
    assert controller.wait_for_build("slow", 2, timeout=30) == "SUCCESS"


def test_pipeline_runs_node_blocks_on_the_agent(
    server: jenkins.Jenkins, controller: Controller, launch: Launch, tmp_path: Path, http: requests.Session
) -> None:
    add_node(server, "agent-1", "docker linux", tmp_path / "agent-1")
    launch("agent-1")
    wait_until(online(server, "agent-1"), what="agent-1 to come online")
    script = """
stage('Build') {
    node('docker && linux') {
        sh '''echo "stage $STAGE_NAME on $NODE_NAME"'''
    }
}
node("linux") { sh "echo second block" }
"""
    marker = tmp_path / "release"
    script = script.replace("second block", f"second block; while [ ! -e {marker} ]; do sleep 0.1; done")
    server.create_job("p", pipeline_config(script))
    server.build_job("p")

    def executor() -> object:
        return server.get_node_info("agent-1", depth=1)["executors"][0]["currentExecutable"]

    wait_until(
        lambda: executor() is not None and "second block" in controller.console("p", 1), what="block 2"
    )
    placeholder = "org.jenkinsci.plugins.workflow.support.steps.ExecutorStepExecution$PlaceholderTask$PlaceholderExecutable"
    assert executor() == {"_class": placeholder, "number": 1, "url": controller.url + "job/p/1/"}
    fields = "number,displayName,fullDisplayName,estimatedDuration,timestamp,url"
    tree = f"executors[currentExecutable[{fields}]]"
    answer = http.get(controller.url + "computer/agent-1/api/json", params={"tree": tree}, timeout=10).json()
    [current] = [e["currentExecutable"] for e in answer["executors"]]
    started = current.pop("timestamp")
    assert current == {
        "_class": placeholder,
        "number": 1,
        "displayName": "#1",
        "fullDisplayName": "p #1",
        "estimatedDuration": -1,  # no earlier successful build
        "url": controller.url + "job/p/1/",
    }
    assert started == server.get_build_info("p", 1)["timestamp"]
    marker.touch()
    assert controller.wait_for_build("p", 1, timeout=60) == "SUCCESS"
    console = server.get_build_console_output("p", 1)
    assert "stage Build on agent-1" in console and "second block" in console
    assert console.endswith("Finished: SUCCESS\n")
    assert server.get_build_info("p", 1)["_class"] == "org.jenkinsci.plugins.workflow.job.WorkflowRun"


def test_wrong_secret_is_refused_with_403(server: jenkins.Jenkins, launch: Launch, tmp_path: Path) -> None:
    add_node(server, "agent-1", "docker", tmp_path / "agent-1")
    proc = launch("agent-1", "0" * 64)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "HTTP 403" in out
    assert server.get_node_info("agent-1")["offline"] is True


def test_unknown_name_is_refused_with_400(launch: Launch) -> None:
    proc = launch("ghost")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "HTTP 400" in out and "no such agent" in out


def test_second_agent_with_the_same_name_is_refused(
    server: jenkins.Jenkins, launch: Launch, tmp_path: Path
) -> None:
    add_node(server, "agent-1", "docker", tmp_path / "agent-1")
    first = launch("agent-1")
    wait_until(online(server, "agent-1"), what="agent-1 to come online")
    second = launch("agent-1")
    out, _ = second.communicate(timeout=60)
    assert second.returncode != 0 and "HTTP 400" in out
    assert first.poll() is None


def test_dropped_socket_fails_the_build_and_the_agent_exits(
    server: jenkins.Jenkins, controller: Controller, launch: Launch, tmp_path: Path
) -> None:
    add_node(server, "agent-1", "docker", tmp_path / "agent-1")
    agent = launch("agent-1")
    wait_until(online(server, "agent-1"), what="agent-1 to come online")
    server.create_job("long", freestyle_config("docker", "echo started\nsleep 60"))
    server.build_job("long")
    wait_until(
        lambda: (
            "started" in controller.console("long", 1) if controller.jenkins.jobs["long"].builds else False
        )
    )
    controller.faults.drop_agents()
    assert controller.wait_for_build("long", 1, timeout=30) == "FAILURE"
    assert agent.wait(timeout=30) != 0
    info = server.get_node_info("agent-1")
    assert info["offline"] is True
    assert info["offlineCause"] == {"_class": "hudson.slaves.OfflineCause$ChannelTermination"}


def test_deleting_a_connected_node_disconnects_its_agent(
    server: jenkins.Jenkins, launch: Launch, tmp_path: Path
) -> None:
    add_node(server, "agent-1", "docker", tmp_path / "agent-1")
    agent = launch("agent-1")
    wait_until(online(server, "agent-1"), what="agent-1 to come online")
    server.disable_node("agent-1", "going away")
    info = server.get_node_info("agent-1")
    assert info["temporarilyOffline"] is True and info["offlineCauseReason"] == "going away"
    server.enable_node("agent-1")
    info = server.get_node_info("agent-1")
    assert info["temporarilyOffline"] is False and info["offline"] is False
    server.delete_node("agent-1")
    assert agent.wait(timeout=30) != 0


def test_stopping_a_build_kills_its_step_on_the_agent(
    server: jenkins.Jenkins, controller: Controller, launch: Launch, tmp_path: Path
) -> None:
    add_node(server, "agent-1", "docker", tmp_path / "agent-1")
    agent = launch("agent-1")
    wait_until(online(server, "agent-1"), what="agent-1 to come online")
    proof = tmp_path / "still-running"
    server.create_job("long", freestyle_config("docker", f"echo started\nsleep 5\ntouch {proof}"))
    server.build_job("long")
    wait_until(
        lambda: (
            "+ sleep 5" in controller.console("long", 1) if server.get_job_info("long")["builds"] else False
        )
    )
    server.stop_build("long", 1)
    assert controller.wait_for_build("long", 1, timeout=30) == "ABORTED"
    assert "Aborted by admin\n" in server.get_build_console_output("long", 1)
    assert server.get_node_info("agent-1", depth=1)["executors"][0]["idle"] is True
    time.sleep(6)
    assert not proof.exists()
    assert agent.poll() is None
