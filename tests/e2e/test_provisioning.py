"""The provisioner end to end: real controller over HTTP, real engine, real dind agents."""

from __future__ import annotations

import docker
import jenkins
import pytest

from agentpool.daemon import Engine
from agentpool_testing.artifacts import ArtifactServer
from agentpool_testing.jenkins import Controller
from agentpool_testing.jobs import freestyle_xml, pipeline_xml

from .conftest import NOTHING, ConfigFactory, build_info, docker_script, drive, leftovers, result

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("cleanup")]


def test_freestyle_and_pipeline_builds_get_agents_run_docker_and_leave_nothing(
    controller: Controller,
    jenkins_client: jenkins.Jenkins,
    make_config: ConfigFactory,
    artifacts: ArtifactServer,
    docker_client: docker.DockerClient,
    instance: str,
) -> None:
    engine = Engine(make_config(idle_timeout="5s"))
    jenkins_client.create_job(
        "free", freestyle_xml("docker && linux", docker_script(artifacts, "hello-free"))
    )
    jenkins_client.create_job("pipe", pipeline_xml("docker && linux", docker_script(artifacts, "hello-pipe")))
    jenkins_client.build_job("free")
    jenkins_client.build_job("pipe")

    drive(
        engine,
        lambda: build_info(jenkins_client, "free") and build_info(jenkins_client, "pipe"),
        "both builds to finish",
        timeout=180,
    )
    for job, message in (("free", "hello-free"), ("pipe", "hello-pipe")):
        info = build_info(jenkins_client, job)
        console = jenkins_client.get_build_console_output(job, 1)
        assert info is not None and info["result"] == "SUCCESS", console
        assert message in console
    # two items waiting at once for one expression: two agents, not more
    assert len(engine.memory.agents) <= 2

    drive(engine, lambda: not engine.memory.agents, "idle agents to be reaped", timeout=60)
    assert leftovers(docker_client, jenkins_client, instance) == NOTHING


def test_no_over_provisioning_with_ten_items_and_max_three(
    controller: Controller,
    jenkins_client: jenkins.Jenkins,
    make_config: ConfigFactory,
    docker_client: docker.DockerClient,
    instance: str,
) -> None:
    engine = Engine(make_config(max_agents=3, idle_timeout="60s"))
    for i in range(10):
        jenkins_client.create_job(f"j{i}", freestyle_xml("docker", "sleep 2"))
        jenkins_client.build_job(f"j{i}")
    seen: set[str] = set()
    label = f"agentpool.instance={instance}"

    def all_done() -> bool:
        for c in docker_client.containers.list(all=True, filters={"label": label}, ignore_removed=True):
            seen.add(c.name)
        running = docker_client.containers.list(all=True, filters={"label": label}, ignore_removed=True)
        assert len(running) <= 3, [c.name for c in running]
        return all(build_info(jenkins_client, f"j{i}") for i in range(10))

    drive(engine, all_done, "ten builds on three agents", timeout=240)
    assert len(seen) == 3, seen
    assert [result(jenkins_client, f"j{i}") for i in range(10)] == ["SUCCESS"] * 10
