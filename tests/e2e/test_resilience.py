"""What must not go wrong: broken images, Jenkins outages, a killed daemon, leftovers, and the
warm layer cache of `docker_volume: reuse`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import docker
import jenkins
import pytest

from agentpool.daemon import Engine
from agentpool.model import LABEL_AGENT, LABEL_INSTANCE, LABEL_POOL, UnservedReason
from agentpool_testing.artifacts import ArtifactServer
from agentpool_testing.jenkins import Controller
from agentpool_testing.jobs import freestyle_xml
from tests.waiting import wait_for

from .conftest import (
    BUSYBOX,
    NOTHING,
    REPO,
    ConfigFactory,
    ImageFactory,
    docker_script,
    drive,
    leftovers,
    result,
)

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("cleanup")]


def test_agent_that_never_connects_is_removed_and_the_pool_backs_off(
    controller: Controller,
    jenkins_client: jenkins.Jenkins,
    make_config: ConfigFactory,
    docker_client: docker.DockerClient,
    instance: str,
    build_image: ImageFactory,
) -> None:
    silent_image = build_image("silent", 'CMD ["sleep", "3600"]')
    engine = Engine(make_config(image=silent_image, launch_timeout="3s", max_agents=2))
    jenkins_client.create_job("waits", freestyle_xml("docker", "true"))
    jenkins_client.build_job("waits")
    names: set[str] = set()
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        engine.run_pass()
        names.update(engine.memory.agents)
        time.sleep(1)
    failures = engine.memory.pools["dind"].consecutive_failures
    # 40 s with a 3 s launch timeout would allow ~10 attempts without backoff
    assert 2 <= len(names) <= 4, names
    assert failures >= 2
    # the failures are the host's for this pool: it cools down, and with no other host the pool waits
    assert engine.memory.cooldowns[("local", "dind")].until > time.time()
    jenkins_client.cancel_queue(jenkins_client.get_queue_info()[0]["id"])
    drive(engine, lambda: not engine.memory.agents, "the last attempt to be removed", timeout=30)
    assert leftovers(docker_client, jenkins_client, instance) == NOTHING


def test_missing_image_is_no_launch_and_leaves_nothing(
    controller: Controller,
    jenkins_client: jenkins.Jenkins,
    make_config: ConfigFactory,
    docker_client: docker.DockerClient,
    instance: str,
) -> None:
    engine = Engine(make_config(image="agentpool/does-not-exist:never"))
    jenkins_client.create_job("waits", freestyle_xml("docker", "true"))
    jenkins_client.build_job("waits")
    report = engine.run_pass()
    # the host lacks the image: skipped for the pool (no launch), the image looked for meanwhile
    assert report.outcomes == []
    assert [u.reason for u in report.plan.unserved] == [UnservedReason.NO_IMAGE]
    assert leftovers(docker_client, jenkins_client, instance) == NOTHING
    report = engine.run_pass()
    assert report.outcomes == []  # no hot loop


def test_jenkins_outage_loses_no_agent_and_no_build(
    controller: Controller,
    jenkins_client: jenkins.Jenkins,
    make_config: ConfigFactory,
    docker_client: docker.DockerClient,
    instance: str,
) -> None:
    engine = Engine(make_config(idle_timeout="2s"))
    jenkins_client.create_job("long", freestyle_xml("docker", "sleep 40; echo survived"))
    jenkins_client.build_job("long")
    drive(
        engine,
        lambda: any(a.online_at for a in engine.memory.agents.values()),
        "the agent to come online",
        timeout=120,
    )
    agent = next(iter(engine.memory.agents))
    controller.faults.fail_next(100_000, status=503)
    outage_end = time.monotonic() + 30
    while time.monotonic() < outage_end:
        report = engine.run_pass()
        assert not report.ok and report.plan.actions == ()
        time.sleep(1)
    controller.faults.fail_next(0)
    assert agent in engine.memory.agents
    assert docker_client.containers.get(agent).status == "running"
    drive(engine, lambda: result(jenkins_client, "long"), "the build to finish", timeout=60)
    assert result(jenkins_client, "long") == "SUCCESS"
    assert "survived" in jenkins_client.get_build_console_output("long", 1)
    drive(engine, lambda: not engine.memory.agents, "reaping after the outage", timeout=60)
    assert leftovers(docker_client, jenkins_client, instance) == NOTHING


def test_daemon_killed_mid_provision_restarts_without_duplicates_or_leaks(
    controller: Controller,
    jenkins_client: jenkins.Jenkins,
    make_config: ConfigFactory,
    docker_client: docker.DockerClient,
    instance: str,
    tmp_path: Path,
) -> None:
    make_config(idle_timeout="3s")
    config_path = tmp_path / "agentpool.yaml"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    label = f"{LABEL_INSTANCE}={instance}"

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "agentpool", "run", "--config", str(config_path)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "daemon.log").open("ab"),
        )

    jenkins_client.create_job("one", freestyle_xml("docker", "sleep 3"))
    jenkins_client.build_job("one")
    daemon = start()
    try:
        wait_for(
            "a container",
            lambda: docker_client.containers.list(all=True, filters={"label": label}, ignore_removed=True),
            60,
            0.1,
        )
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        seen: set[str] = set()

        def watch() -> bool:
            containers = docker_client.containers.list(
                all=True, filters={"label": label}, ignore_removed=True
            )
            assert len(containers) <= 1, [c.name for c in containers]
            seen.update(c.name for c in containers)
            return bool(result(jenkins_client, "one")) and not containers

        daemon = start()
        wait_for("the build to run and its agent to be reaped", watch, 150, 0.5)
        assert len(seen) == 1, seen
        assert result(jenkins_client, "one") == "SUCCESS"
        wait_for("nothing left", lambda: leftovers(docker_client, jenkins_client, instance) == NOTHING, 30)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
        log = (tmp_path / "daemon.log").read_text(errors="replace")
        assert controller.test_token not in log  # type: ignore[attr-defined]


def test_orphans_are_removed_after_two_passes_and_the_grace_period(
    controller: Controller,
    jenkins_client: jenkins.Jenkins,
    make_config: ConfigFactory,
    docker_client: docker.DockerClient,
    instance: str,
) -> None:
    engine = Engine(make_config(launch_timeout="20s"))
    orphan = f"{instance}-dind-0bad01"
    labels = {LABEL_INSTANCE: instance, LABEL_POOL: "dind", LABEL_AGENT: orphan}
    docker_client.containers.run(BUSYBOX, ["sleep", "3600"], name=orphan, labels=labels, detach=True)
    docker_client.volumes.create(
        f"{instance}-dind-0bad02-docker", labels={**labels, LABEL_AGENT: f"{instance}-dind-0bad02"}
    )
    marker = f"agentpool:{instance}:{engine.memory.daemon_id}:{engine.memory.boot}"  # ours, this run
    jenkins_client.create_node(
        f"{instance}-dind-0bad03",
        numExecutors=1,
        nodeDescription=f"{marker} docker-in-docker agent of pool dind",
        labels="docker linux",
        exclusive=True,
        launcher=jenkins.LAUNCHER_JNLP,
        launcher_params={"webSocket": True},
    )
    first = engine.run_pass()
    assert not [a for a in first.plan.actions if getattr(a, "reason", None) and a.reason.value == "orphan"]
    assert leftovers(docker_client, jenkins_client, instance) != NOTHING
    drive(
        engine,
        lambda: leftovers(docker_client, jenkins_client, instance) == NOTHING,
        "orphans to be removed",
        timeout=120,  # the grace period is max(60 s, launch_timeout)
    )


def test_reuse_keeps_the_inner_image_cache_for_the_next_agent(
    controller: Controller,
    jenkins_client: jenkins.Jenkins,
    make_config: ConfigFactory,
    docker_client: docker.DockerClient,
    artifacts: ArtifactServer,
    instance: str,
) -> None:
    engine = Engine(make_config(docker_volume="reuse", max_agents=1, idle_timeout="2s"))
    label = f"{LABEL_INSTANCE}={instance}"
    jenkins_client.create_job("warm", freestyle_xml("docker", docker_script(artifacts, "first")))
    jenkins_client.build_job("warm")
    drive(engine, lambda: result(jenkins_client, "warm"), "the first build", timeout=150)
    assert result(jenkins_client, "warm") == "SUCCESS"
    first_agent = set(engine.memory.agents)
    drive(engine, lambda: not engine.memory.agents, "the first agent to be reaped", timeout=60)
    volumes = [v.name for v in docker_client.volumes.list(filters={"label": label})]
    assert len(volumes) == 1, volumes

    jenkins_client.create_job(
        "cached",
        freestyle_xml(
            "docker", f"docker image inspect {BUSYBOX} >/dev/null\ndocker run --rm {BUSYBOX} echo from-cache"
        ),
    )
    jenkins_client.build_job("cached")
    drive(engine, lambda: result(jenkins_client, "cached"), "the second build", timeout=150)
    console = jenkins_client.get_build_console_output("cached", 1)
    assert result(jenkins_client, "cached") == "SUCCESS", console
    assert "from-cache" in console
    assert set(engine.memory.agents).isdisjoint(first_agent)
    assert [v.name for v in docker_client.volumes.list(filters={"label": label})] == volumes
