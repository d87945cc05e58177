"""The daemon as a service: sd_notify on a real AF_UNIX socket, /metrics and /healthz over HTTP
during a real run, SIGHUP reloads (valid and invalid), drain without killing a build, SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import docker
import jenkins
import pytest
import requests

from agentpool_testing.jenkins import Controller
from agentpool_testing.jobs import freestyle_xml
from tests.waiting import wait_for

from .conftest import REPO, ConfigFactory, free_port, leftovers, result, run_cli

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("cleanup")]


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = re.match(r"^([a-zA-Z_:]+)(\{[^}]*\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        if all(f'{k}="{v}"' in (m.group(2) or "") for k, v in labels.items()):
            total += float(m.group(3))
    return total


def test_daemon_notifies_serves_metrics_reloads_and_drains_without_killing_a_build(
    controller: Controller,
    jenkins_client: jenkins.Jenkins,
    make_config: ConfigFactory,
    docker_client: docker.DockerClient,
    instance: str,
    tmp_path: Path,
) -> None:
    port = free_port()
    make_config(metrics_listen=f"127.0.0.1:{port}", idle_timeout="10m")
    config_path = tmp_path / "agentpool.yaml"
    # `agentpool drain` below posts to the daemon, which requires the admin token.
    (tmp_path / "admin.token").write_text("e2e-admin-token\n")
    config_path.write_text(
        config_path.read_text().replace(
            f"  listen: 127.0.0.1:{port}\n", f"  listen: 127.0.0.1:{port}\n  admin_token_file: admin.token\n"
        )
    )
    good_config = config_path.read_text()
    base = f"http://127.0.0.1:{port}"

    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(0.2)
    messages: list[str] = []
    stop_reading = threading.Event()

    def read_notify() -> None:  # as systemd does: read every message as it comes
        while not stop_reading.is_set():
            try:
                messages.append(notify.recv(4096).decode())
            except TimeoutError:
                continue

    reader = threading.Thread(target=read_notify, daemon=True)
    reader.start()

    def drain_notify() -> list[str]:
        return list(messages)

    log_path = tmp_path / "daemon.log"
    daemon = subprocess.Popen(
        [sys.executable, "-m", "agentpool", "run", "--config", str(config_path)],
        env={
            **os.environ,
            "PYTHONPATH": str(REPO),
            "NOTIFY_SOCKET": str(notify_path),
            "WATCHDOG_USEC": "30000000",
        },
        stdout=subprocess.DEVNULL,
        stderr=log_path.open("wb"),
    )
    try:
        wait_for("READY=1", lambda: any("READY=1" in m for m in drain_notify()), 30)
        assert requests.get(f"{base}/healthz", timeout=5).status_code == 200

        jenkins_client.create_job("long", freestyle_xml("docker", "sleep 15; echo finished-ok"))
        jenkins_client.build_job("long")
        wait_for("the build to start", lambda: jenkins_client.get_running_builds(), 120)

        # an invalid config is refused and the daemon keeps going on the old one
        config_path.write_text(good_config.replace("max_agents: 3", "max_agents: -1"))
        daemon.send_signal(signal.SIGHUP)
        wait_for("the refusal in the log", lambda: "reload refused" in log_path.read_text(), 15)
        assert daemon.poll() is None
        config_path.write_text(good_config.replace("idle_timeout: 10m", "idle_timeout: 9m"))
        daemon.send_signal(signal.SIGHUP)
        wait_for("the reload in the log", lambda: "config reloaded" in log_path.read_text(), 15)

        # drain while the build runs: it finishes, then the agent goes
        drained = run_cli("drain", "--config", str(config_path), "--pool", "dind", timeout=120)
        assert drained.returncode == 0, drained.stderr + log_path.read_text()
        assert result(jenkins_client, "long") == "SUCCESS"
        assert "finished-ok" in jenkins_client.get_build_console_output("long", 1)
        assert leftovers(docker_client, jenkins_client, instance)["containers"] == []

        text = requests.get(f"{base}/metrics", timeout=5).text
        assert metric(text, "agentpool_provisioned_total", pool="dind") == 1
        assert metric(text, "agentpool_queued_to_online_seconds_count", pool="dind") == 1
        assert metric(text, "agentpool_reaped_total", pool="dind", reason="drain") == 1
        assert metric(text, "agentpool_pass_duration_seconds_count") >= 3
        status = requests.get(f"{base}/status", timeout=5).json()
        assert status["pools"]["dind"]["draining"] is True
        assert run_cli("resume", "--config", str(config_path)).returncode == 0
        assert requests.get(f"{base}/status", timeout=5).json()["pools"]["dind"]["draining"] is False

        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
        stop_reading.set()
        reader.join(5)
        notify.close()
        seen = list(messages)
    kinds = [m.split("=", 1)[0] for m in seen]
    assert kinds[0] == "READY"
    assert "WATCHDOG" in kinds and "STATUS" in kinds
    assert kinds[-1] == "STOPPING"
    assert kinds.index("READY") < kinds.index("WATCHDOG") < kinds.index("STOPPING")
    assert controller.test_token not in log_path.read_text()  # type: ignore[attr-defined]
