"""agentpool over the three TLS engines: builds spread over them, an engine that refuses creates is
avoided within one pass, an engine stopped mid-run loses its agents' nodes and leaves nothing
when it returns, ``drain --host`` empties one engine while builds go on elsewhere, and an
engine without the pool's image gets it copied from another engine (no registry answers).

Agents run the no-op image (:mod:`tests.fleet.noop_image`): the stub agent on a small Java
runtime, no inner engine; the controller is this machine's, reached at the fleet network's
gateway. The engine's pass is driven by the test (``drive``) except for the drain, which is
the real daemon and the real CLI.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import jenkins
import pytest

from agentpool.config import load_config
from agentpool.engine import Engine
from agentpool.model import LABEL_INSTANCE, Provision
from agentpool_testing.jenkins import Controller
from agentpool_testing.jenkins.stub import BUILT_JAR
from agentpool_testing.jobs import freestyle_xml
from tests.fleet.conftest import Fleet, FleetEngine
from tests.fleet.noop_image import build_noop_image

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(420)]

REPO = Path(__file__).resolve().parents[2]
JAR = BUILT_JAR


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def noop(fleet: Fleet, host_engine: docker.DockerClient) -> str:
    """The no-op image on fleet-1 and fleet-2; fleet-3 gets it from agentpool (a test below)."""
    if not JAR.exists():
        subprocess.run([str(REPO / "scripts/build-agent-jar")], check=True, capture_output=True)
    image = build_noop_image(host_engine, JAR)
    for engine in fleet.engines[:2]:
        fleet.ensure_image(engine, image)
    return image


@pytest.fixture
def controller(fleet: Fleet) -> Iterator[Controller]:
    token, port = secrets.token_hex(16), free_port()
    url = f"http://{fleet.gateway}:{port}/"
    with Controller(listen=f"0.0.0.0:{port}", user="admin", token=token, url=url, quiet_period=0) as ctl:
        ctl.test_token = token  # type: ignore[attr-defined]
        yield ctl


@pytest.fixture
def server(controller: Controller) -> jenkins.Jenkins:
    token = controller.test_token  # type: ignore[attr-defined]
    return jenkins.Jenkins(
        f"http://127.0.0.1:{controller.port}/", username="admin", password=token, timeout=10
    )


@pytest.fixture
def instance(fleet: Fleet) -> Iterator[str]:
    name = "t" + secrets.token_hex(3)
    yield name
    for engine in fleet.engines:  # whatever a failing test left behind
        host = engine.host()
        try:
            client = host.client
            for c in client.containers.list(
                all=True, filters={"label": f"{LABEL_INSTANCE}={name}"}, ignore_removed=True
            ):
                c.remove(force=True, v=True)
            for v in client.volumes.list(filters={"label": f"{LABEL_INSTANCE}={name}"}):
                v.remove(force=True)
        except Exception as exc:  # an engine a test stopped and could not restart
            print(f"cleanup on {engine.name}: {exc}")
        finally:
            host.close()


ConfigFactory = Callable[..., Path]


@pytest.fixture
def make_config(
    tmp_path: Path,
    fleet: Fleet,
    controller: Controller,
    instance: str,
    monkeypatch: pytest.MonkeyPatch,
    noop: str,
) -> ConfigFactory:
    monkeypatch.setenv("AGENTPOOL_TEST_TOKEN", controller.test_token)  # type: ignore[attr-defined]

    def make(
        image: str = noop,
        host_max: tuple[int, int, int] = (2, 2, 2),
        pool_max: int = 6,
        extra: str = "",
        metrics: str = "null",
    ) -> Path:
        hosts = "".join(e.yaml(n) for e, n in zip(fleet.engines, host_max, strict=True))
        admin = tmp_path / "admin.token"
        admin.write_text(secrets.token_hex(16) + "\n")
        text = f"""jenkins:
  url: http://127.0.0.1:{controller.port}/
  user: admin
  token_env: AGENTPOOL_TEST_TOKEN
  agent_url: {controller.url}
instance: {instance}
poll_interval: 1s
metrics:
  listen: {metrics}
  admin_token_file: {admin}
{extra}docker_hosts:
{hosts}pools:
  - name: noop
    labels: [noop]
    image: {image}
    security: capabilities
    cap_drop: [SYS_RESOURCE]
    idle_timeout: 4s
    launch_timeout: 60s
    max_agents: {pool_max}
"""
        path = tmp_path / "agentpool.yaml"
        path.write_text(text)
        return path

    return make


def drive(engine: Engine, condition: Callable[[], Any], what: str, timeout: float, seen: Seen) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        engine.run_pass()
        seen.record(engine)
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}; status={engine.status()}"
            )
        time.sleep(0.5)


class Seen:
    """Which host every agent ran on, and what status said on the way."""

    def __init__(self) -> None:
        self.hosts: dict[str, str] = {}
        self.statuses: list[dict[str, Any]] = []

    def record(self, engine: Engine) -> None:
        status = engine.status()
        self.statuses.append(status)
        for agent in status["agents"]:
            self.hosts[agent["name"]] = agent["host"]

    def per_host(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for host in self.hosts.values():
            out[host] = out.get(host, 0) + 1
        return out


def queue(server: jenkins.Jenkins, jobs: list[str], script: str) -> None:
    for job in jobs:
        server.create_job(job, freestyle_xml("noop", script))
        server.build_job(job)


def results(server: jenkins.Jenkins, jobs: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for job in jobs:
        try:
            out[job] = server.get_build_info(job, 1).get("result")
        except jenkins.JenkinsException:
            out[job] = None
    return out


def built_on(server: jenkins.Jenkins, job: str) -> str:
    return str(server.get_build_info(job, 1).get("builtOn") or "")


def ours(engine: FleetEngine, instance: str) -> list[str]:
    """This instance's containers and volumes on the engine (``["unreachable"]`` while it is down)."""
    host = engine.host()
    try:
        view = host.observe(instance)
        if not view.reachable:
            return ["unreachable"]
        return [c.name for c in view.containers] + [v.name for v in view.volumes]
    finally:
        host.close()


def nodes_of(server: jenkins.Jenkins, instance: str) -> list[str]:
    return [n["name"] for n in server.get_nodes() if n["name"].startswith(instance + "-")]


def settle(engine: Engine, server: jenkins.Jenkins, fleet: Fleet, instance: str, seen: Seen) -> None:
    """Idle agents reaped: no node and nothing on any engine."""

    def clean() -> bool:
        return not nodes_of(server, instance) and not any(ours(e, instance) for e in fleet.engines)

    drive(engine, clean, "every agent reaped", 90, seen)


def test_builds_spread_and_the_host_without_the_image_gets_it_copied(
    fleet: Fleet, noop: str, make_config: ConfigFactory, server: jenkins.Jenkins, instance: str
) -> None:
    third = fleet.engines[2]
    assert ours(third, instance) == []
    host = third.host()
    try:
        assert host.image_id(noop) is None  # fleet-3 starts without it; no registry is reachable
    finally:
        host.close()
    engine = Engine(load_config(make_config()))
    seen = Seen()
    jobs = [f"spread-{i}" for i in range(6)]
    try:
        queue(server, jobs, "sleep 12; echo on $NODE_NAME")  # long enough for the copy to fleet-3 under load
        drive(
            engine, lambda: all(r == "SUCCESS" for r in results(server, jobs).values()), "6 builds", 240, seen
        )
        per_host = seen.per_host()
        assert set(per_host) == {e.name for e in fleet.engines}, per_host
        assert all(n <= 4 for n in per_host.values()), per_host
        images = [s["hosts"][third.name]["images"].get(noop) for s in seen.statuses]
        assert {"state": "transferring"} in [{"state": i["state"]} for i in images if i], images
        final = seen.statuses[-1]["hosts"][third.name]["images"][noop]
        assert final["state"] == "present" and final["detail"].startswith("copied from fleet-"), final
        assert {built_on(server, j) for j in jobs} <= set(seen.hosts)
        settle(engine, server, fleet, instance, seen)
    finally:
        engine.close()


def _tag(engine: FleetEngine, source: str, target: str) -> None:
    host = engine.host()
    try:
        repository, tag = target.rsplit(":", 1)
        host.client.api.tag(source, repository, tag)
    finally:
        host.close()


def _import_commandless(engine: FleetEngine, name: str) -> None:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        info = tarfile.TarInfo("empty")
        tar.addfile(info, io.BytesIO(b""))
    host = engine.host()
    try:
        repository, tag = name.rsplit(":", 1)
        host.client.api.import_image_from_data(archive.getvalue(), repository=repository, tag=tag)
    finally:
        host.close()


def test_an_engine_refusing_creates_is_avoided_within_one_pass(
    fleet: Fleet, noop: str, make_config: ConfigFactory, server: jenkins.Jenkins, instance: str
) -> None:
    # The same image name is a working agent on fleet-1 and fleet-3 and, on fleet-2, an image
    # with no command at all: that engine refuses to create any agent of the pool.
    broken = f"agentpool/noop-agent:{instance}"
    for each in (fleet.engines[0], fleet.engines[2]):
        fleet.ensure_image(each, noop)
        _tag(each, noop, broken)
    _import_commandless(fleet.engines[1], broken)
    engine = Engine(load_config(make_config(image=broken, host_max=(2, 2, 2))))
    seen = Seen()
    jobs = [f"refused-{i}" for i in range(3)]
    failures: list[str] = []
    try:
        queue(server, jobs, "sleep 3; echo ok")
        engine.run_pass()  # one agent per engine: the one on fleet-2 fails to start
        report = engine.last_report
        assert report is not None
        placed = [o.action.host for o in report.outcomes if isinstance(o.action, Provision)]
        assert sorted(placed) == ["fleet-1", "fleet-2", "fleet-3"], placed
        failures = [o.error for o in report.outcomes if not o.ok]
        assert len(failures) == 1 and "fleet-2" in failures[0], failures
        cooldown = engine.memory.cooldowns[("fleet-2", "noop")]
        assert cooldown.failures == 1 and cooldown.until > time.time()
        # the next pass places the item elsewhere; the pool itself never backs off
        engine.run_pass()
        report = engine.last_report
        assert report is not None
        again = [o.action.host for o in report.outcomes if isinstance(o.action, Provision)]
        assert again and "fleet-2" not in again, again
        drive(
            engine, lambda: all(r == "SUCCESS" for r in results(server, jobs).values()), "3 builds", 120, seen
        )
        assert engine.memory.pools["noop"].backoff_until == 0.0
        assert "fleet-2" not in {built_on(server, j).split("-")[0] for j in jobs}
        assert all(h != "fleet-2" for h in seen.hosts.values()), seen.hosts
        status = engine.status()["hosts"]["fleet-2"]
        assert status["health"] in ("cooling", "ok") and ours(fleet.engines[1], instance) == []
        settle(engine, server, fleet, instance, seen)
    finally:
        engine.close()


def test_drain_host_empties_one_engine_while_builds_run_elsewhere(
    fleet: Fleet,
    noop: str,
    make_config: ConfigFactory,
    server: jenkins.Jenkins,
    instance: str,
    tmp_path: Path,
) -> None:
    for each in fleet.engines:
        fleet.ensure_image(each, noop)
    port = free_port()
    path = make_config(host_max=(1, 1, 1), pool_max=3, metrics=f"127.0.0.1:{port}")
    log_path = tmp_path / "daemon.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "agentpool", "run", "--config", str(path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log_path.open("wb"),
    )
    cli = [sys.executable, "-m", "agentpool"]
    jobs = [f"drain-{i}" for i in range(3)]
    try:
        queue(server, jobs, "sleep 12; echo done")
        deadline = time.monotonic() + 120
        while len(server.get_running_builds()) < 3:
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.5)
        started = time.monotonic()
        drained = subprocess.run(
            [*cli, "drain", "--config", str(path), "--host", "fleet-1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert drained.returncode == 0, drained.stdout + drained.stderr + log_path.read_text()[-3000:]
        assert "drained" in drained.stdout
        assert ours(fleet.engines[0], instance) == []
        # the builds ran to the end: the one on fleet-1 before it was emptied, the others meanwhile
        assert time.monotonic() - started > 3
        deadline = time.monotonic() + 60
        while not all(r == "SUCCESS" for r in results(server, jobs).values()):
            assert time.monotonic() < deadline, results(server, jobs)
            time.sleep(0.5)
        # a new build is served by another engine while fleet-1 stays drained
        queue(server, ["after"], "echo after")
        deadline = time.monotonic() + 90
        while results(server, ["after"])["after"] != "SUCCESS":
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.5)
        assert ours(fleet.engines[0], instance) == []
        status = subprocess.run(
            [*cli, "status", "--config", str(path), "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        hosts = {h["name"]: h for h in json.loads(status.stdout)["hosts"]}
        assert hosts["fleet-1"]["draining"] is True and hosts["fleet-1"]["health"] == "draining"
        assert hosts["fleet-2"]["health"] == "ok"
        resumed = subprocess.run(
            [*cli, "resume", "--config", str(path), "--host", "fleet-1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert resumed.returncode == 0, resumed.stderr
        bad = subprocess.run(
            [*cli, "drain", "--config", str(path), "--host", "nope"], env=env, capture_output=True, text=True
        )
        assert bad.returncode == 2 and "no docker host named 'nope'" in bad.stderr
    finally:
        daemon.terminate()
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()


def test_an_engine_stopped_mid_run_loses_its_nodes_and_leaves_nothing_when_it_returns(
    fleet: Fleet,
    noop: str,
    make_config: ConfigFactory,
    server: jenkins.Jenkins,
    instance: str,
    host_engine: docker.DockerClient,
) -> None:
    for each in fleet.engines:
        fleet.ensure_image(each, noop)
    third = fleet.engines[2]
    engine = Engine(load_config(make_config(host_max=(2, 2, 1), pool_max=3, extra="host_lost_after: 4s\n")))
    seen = Seen()
    jobs = [f"run-{i}" for i in range(3)]
    container = host_engine.containers.get(third.container)
    try:
        queue(server, jobs, "sleep 20; echo done")
        drive(engine, lambda: len(server.get_running_builds()) == 3, "3 running builds", 120, seen)
        assert sorted(seen.per_host().values()) == [1, 1, 1], seen.hosts
        lost = [a for a, h in seen.hosts.items() if h == third.name]
        container.stop(timeout=10)
        # an item waits: the pool is at max_agents while the lost agent still counts
        queue(server, ["waiting"], "echo served")
        drive(
            engine, lambda: not set(lost) & set(nodes_of(server, instance)), "the lost node removed", 90, seen
        )
        drive(engine, lambda: results(server, ["waiting"])["waiting"], "the waiting item", 120, seen)
        assert results(server, ["waiting"])["waiting"] == "SUCCESS", server.get_build_console_output(
            "waiting", 1
        )
        assert seen.hosts[built_on(server, "waiting")] != third.name
        assert engine.status()["hosts"][third.name]["health"] == "lost"
        container.start()
        drive(engine, lambda: all(results(server, jobs).values()), "the builds' end", 120, seen)
        drive(engine, lambda: not ours(third, instance), "fleet-3 cleaned after its return", 150, seen)
        survivors = [j for j in jobs if seen.hosts.get(built_on(server, j)) != third.name]
        assert all(results(server, survivors)[j] == "SUCCESS" for j in survivors)
        settle(engine, server, fleet, instance, seen)
    finally:
        engine.close()
        container.reload()
        if container.status != "running":
            container.start()
