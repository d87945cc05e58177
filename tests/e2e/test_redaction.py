"""No output shows the Jenkins token or an agent's secret, whichever way the token is given.

For each supported way (token_file, token_env, inline token) a real run goes through every
command and endpoint: validate, once (which provisions an agent), status (text and JSON),
doctor, run (JSON log) with its sd_notify messages, /status, /healthz and /metrics. Every
output is searched for the token, its Basic-auth form and the secrets of the agents started;
the agent's container (`docker inspect`) must not hold its secret either. The fourth way, the
token inside jenkins.url, is refused, and the refusal does not print it.
"""

from __future__ import annotations

import base64
import json
import os
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

from .conftest import REPO, ConfigFactory, free_port, run_cli

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("cleanup")]


def _config_for(way: str, text: str, token: str, tmp_path: Path) -> str:
    line = "  token_env: AGENTPOOL_TEST_TOKEN"
    assert line in text
    if way == "token_file":
        (tmp_path / "jenkins.token").write_text(token + "\n")
        return text.replace(line, "  token_file: jenkins.token")
    if way == "inline":
        return text.replace(line, f"  token: {token}")
    return text


@pytest.mark.parametrize("way", ["token_file", "token_env", "inline"])
def test_no_output_holds_the_token_or_an_agent_secret(
    way: str,
    controller: Controller,
    jenkins_client: jenkins.Jenkins,
    make_config: ConfigFactory,
    docker_client: docker.DockerClient,
    instance: str,
    tmp_path: Path,
) -> None:
    token: str = controller.test_token  # type: ignore[attr-defined]
    port = free_port()
    make_config(metrics_listen=f"127.0.0.1:{port}", idle_timeout="10m", max_agents=1)
    path = tmp_path / "agentpool.yaml"
    path.write_text(_config_for(way, path.read_text(), token, tmp_path))
    config = str(path)
    outputs: dict[str, str] = {}

    def cli(name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        done = run_cli(*args, timeout=timeout)
        outputs[name] = done.stdout + done.stderr
        return done

    assert cli("validate", "validate", "--config", config).returncode == 0
    assert cli("validate-json", "--log-format", "json", "validate", "--config", config).returncode == 0
    jenkins_client.create_job("on-docker", freestyle_xml("docker", "sleep 120"))
    jenkins_client.build_job("on-docker")
    once = cli("once", "--log-format", "json", "once", "--config", config)
    assert once.returncode == 0, once.stderr

    def online() -> bool:
        report = json.loads(cli("status-json", "status", "--config", config, "--json").stdout)
        return any(a["state"] in ("online-idle", "busy") for a in report["agents"])

    # The agent gets its secret as a file (not an environment variable) and still connects.
    wait_for("the agent to connect", online, 90, step=2)
    cli("once-kv", "once", "--config", config)
    cli("status", "status", "--config", config)
    cli("doctor", "doctor", "--config", config, timeout=180)

    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(0.2)
    messages: list[str] = []
    stop = threading.Event()

    def read_notify() -> None:
        while not stop.is_set():
            try:
                messages.append(notify.recv(4096).decode())
            except TimeoutError:
                continue

    reader = threading.Thread(target=read_notify, daemon=True)
    reader.start()
    log_path = tmp_path / "daemon.log"
    daemon = subprocess.Popen(
        [sys.executable, "-m", "agentpool", "--log-format", "json", "run", "--config", config],
        env={**os.environ, "PYTHONPATH": str(REPO), "NOTIFY_SOCKET": str(notify_path)},
        stdout=subprocess.DEVNULL,
        stderr=log_path.open("wb"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for("READY=1", lambda: any("READY=1" in m for m in messages), 30)
        for route in ("/status", "/healthz", "/metrics"):
            outputs[route] = requests.get(base + route, timeout=5).text
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
        stop.set()
        reader.join(5)
        notify.close()
    outputs["run"] = log_path.read_text()
    outputs["sd_notify"] = "\n".join(messages)
    for line in outputs["run"].splitlines():
        json.loads(line)  # the JSON log is all JSON

    agents = [n["name"] for n in jenkins_client.get_nodes() if n["name"].startswith(instance + "-")]
    assert agents
    secrets = {"token": token, "basic": base64.b64encode(f"admin:{token}".encode()).decode()}
    secrets.update({f"secret of {a}": controller.secret(a) for a in agents})
    label = f"agentpool.instance={instance}"
    for container in docker_client.containers.list(all=True, filters={"label": label}, ignore_removed=True):
        outputs[f"docker inspect {container.name}"] = json.dumps(
            docker_client.api.inspect_container(container.id)
        )
    leaks = [
        f"{what} in {name}" for name, text in outputs.items() for what, s in secrets.items() if s in text
    ]
    assert leaks == []
    assert len(outputs) >= 12


def test_a_token_in_the_url_is_refused_without_printing_it(
    controller: Controller, make_config: ConfigFactory, tmp_path: Path
) -> None:
    token: str = controller.test_token  # type: ignore[attr-defined]
    make_config()
    path = tmp_path / "agentpool.yaml"
    text = path.read_text().replace("  url: http://", f"  url: http://admin:{token}@")
    path.write_text(text)
    for fmt in ("kv", "json"):
        for command in ("validate", "once", "status", "doctor"):
            done = run_cli("--log-format", fmt, command, "--config", str(path))
            assert done.returncode == 2
            assert "credentials in jenkins.url are refused" in done.stderr
            assert token not in done.stdout + done.stderr
