"""agentpool in a team's real controller (issue 10): a busy static agent that hides a build's
label, look-alike and neighbour nodes, a reload that would hide agents, a service account
without Job/Read, an admin racing a reap. Real engine, the controller over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import docker
import jenkins
import pytest
import requests

from agentpool.config import load_config
from agentpool.daemon import Engine
from agentpool_testing.jenkins import Controller
from agentpool_testing.jobs import freestyle_xml, pipeline_xml
from tests.waiting import wait_for

from .conftest import NOTHING, REPO, drive, leftovers, result, run_cli
from .team_controller import build_noop_image, node_names, service_account, static_agent, write_config

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("cleanup")]


@pytest.fixture(scope="session")
def noop_image(docker_client: docker.DockerClient) -> str:
    return build_noop_image(docker_client)


@pytest.fixture
def svc(controller: Controller, monkeypatch: pytest.MonkeyPatch) -> str:
    """A service account with exactly the README's permissions (no Overall/Administer)."""
    user, token = service_account(controller)
    monkeypatch.setenv("AGENTPOOL_SVC_TOKEN", token)
    return user


def console(client: jenkins.Jenkins, job: str, number: int = 1) -> str:
    return str(client.get_build_console_output(job, number))


def test_pipeline_behind_one_busy_static_node_gets_an_agent_of_the_right_pool(
    controller: Controller,
    jenkins_client: jenkins.Jenkins,
    docker_client: docker.DockerClient,
    instance: str,
    svc: str,
    noop_image: str,
    tmp_path: Path,
) -> None:
    # pools: `gpu` has a label static-1 lacks, so it cannot be the expression's only match
    path = write_config(
        tmp_path / "a.yaml", controller, instance, svc, "AGENTPOOL_SVC_TOKEN", labels=["docker", "linux"]
    )
    text = path.read_text() + (
        f"  - {{name: gpu, labels: [docker, gpu], image: '{noop_image}', security: capabilities}}\n"
    )
    path.write_text(text)
    engine = Engine(load_config(path))
    with static_agent(controller, jenkins_client, "static-1", "docker linux ubuntu-22", tmp_path / "static"):
        jenkins_client.create_job("hog", freestyle_xml("ubuntu-22", "sleep 25; echo hog-done"))
        jenkins_client.build_job("hog")
        wait_for("hog to run on static-1", lambda: any(n["busy"] for n in controller.nodes()), 20, 0.2)
        jenkins_client.create_job("pipe", pipeline_xml("docker", 'echo "ran on $NODE_NAME"'))
        jenkins_client.build_job("pipe")
        wait_for(
            "Jenkins to name static-1 instead of the label",
            lambda: any("‘static-1’" in i["why"] for i in controller.queue_items()),
            20,
            0.2,
        )
        inferred: list[str] = []

        def done() -> bool:
            status = engine.status()
            inferred.extend(status["labels_inferred"].values())
            return result(jenkins_client, "pipe") is not None

        drive(engine, done, "the Pipeline build to run", timeout=90)
        assert result(jenkins_client, "pipe") == "SUCCESS"
        ran_on = console(jenkins_client, "pipe").split("ran on ")[1].split()[0]
        assert ran_on.startswith(f"{instance}-dind-"), ran_on  # not gpu, not the static node
        assert inferred and "static-1" in inferred[0]
        assert "POST /scriptText" in controller.request_counts  # tried once, refused (403)
        assert result(jenkins_client, "hog") in (None, "SUCCESS")  # the static node's build goes on
        drive(engine, lambda: not engine.memory.agents, "the agent to be reaped", timeout=60)
        assert wait_for("hog to finish", lambda: result(jenkins_client, "hog"), 30) == "SUCCESS"
        assert any(n["name"] == "static-1" for n in controller.nodes())
    assert leftovers(docker_client, jenkins_client, instance) == NOTHING


def test_busy_look_alike_and_a_second_daemons_nodes_are_never_touched(
    controller: Controller,
    jenkins_client: jenkins.Jenkins,
    docker_client: docker.DockerClient,
    instance: str,
    svc: str,
    noop_image: str,
    tmp_path: Path,
) -> None:
    engine = Engine(
        load_config(write_config(tmp_path / "a.yaml", controller, instance, svc, "AGENTPOOL_SVC_TOKEN"))
    )
    me = engine.memory.daemon_id
    look_alike = f"{instance}-dind-a1a1a1"  # our name pattern, connected from elsewhere, busy
    theirs = f"{instance}-dind-b2b2b2"  # another daemon at our instance: never connected
    ours_left = f"{instance}-dind-c3c3c3"  # ours, left by an earlier run without its container
    jenkins_client.create_node(
        theirs,
        numExecutors=1,
        nodeDescription=f"agentpool:{instance}:other:b1 x",
        labels="docker linux",
        exclusive=True,
        launcher=jenkins.LAUNCHER_JNLP,
        launcher_params={"webSocket": True},
    )
    jenkins_client.create_node(
        ours_left,
        numExecutors=1,
        nodeDescription=f"agentpool:{instance}:{me}:old x",
        labels="docker linux",
        exclusive=True,
        launcher=jenkins.LAUNCHER_JNLP,
        launcher_params={"webSocket": True},
    )
    with static_agent(
        controller, jenkins_client, look_alike, "docker linux", tmp_path / "look", exclusive=True
    ):
        jenkins_client.create_job("busy", freestyle_xml(look_alike, "sleep 75; echo survived"))
        jenkins_client.build_job("busy")
        wait_for("the look-alike to be busy", lambda: any(n["busy"] for n in controller.nodes()), 20, 0.2)
        first = engine.run_pass()
        removed = [a.name for a in first.plan.actions if getattr(a, "kind", None) is not None]
        assert removed == [ours_left]  # at once: no launch of this run can be in flight
        assert engine.status()["neighbours"] == ["other"]
        # beyond the orphan grace (60 s): nothing of the look-alike's or the neighbour's is touched
        deadline = time.monotonic() + 66
        while time.monotonic() < deadline:
            report = engine.run_pass()
            assert report.plan.actions == (), report.plan.actions
            time.sleep(1)
        assert {look_alike, theirs} <= node_names(controller, instance)
        assert ours_left not in node_names(controller, instance)
        assert wait_for("the look-alike's build", lambda: result(jenkins_client, "busy"), 30) == "SUCCESS"
        assert "survived" in console(jenkins_client, "busy")
    jenkins_client.delete_node(theirs)
    jenkins_client.delete_node(look_alike)


def test_sighup_changing_instance_kills_no_build(
    controller: Controller,
    jenkins_client: jenkins.Jenkins,
    docker_client: docker.DockerClient,
    instance: str,
    svc: str,
    noop_image: str,
    tmp_path: Path,
) -> None:
    path = write_config(tmp_path / "a.yaml", controller, instance, svc, "AGENTPOOL_SVC_TOKEN")
    log = tmp_path / "daemon.log"
    daemon = subprocess.Popen(
        [sys.executable, "-m", "agentpool", "run", "--config", str(path)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
    )
    try:
        jenkins_client.create_job("long", freestyle_xml("docker", "sleep 12; echo survived"))
        jenkins_client.build_job("long")
        wait_for("the build to run on an agent", lambda: any(n["busy"] for n in controller.nodes()), 60, 0.2)
        path.write_text(path.read_text().replace(f"instance: {instance}", f"instance: {instance}x"))
        daemon.send_signal(signal.SIGHUP)
        wait_for("the reload to be refused", lambda: "reload refused" in log.read_text(), 15, 0.2)
        assert "instance changed" in log.read_text() and "restart agentpool to apply it" in log.read_text()
        assert wait_for("the build to finish", lambda: result(jenkins_client, "long"), 60) == "SUCCESS"
        assert "survived" in console(jenkins_client, "long")
        wait_for(
            "the agent to be reaped",
            lambda: leftovers(docker_client, jenkins_client, instance) == NOTHING,
            60,
        )
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()


def test_doctor_reports_an_account_without_job_read(
    controller: Controller, jenkins_client: jenkins.Jenkins, instance: str, noop_image: str, tmp_path: Path
) -> None:
    jenkins_client.create_job("app", freestyle_xml("docker", "true"))
    user, token = service_account(
        controller, ["Overall/Read", "Agent/Create", "Agent/Connect", "Agent/Disconnect", "Agent/Delete"]
    )
    path = write_config(tmp_path / "a.yaml", controller, instance, user, "AGENTPOOL_NOJOB_TOKEN")
    doctor = run_cli("doctor", "--config", str(path), env={"AGENTPOOL_NOJOB_TOKEN": token})
    print(doctor.stdout)
    assert doctor.returncode == 1
    [line] = [ln for ln in doctor.stdout.splitlines() if "jenkins permission Job/Read" in ln]
    assert line.startswith("FAIL") and "queue looks empty" in line and "grant jenkins.user Job/Read" in line
    assert token not in doctor.stdout + doctor.stderr
    # the same user with Job/Read passes that line
    controller.add_user(
        user,
        token,
        ["Overall/Read", "Job/Read", "Agent/Create", "Agent/Connect", "Agent/Disconnect", "Agent/Delete"],
    )
    doctor = run_cli("doctor", "--config", str(path), env={"AGENTPOOL_NOJOB_TOKEN": token})
    [line] = [ln for ln in doctor.stdout.splitlines() if "jenkins permission Job/Read" in ln]
    assert line.startswith("OK")


def test_an_admin_racing_the_reap_never_gets_an_accepting_node_deleted(
    controller: Controller,
    jenkins_client: jenkins.Jenkins,
    docker_client: docker.DockerClient,
    instance: str,
    svc: str,
    noop_image: str,
    tmp_path: Path,
) -> None:
    """A maintenance bot takes our idle node offline with toggleOffline just as agentpool's reap
    starts (every request slowed down by 0.2 s, so the bot's toggle lands between the reap's
    read and its own call). A toggle of agentpool's own would bring the node back online and
    delete it accepting; a watcher sampling the nodes every few milliseconds checks that each
    node was offline when it disappeared."""
    engine = Engine(
        load_config(
            write_config(
                tmp_path / "a.yaml", controller, instance, svc, "AGENTPOOL_SVC_TOKEN", idle_timeout="1s"
            )
        )
    )
    jenkins_client.create_job("race", freestyle_xml("docker", "echo raced"))
    stop = threading.Event()
    last_state: dict[str, bool] = {}  # node -> temporarily offline, last seen
    deleted_accepting: list[str] = []
    toggles: list[str] = []

    def watcher() -> None:
        while not stop.is_set():
            now = {
                n["name"]: n["temporarily_offline"]
                for n in controller.nodes()
                if n["name"].startswith(instance)
            }
            for name, offline in list(last_state.items()):
                if name not in now:
                    if not offline:
                        deleted_accepting.append(name)
                    del last_state[name]
            last_state.update(now)
            time.sleep(0.005)

    def bot() -> None:
        """Takes a node offline the moment a reap starts reading it (once per node)."""
        admin = jenkins.Jenkins(
            controller.url,
            username="admin",
            password=controller.test_token,  # type: ignore[attr-defined]
            timeout=10,
        )
        key = "GET /computer/{name}/api/json"
        seen = controller.request_counts.get(key, 0)
        while not stop.is_set():
            count = controller.request_counts.get(key, 0)
            if count > seen:
                seen = count
                for n in controller.nodes():
                    ours = n["name"].startswith(instance) and n["name"] not in toggles
                    if ours and n["connected"] and not n["temporarily_offline"] and not n["busy"]:
                        url = f"{controller.url}computer/{n['name']}/toggleOffline?offlineMessage=maintenance"
                        try:
                            admin.jenkins_open(requests.Request("POST", url))
                            toggles.append(n["name"])
                        except jenkins.JenkinsException:
                            pass  # deleted meanwhile
            time.sleep(0.002)

    threads = [threading.Thread(target=f, daemon=True) for f in (watcher, bot)]
    for thread in threads:
        thread.start()
    controller.faults.latency(0.2)
    try:
        deadline = time.monotonic() + 40
        builds = 0
        while time.monotonic() < deadline:
            if not jenkins_client.get_queue_info() and builds < 12:
                jenkins_client.build_job("race")
                builds += 1
            engine.run_pass()
            time.sleep(0.5)
    finally:
        controller.faults.latency(0)
        stop.set()
        for thread in threads:
            thread.join(10)
    assert toggles, "the bot never raced a reap"
    assert deleted_accepting == []
    numbers = [b["number"] for b in jenkins_client.get_job_info("race")["builds"]]
    drive(engine, lambda: all(result(jenkins_client, "race", n) for n in numbers), "the builds", timeout=90)
    assert {result(jenkins_client, "race", n) for n in numbers} == {"SUCCESS"}
    drive(
        engine,
        lambda: leftovers(docker_client, jenkins_client, instance) == NOTHING,
        "nothing left",
        timeout=60,
    )
    print(json.dumps({"builds": len(numbers), "bot toggles": len(toggles)}))
