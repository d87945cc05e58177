"""kill -9 at random points of launches, builds and reaps of a one-shot pool (every build
launches an agent), then a restart: no duplicate node, no one-shot agent running two builds,
nothing leaked, no build killed. The figures are printed (docs/benchmarks.md is for speed)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import docker
import docker.errors
import jenkins
import pytest

from agentpool.model import LABEL_INSTANCE
from agentpool_testing.jenkins import Controller
from agentpool_testing.jobs import freestyle_xml
from tests.waiting import wait_for

from .conftest import NOTHING, REPO, leftovers, result
from .team_controller import build_noop_image, service_account, write_config

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("cleanup")]

TRIALS = int(os.environ.get("AGENTPOOL_KILL_TRIALS", "20"))
SEED = int(os.environ.get("AGENTPOOL_KILL_SEED", "10"))


def test_kill_9_at_random_points_of_launches_and_reaps(
    controller: Controller,
    jenkins_client: jenkins.Jenkins,
    docker_client: docker.DockerClient,
    instance: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    build_noop_image(docker_client)
    user, token = service_account(controller)
    monkeypatch.setenv("AGENTPOOL_SVC_TOKEN", token)
    path = write_config(
        tmp_path / "a.yaml",
        controller,
        instance,
        user,
        "AGENTPOOL_SVC_TOKEN",
        poll_interval="0.5s",
        one_shot=True,
        idle_timeout="2s",
        launch_timeout="30s",
    )
    log = tmp_path / "daemon.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    label = f"{LABEL_INSTANCE}={instance}"
    rng = random.Random(SEED)

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "agentpool", "run", "--config", str(path)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log.open("ab"),
        )

    stop = threading.Event()
    most_nodes = 0  # our nodes at once, at most
    nodes_seen: set[str] = set()

    def watch() -> None:
        nonlocal most_nodes
        while not stop.is_set():
            ours = {n["name"] for n in controller.nodes() if n["name"].startswith(instance + "-")}
            most_nodes = max(most_nodes, len(ours))
            nodes_seen.update(ours)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()

    def settled() -> bool:
        try:
            return leftovers(docker_client, jenkins_client, instance) == NOTHING
        except docker.errors.NotFound:  # listed, then removed before the SDK inspected it
            return False

    ran_on: list[str] = []
    figures: list[dict[str, object]] = []
    daemon = start()
    try:
        for trial in range(TRIALS):
            job = f"trial-{trial}"
            jenkins_client.create_job(job, freestyle_xml("docker", 'echo "ran on $NODE_NAME"; sleep 1'))
            before = set(nodes_seen)
            log_offset = log.stat().st_size if log.exists() else 0
            jenkins_client.build_job(job)
            kill_at = rng.uniform(0.0, 6.0)
            time.sleep(kill_at)
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(10)
            daemon = start()
            began = time.monotonic()
            wait_for(f"trial {trial}: the build", lambda j=job: result(jenkins_client, j), 120, 0.2)  # type: ignore[misc]
            wait_for(f"trial {trial}: its agent reaped", settled, 120, 0.2)
            outcome = result(jenkins_client, job)
            console = str(jenkins_client.get_build_console_output(job, 1))
            ran_on.append(console.split("ran on ")[1].split()[0])
            figures.append(
                {
                    "trial": trial,
                    "kill_at": round(kill_at, 2),
                    "result": outcome,
                    "nodes_made": len(nodes_seen - before),
                    "recovered_in": round(time.monotonic() - began, 1),
                }
            )
            if figures[-1]["recovered_in"] > 20:  # type: ignore[operator]
                with log.open("rb") as text:
                    text.seek(log_offset)
                    decisions = [
                        ln for ln in text.read().decode(errors="replace").splitlines() if "reason" in ln
                    ]
                figures[-1]["decisions"] = [ln[-240:] for ln in decisions]
            assert outcome == "SUCCESS", (trial, console)
            assert not docker_client.containers.list(all=True, filters={"label": label}, ignore_removed=True)
    finally:
        stop.set()
        watcher.join(5)
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()
        print(json.dumps({"seed": SEED, "trials": figures, "most_nodes_at_once": most_nodes}, indent=None))
    assert most_nodes <= 1, most_nodes  # one build at a time: never a second node for it
    assert len(set(ran_on)) == len(ran_on), ran_on  # no one-shot agent ran two builds
    assert all(name.startswith(f"{instance}-dind-") for name in ran_on)
    assert leftovers(docker_client, jenkins_client, instance) == NOTHING
    assert controller.test_token not in log.read_text(errors="replace")  # type: ignore[attr-defined]
