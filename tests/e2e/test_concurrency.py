"""A loop that never stalls, against the real engine and the controller over HTTP: launches run
in parallel up to the host's bound, a mass reap of agents deaf to SIGTERM does not delay a new
agent of another pool, SIGTERM during launches exits 0 and the next start adopts them, and no
action is ever issued twice for one agent (read from the decision log).

The agents run the no-op image (a Jenkins agent without an inner engine): these tests are about
agentpool's own scheduling, and a burst of dind agents would measure the two CPUs instead.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import jenkins
import pytest

from agentpool.config import Config, load_config
from agentpool.daemon import Engine
from agentpool_testing.jenkins import Controller
from agentpool_testing.jobs import freestyle_xml
from agentpool_testing.noop_image import build_noop_image
from tests.waiting import wait_for

from .conftest import NOTHING, REPO, build_info, result

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("cleanup")]


@pytest.fixture(scope="module")
def images() -> Iterator[dict[str, str]]:
    client = docker.from_env()
    try:
        yield {"noop": build_noop_image(client), "deaf": build_noop_image(client, sigterm_deaf=True)}
    finally:
        client.close()


def write_config(
    path: Path, controller: Controller, instance: str, pools: list[dict[str, Any]], parallel: int
) -> Config:
    lines = [
        "jenkins:",
        f"  url: {controller.url}",
        "  user: admin",
        "  token_env: AGENTPOOL_TEST_TOKEN",
        f"  agent_url: {controller.url}",
        f"instance: {instance}",
        "poll_interval: 1s",
        "metrics: {listen: null}",
        "docker_hosts:",
        "  - name: local",
        f"    url: {os.environ.get('DOCKER_HOST', 'unix:///var/run/docker.sock')}",
        f"    max_parallel_launches: {parallel}",
        "pools:",
    ]
    for pool in pools:
        settings = {
            "security": "capabilities",
            "cap_drop": ["SYS_RESOURCE"],
            "launch_timeout": "60s",
            "max_agents": 10,
            **pool,
        }
        lines.append(f"  - name: {settings.pop('name')}")
        for key, value in settings.items():
            lines.append(f"    {key}: {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return load_config(path)


@pytest.fixture
def token_env(controller: Controller, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTPOOL_TEST_TOKEN", controller.test_token)  # type: ignore[attr-defined]


def loop(engine: Engine, done: Any, what: str, timeout: float) -> None:
    """The daemon's loop in-process: a pass a second that never waits for its actions."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        started = time.monotonic()
        engine.run_pass(wait=False)
        time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))


def containers(client: docker.DockerClient, instance: str) -> list[str]:
    """Names of this instance's containers (the low-level list: one removed meanwhile is no error)."""
    found = client.api.containers(all=True, filters={"label": f"agentpool.instance={instance}"})
    return [c["Names"][0].lstrip("/") for c in found]


def left(client: docker.DockerClient, jenkins_client: jenkins.Jenkins, instance: str) -> dict[str, list[str]]:
    """What ``leftovers`` lists, read so that removals going on meanwhile are no error."""
    volumes = client.api.volumes(filters={"label": f"agentpool.instance={instance}"})["Volumes"] or []
    return {
        "containers": containers(client, instance),
        "volumes": [v["Name"] for v in volumes],
        "nodes": [n["name"] for n in jenkins_client.get_nodes() if n["name"].startswith(instance + "-")],
    }


def decisions(records: list[logging.LogRecord], event: str) -> Counter[str]:
    return Counter(str(getattr(r, "agent", "")) for r in records if getattr(r, "event", None) == event)


@pytest.mark.usefixtures("token_env")
def test_ten_items_are_served_with_at_most_the_hosts_parallelism_and_nothing_twice(
    controller: Controller,
    jenkins_client: jenkins.Jenkins,
    docker_client: docker.DockerClient,
    instance: str,
    images: dict[str, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pools = [{"name": "noop", "labels": ["noop"], "image": images["noop"], "idle_timeout": "3s"}]
    engine = Engine(write_config(tmp_path / "agentpool.yaml", controller, instance, pools, parallel=3))
    for i in range(10):
        jenkins_client.create_job(f"j{i}", freestyle_xml("noop", "true"))
        jenkins_client.build_job(f"j{i}")
    wait_for("ten queued items", lambda: len(jenkins_client.get_queue_info()) == 10, 10, 0.1)

    def all_built() -> bool:
        return all(build_info(jenkins_client, f"j{i}") for i in range(10))

    since = int(time.time()) - 1
    with caplog.at_level(logging.INFO, logger="agentpool"):
        try:
            first = engine.run_pass(wait=False)
            assert len(first.plan.actions) == 10  # one pass issues all ten launches
            loop(engine, all_built, "ten builds", 120)
            assert [result(jenkins_client, f"j{i}") for i in range(10)] == ["SUCCESS"] * 10
            loop(engine, lambda: left(docker_client, jenkins_client, instance) == NOTHING, "reaps", 60)
            assert engine.finish(30)
        finally:
            engine.close()
    # Every container the engine created for this instance, from its own event log (polling
    # the list can miss one between two looks).
    events = docker_client.events(
        since=since,
        until=int(time.time()) + 1,
        decode=True,
        filters={"type": "container", "event": "create", "label": f"agentpool.instance={instance}"},
    )
    seen = {e["Actor"]["Attributes"]["name"] for e in events}
    high_water = engine.executor.launch_stats()["local"].high_water
    assert high_water == 3, high_water  # ten launches, three at a time
    provisioned, reaped = decisions(caplog.records, "provisioned"), decisions(caplog.records, "reaped")
    assert len(provisioned) == 10 and set(provisioned.values()) == {1}, provisioned
    assert set(reaped) == set(provisioned) == seen and set(reaped.values()) == {1}, reaped
    assert not [r for r in caplog.records if "refused: an action on it is still in flight" in r.getMessage()]


@pytest.mark.usefixtures("token_env")
def test_a_reap_of_sigterm_deaf_agents_does_not_delay_a_new_agent_of_another_pool(
    controller: Controller,
    jenkins_client: jenkins.Jenkins,
    docker_client: docker.DockerClient,
    instance: str,
    images: dict[str, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    deaf_agents = 4
    pools = [
        {
            "name": "deaf",
            "labels": ["deaf"],
            "image": images["deaf"],
            "idle_timeout": "1s",
            "stop_timeout": "10s",
        },
        {"name": "fresh", "labels": ["fresh"], "image": images["noop"]},
    ]
    engine = Engine(write_config(tmp_path / "agentpool.yaml", controller, instance, pools, parallel=4))
    for i in range(deaf_agents):
        jenkins_client.create_job(f"d{i}", freestyle_xml("deaf", "true"))
        jenkins_client.build_job(f"d{i}")
    jenkins_client.create_job("new", freestyle_xml("fresh", "true"))
    try:
        with caplog.at_level(logging.INFO, logger="agentpool"):
            loop(
                engine, lambda: all(result(jenkins_client, f"d{i}") for i in range(deaf_agents)), "builds", 90
            )
            loop(engine, lambda: len(engine.executor.in_flight().reaping) >= deaf_agents, "the reaps", 30)
            reaps_started = time.monotonic()
            jenkins_client.build_job("new")
            queued = time.monotonic()
            loop(engine, lambda: result(jenkins_client, "new"), "the new pool's build", 60)
            waited = time.monotonic() - queued
            in_flight = engine.executor.in_flight()
            # the deaf containers are still being stopped (10 s grace each) while it was served
            assert in_flight.reaping, "the reaps ended before the new build: nothing was shown"
            assert waited < 8.0, waited
            loop(engine, lambda: not engine.executor.in_flight().reaping, "the reaps to end", 40)
            assert time.monotonic() - reaps_started >= 9.0  # they did take their grace
            assert engine.finish(30)
    finally:
        engine.close()
    reaped = decisions(caplog.records, "reaped")
    assert len(reaped) == deaf_agents and set(reaped.values()) == {1}, reaped


@pytest.mark.usefixtures("token_env")
def test_sigterm_during_launches_exits_0_and_the_next_start_adopts_them_all(
    controller: Controller,
    jenkins_client: jenkins.Jenkins,
    docker_client: docker.DockerClient,
    instance: str,
    images: dict[str, str],
    tmp_path: Path,
) -> None:
    pools = [{"name": "noop", "labels": ["noop"], "image": images["noop"], "idle_timeout": "3s"}]
    config_path = tmp_path / "agentpool.yaml"
    write_config(config_path, controller, instance, pools, parallel=2)
    log_path = tmp_path / "daemon.log"

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "agentpool", "--log-format", "json", "run", "--config", str(config_path)],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL,
            stderr=log_path.open("ab"),
        )

    for i in range(6):
        jenkins_client.create_job(f"j{i}", freestyle_xml("noop", "sleep 2"))
        jenkins_client.build_job(f"j{i}")
    daemon = start()
    try:
        wait_for("a first container", lambda: containers(docker_client, instance), 60, 0.05)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
        running = containers(docker_client, instance)
        nodes = left(docker_client, jenkins_client, instance)["nodes"]
        # every launch issued before SIGTERM ran to its end: a node and a container each
        assert sorted(running) == sorted(nodes) and len(nodes) == 6, (running, nodes)
        daemon = start()
        wait_for("six builds", lambda: all(result(jenkins_client, f"j{i}") for i in range(6)), 90)
        assert [result(jenkins_client, f"j{i}") for i in range(6)] == ["SUCCESS"] * 6
        wait_for("nothing left", lambda: left(docker_client, jenkins_client, instance) == NOTHING, 60)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    provisioned = Counter(line["agent"] for line in lines if line.get("event") == "provisioned")
    reaped = Counter(line["agent"] for line in lines if line.get("event") == "reaped")
    assert len(provisioned) == 6 and set(provisioned.values()) == {1}, provisioned  # none after restart
    assert set(reaped) == set(provisioned) and set(reaped.values()) == {1}, reaped
    assert not [line for line in lines if line.get("event") == "removed"]  # no orphan: all adopted
    assert controller.test_token not in log_path.read_text()  # type: ignore[attr-defined]
