"""The executor's edge cases against the real engine and controller: a reap that finds a build
must not undo someone else's "temporarily offline", a half-done provision leaves nothing, a
lost agent's leased cache volume is removed (not leased again), and an agent's secret is
masked in our log even when its image prints it."""

from __future__ import annotations

import contextlib
import io
import logging
import time

import docker
import jenkins
import pytest

from agentpool.daemon import Engine
from agentpool.logs import redact, setup_logging
from agentpool.model import LABEL_AGENT, LABEL_INSTANCE, LABEL_POOL, Provision, Reap, Reason, RemoveOrphan
from agentpool_testing.jenkins import Controller
from agentpool_testing.jobs import freestyle_xml
from tests.waiting import wait_for

from .conftest import BUSYBOX, NOTHING, ConfigFactory, ImageFactory, drive, leftovers

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("cleanup")]


def test_reap_of_a_busy_node_already_offline_leaves_it_offline(
    controller: Controller,
    jenkins_client: jenkins.Jenkins,
    make_config: ConfigFactory,
) -> None:
    engine = Engine(make_config(idle_timeout="1h"))
    jenkins_client.create_job("long", freestyle_xml("docker", "sleep 25"))
    jenkins_client.build_job("long")

    def busy_agent() -> str | None:
        for node in engine.last_report.observed.nodes or () if engine.last_report else ():
            if node.name in engine.memory.agents and node.busy:
                return node.name
        return None

    agent = drive(engine, busy_agent, "the build to start on an agent", timeout=120)
    jenkins_client.disable_node(agent, "maintenance by an admin")
    assert jenkins_client.get_node_info(agent)["temporarilyOffline"]
    am = engine.memory.agents[agent]
    outcome = engine.executor.perform(
        Reap(agent, am.pool, am.host, Reason.IDLE_TIMEOUT, "test", check_idle=True)
    )
    assert outcome.ok and not outcome.removed, outcome
    info = jenkins_client.get_node_info(agent)
    assert info["temporarilyOffline"], "the admin's offline mark was toggled away"
    assert info["offlineCauseReason"] == "maintenance by an admin"


def test_container_that_fails_to_start_is_undone_with_node_and_volume(
    controller: Controller,
    jenkins_client: jenkins.Jenkins,
    make_config: ConfigFactory,
    docker_client: docker.DockerClient,
    instance: str,
    build_image: ImageFactory,
) -> None:
    image = build_image("nostart", 'ENTRYPOINT ["/no/such/entrypoint"]')
    engine = Engine(make_config(image=image))
    outcome = engine.executor.perform(
        Provision("dind", "local", f"{instance}-dind-0badf0", Reason.DEMAND, "test")
    )
    assert not outcome.ok and outcome.error_system == "docker", outcome
    assert "start container" in outcome.error
    assert leftovers(docker_client, jenkins_client, instance) == NOTHING


def test_lost_agent_on_a_leased_volume_removes_that_volume(
    controller: Controller,
    jenkins_client: jenkins.Jenkins,
    make_config: ConfigFactory,
    docker_client: docker.DockerClient,
    instance: str,
    build_image: ImageFactory,
) -> None:
    image = build_image("silent", 'CMD ["sleep", "3600"]')
    engine = Engine(make_config(image=image, docker_volume="reuse", max_agents=1))
    old = f"{instance}-dind-0ld0ld"
    cache = f"{old}-docker"
    docker_client.volumes.create(
        cache, labels={LABEL_INSTANCE: instance, LABEL_POOL: "dind", LABEL_AGENT: old}
    )
    jenkins_client.create_job("waits", freestyle_xml("docker", "true"))
    jenkins_client.build_job("waits")
    agent = drive(engine, lambda: next(iter(engine.memory.agents), None), "a provision", timeout=30)
    assert engine.memory.agents[agent].volume == cache  # the free cache volume was leased
    docker_client.containers.get(agent).remove(force=True)  # lost: its inner daemon died mid-write
    report = engine.run_pass()
    reaps = [o for o in report.outcomes if isinstance(o.action, Reap)]
    assert [o.action.reason for o in reaps] == [Reason.LOST] and reaps[0].ok, report.outcomes
    assert cache not in [v.name for v in docker_client.volumes.list()], "a lost agent's volume stays leasable"


def test_agent_secret_printed_by_its_image_is_masked_in_our_log(
    controller: Controller,
    jenkins_client: jenkins.Jenkins,
    make_config: ConfigFactory,
    docker_client: docker.DockerClient,
    instance: str,
    build_image: ImageFactory,
) -> None:
    image = build_image("leaky", 'CMD ["sh", "-c", "echo starting with $JENKINS_SECRET; sleep 2; exit 1"]')
    stream = io.StringIO()
    handler = setup_logging("kv", "INFO", stream)
    try:
        engine = Engine(make_config(image=image, max_agents=1))
        jenkins_client.create_job("waits", freestyle_xml("docker", "true"))
        jenkins_client.build_job("waits")
        agent = drive(engine, lambda: next(iter(engine.memory.agents), None), "a provision", timeout=30)
        secret = controller.secret(agent)
        wait_for(
            "the agent container to exit", lambda: docker_client.containers.get(agent).status == "exited", 30
        )
        drive(engine, lambda: agent not in engine.memory.agents, "the lost agent to be reaped", timeout=30)
        time.sleep(0.1)
    finally:
        logging.getLogger().removeHandler(handler)
    text = stream.getvalue()
    reaped = [line for line in text.splitlines() if "msg=reaped" in line and f"agent={agent}" in line]
    assert reaped and "starting with" in reaped[0], text  # the log tail is kept, masked
    assert secret not in text
    assert agent not in engine.executor.agent_secrets  # forgotten once its last lines were written
    assert redact(secret) == secret
    jenkins_client.cancel_queue(jenkins_client.get_queue_info()[0]["id"])
    drive(
        engine, lambda: leftovers(docker_client, jenkins_client, instance) == NOTHING, "cleanup", timeout=60
    )


def test_provision_never_takes_over_a_node_that_exists_already(
    controller: Controller,
    jenkins_client: jenkins.Jenkins,
    make_config: ConfigFactory,
    docker_client: docker.DockerClient,
    instance: str,
) -> None:
    engine = Engine(make_config())
    name = f"{instance}-dind-5eed00"  # made by someone else (another daemon, an admin)
    jenkins_client.create_node(
        name,
        numExecutors=1,
        nodeDescription="not agentpool's",
        labels="docker",
        launcher=jenkins.LAUNCHER_JNLP,
        launcher_params={},
    )
    outcome = engine.executor.perform(Provision("dind", "local", name, Reason.DEMAND, "test"))
    assert not outcome.ok and outcome.error_kind == "conflict", outcome
    assert jenkins_client.node_exists(name), "the existing node was deleted by the undo"
    assert leftovers(docker_client, jenkins_client, instance) == {
        "containers": [],
        "volumes": [],
        "nodes": [name],
    }


def test_provision_never_removes_a_container_it_did_not_create(
    controller: Controller,
    jenkins_client: jenkins.Jenkins,
    make_config: ConfigFactory,
    docker_client: docker.DockerClient,
    instance: str,
) -> None:
    engine = Engine(make_config())
    name = f"{instance}-dind-c0ffee"
    foreign = docker_client.containers.create(BUSYBOX, ["sleep", "60"], name=name)  # not ours
    try:
        outcome = engine.executor.perform(Provision("dind", "local", name, Reason.DEMAND, "test"))
        assert not outcome.ok and outcome.error_kind == "conflict", outcome
        foreign.reload()  # raises NotFound when the undo removed it
        assert leftovers(docker_client, jenkins_client, instance) == NOTHING
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            foreign.remove(force=True)


def test_after_a_restart_a_leased_volume_in_use_is_no_orphan(
    controller: Controller,
    jenkins_client: jenkins.Jenkins,
    make_config: ConfigFactory,
    docker_client: docker.DockerClient,
    instance: str,
    build_image: ImageFactory,
) -> None:
    image = build_image("silent", 'CMD ["sleep", "3600"]')
    config = make_config(image=image, docker_volume="reuse", max_agents=1, launch_timeout="1h")
    old = f"{instance}-dind-0ld0ld"
    cache = f"{old}-docker"
    docker_client.volumes.create(
        cache, labels={LABEL_INSTANCE: instance, LABEL_POOL: "dind", LABEL_AGENT: old}
    )
    jenkins_client.create_job("waits", freestyle_xml("docker", "true"))
    jenkins_client.build_job("waits")
    first = Engine(config)
    agent = drive(first, lambda: next(iter(first.memory.agents), None), "a provision", timeout=30)
    assert first.memory.agents[agent].volume == cache

    clock = [time.time()]
    restarted = Engine(config, clock=lambda: clock[0])  # no state file: adopts what it finds
    for _ in range(3):  # past the orphan grace period, seen on consecutive passes
        report = restarted.run_pass()
        removals = [a for a in report.plan.actions if isinstance(a, RemoveOrphan)]
        assert removals == [], removals
        clock[0] += 70
    assert restarted.memory.agents[agent].volume == cache


def test_an_agent_container_carries_its_pools_profile_and_limits(
    make_config: ConfigFactory, docker_client: docker.DockerClient
) -> None:
    """What the pool says (security profile, cap_drop, cpus, memory) is what the engine runs."""
    config = make_config(min_idle=1, cpus=0.5, memory="256m", cap_drop=["SYS_RESOURCE", "cap_sys_time"])
    engine = Engine(config)
    try:
        report = engine.run_pass()
        [outcome] = [o for o in report.outcomes if isinstance(o.action, Provision)]
        assert outcome.ok, outcome.error
        host = docker_client.api.inspect_container(outcome.container_id)["HostConfig"]
    finally:
        engine.close()  # the cleanup fixture removes the agent
    assert (host["NanoCpus"], host["Memory"]) == (500_000_000, 256 * 1024 * 1024)
    assert host["CapAdd"] == ["ALL"] and sorted(host["CapDrop"]) == ["SYS_RESOURCE", "SYS_TIME"]
    assert {"apparmor=unconfined", "seccomp=unconfined"} <= set(host["SecurityOpt"])
    assert host["MaskedPaths"] == [] and host["Privileged"] is False
    assert host["Binds"] == [f"{outcome.volume}:/var/lib/docker:rw"]
