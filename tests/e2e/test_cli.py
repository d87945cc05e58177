"""The CLI contract against a real controller and engine: `once` provisions, `status --json`
reports agents and why waiting items are not served, `validate` names file, line and key."""

from __future__ import annotations

import json
from pathlib import Path

import docker
import jenkins
import pytest

from agentpool.daemon import Engine
from agentpool_testing.jenkins import Controller
from agentpool_testing.jobs import freestyle_xml

from .conftest import NOTHING, ConfigFactory, drive, leftovers, run_cli

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("cleanup")]


def test_once_then_status_then_drain(
    controller: Controller,
    jenkins_client: jenkins.Jenkins,
    make_config: ConfigFactory,
    docker_client: docker.DockerClient,
    instance: str,
    tmp_path: Path,
) -> None:
    config = make_config(max_agents=1)
    path = str(tmp_path / "agentpool.yaml")
    jenkins_client.create_job("on-docker", freestyle_xml("docker", "sleep 30"))
    jenkins_client.create_job("on-windows", freestyle_xml("windows", "true"))
    jenkins_client.build_job("on-docker")
    jenkins_client.build_job("on-windows")

    once = run_cli("once", "--config", path)
    assert once.returncode == 0, once.stderr
    assert "provisioned" in once.stderr and instance in once.stderr

    status = run_cli("status", "--config", path, "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    [agent] = report["agents"]
    assert agent["pool"] == "dind" and agent["state"] in ("starting", "online-idle", "busy")
    assert report["demand"].get("windows") == 1
    assert {u["why"] for u in report["unserved"] if u["label"] == "windows"} == {"no pool matches"}
    assert controller.test_token not in status.stdout + status.stderr  # type: ignore[attr-defined]

    text = run_cli("status", "--config", path)
    assert agent["name"] in text.stdout and "no pool matches" in text.stdout

    jenkins_client.cancel_queue(next(i["id"] for i in jenkins_client.get_queue_info()))
    engine = Engine(config)
    engine.set_draining("dind", True)
    drive(engine, lambda: not engine.memory.agents, "the drained pool to empty", timeout=120)
    assert leftovers(docker_client, jenkins_client, instance) == NOTHING


def test_validate_names_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "jenkins:\n  url: http://127.0.0.1:8080/\n  user: u\n  token_env: NOPE_NOT_SET\n"
        "pools:\n  - name: dind\n    labels: [docker]\n    image: x\n    min_idle: 3\n    max_agents: 2\n"
    )
    result = run_cli("validate", "--config", str(path))
    assert result.returncode == 2
    assert f"{path}:4: jenkins.token_env:" in result.stderr
    assert f"{path}:" in result.stderr and "min_idle" in result.stderr
