"""The dind agent image under the `capabilities` profile, against the real Docker engine.

What agentpool relies on: the inner engine runs containers and builds on overlay2, keeps its
images on the /var/lib/docker volume across container re-creation, shuts down cleanly and
quickly on SIGTERM, serves the Docker API over mutual TLS in PORT mode, and refuses loudly
to run on a /var/lib/docker that is not a volume.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docker as docker_sdk
import pytest
import requests

from tests.image.dindtools import BUSYBOX, Agent, Agents, docker

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def agent(agents: Agents) -> Iterator[Agent]:
    """One agent in the default mode (engine only), with agentpool/busybox loaded."""
    a = agents.start("engine")
    a.wait_ready()
    a.load_busybox()
    yield a
    agents.remove(a)


def test_inner_storage_driver_is_overlay2(agent: Agent) -> None:
    assert agent.exec("docker", "info", "--format", "{{.Driver}}").strip() == "overlay2"


def test_tmp_is_a_tmpfs(agent: Agent) -> None:
    assert agent.exec("stat", "-f", "-c", "%T", "/tmp").strip() == "tmpfs"


def test_inner_docker_run(agent: Agent) -> None:
    token = secrets.token_hex(8)
    out = agent.exec("docker", "run", "--rm", BUSYBOX, "sh", "-c", f"echo {token} from $(hostname)")
    assert out.startswith(f"{token} from ")


def test_inner_docker_build(agent: Agent) -> None:
    token = secrets.token_hex(8)
    tag = f"built-{token}"
    dockerfile = f'FROM {BUSYBOX}\nRUN echo {token} > /built\nCMD ["cat", "/built"]\n'
    agent.exec("docker", "build", "-t", tag, "-", input=dockerfile.encode())
    assert agent.exec("docker", "run", "--rm", tag).strip() == token


def test_image_survives_recreate_and_sigterm_leaves_nothing(agents: Agents) -> None:
    first = agents.start("persist")
    first.wait_ready()
    first.load_busybox()
    agents.remove(first)

    second = agents.start("persist", volume=first.volume)
    second.wait_ready()
    images = second.exec("docker", "images", "--format", "{{.Repository}}:{{.Tag}}").split()
    assert BUSYBOX in images

    marker = str(secrets.randbelow(10**6) + 10**6)  # `sleep <marker>`: unique on this host
    inner_id = second.exec("docker", "run", "-d", BUSYBOX, "sleep", marker).strip()
    assert f"sleep {marker}" in _host_processes()

    start = time.monotonic()
    docker("kill", "--signal", "TERM", second.name)
    status = docker("wait", second.name, timeout=30).stdout.strip()
    elapsed = time.monotonic() - start

    assert elapsed < 10, f"took {elapsed:.1f} s to stop"
    assert status == "143"
    logs = second.logs()
    assert "stopping inner containers" in logs
    assert "stopping dockerd" in logs
    leftovers = [p for p in _host_processes().splitlines() if f"sleep {marker}" in p or inner_id in p]
    assert leftovers == []


def test_data_root_not_on_a_volume_is_refused_loudly(agents: Agents) -> None:
    proc = agents.run_to_end("novolume", data_root_volume=False)
    assert proc.returncode == 1
    assert "/var/lib/docker is NOT a volume (it is on overlayfs)" in proc.stderr
    assert "vfs" in proc.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        # dockerd waits (60 s) for a containerd that never answers, its API socket already open
        (
            {"DIND_START_TIMEOUT": "3", "DOCKERD_OPTS": "--containerd=/run/nothing.sock"},
            "dockerd did not answer within 3 s; the end of its log:",
        ),
        ({"DOCKERD_OPTS": "--no-such-flag"}, "dockerd exited with status 1; the end of its log:"),
    ],
)
def test_engine_that_does_not_come_up_fails_with_its_log(
    agents: Agents, env: dict[str, str], message: str
) -> None:
    start = time.monotonic()
    proc = agents.run_to_end("broken", env=env)
    assert time.monotonic() - start < 15
    assert proc.returncode == 1
    assert message in proc.stderr
    log_tail = proc.stderr.split(message, 1)[1]
    assert "level=" in log_tail or "unknown flag" in log_tail


def test_jenkins_mode_names_the_missing_variable(agents: Agents) -> None:
    proc = agents.run_to_end("partial", env={"JENKINS_URL": "http://127.0.0.1:9/", "JENKINS_SECRET": "s3"})
    assert proc.returncode == 1
    assert "JENKINS_AGENT_NAME" in proc.stderr
    assert "s3" not in proc.stdout + proc.stderr


def test_port_mode_serves_the_api_over_mutual_tls_only(
    agents: Agents, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # requests lets these variables override a session's CA file (psf/requests#3829), which is
    # how the docker SDK passes tls.ca_cert: the SDK would then verify against the wrong CAs.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    certs = agents.volume("certs")
    a = agents.start("port", env={"PORT": "2376"}, mounts=[f"{certs}:/certs"])
    a.wait_ready()
    docker("cp", f"{a.name}:/certs/client", str(tmp_path / "client"))
    client_dir = tmp_path / "client"
    ca, cert, key = (str(client_dir / f) for f in ("ca.pem", "cert.pem", "key.pem"))
    url = f"https://{a.ip()}:2376"

    # Hostname verification against the container's bridge IP is on (the IP is in the cert).
    tls = docker_sdk.tls.TLSConfig(client_cert=(cert, key), ca_cert=ca, verify=True)
    client = docker_sdk.DockerClient(base_url=url, tls=tls, timeout=20)
    try:
        assert client.info()["Driver"] == "overlay2"
    finally:
        client.close()

    # Without the client certificate the server aborts the handshake.
    with pytest.raises(requests.exceptions.ConnectionError) as refused:
        requests.get(f"{url}/version", verify=ca, timeout=10)
    assert "certificate" in str(refused.value).lower()
    # Plain HTTP is no way in either.
    plain = requests.get(f"http://{a.ip()}:2376/version", timeout=10)
    assert plain.status_code == 400
    assert "HTTPS" in plain.text
    assert "Jenkins agent" not in a.logs()


def test_port_mode_plain_tcp_needs_the_opt_in_and_warns(agents: Agents) -> None:
    a = agents.start("insecure", env={"PORT": "2375", "DIND_INSECURE_TCP": "true"})
    a.wait_ready()
    assert requests.get(f"http://{a.ip()}:2375/version", timeout=10).json()["Version"]
    assert "PORT mode WITHOUT TLS" in a.logs()


def test_works_without_systempaths_unconfined(agents: Agents) -> None:
    # The docker SDK cannot send `systempaths=unconfined`: the entrypoint unlocks /proc/sys.
    a = agents.start("sdkprofile", systempaths_unconfined=False)
    a.wait_ready()
    options = a.exec("awk", '$2 == "/proc/sys" { o = $4 } END { print o }', "/proc/mounts")
    assert options.startswith("rw,")
    a.load_busybox()
    assert a.exec("docker", "run", "--rm", BUSYBOX, "echo", "ok").strip() == "ok"


def test_port_mode_uses_supplied_certificates(agents: Agents, tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    _make_certs(certs)
    a = agents.start("supplied", env={"PORT": "2376"}, mounts=[f"{certs}:/certs:ro"])
    a.wait_ready()
    tls = [
        "--tlsverify",
        "--tlscacert=/certs/client/ca.pem",
        "--tlscert=/certs/client/cert.pem",
        "--tlskey=/certs/client/key.pem",
    ]
    out = a.exec("docker", *tls, "-H", "tcp://127.0.0.1:2376", "info", "--format", "{{.Driver}}")
    assert out.strip() == "overlay2"
    assert "using the supplied server certificate in /certs/server" in a.logs()


def _make_certs(root: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, with openssl."""

    def ssl(*args: str, cwd: Path) -> None:
        subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)

    for part in ("ca", "server", "client"):
        (root / part).mkdir(parents=True)
    ca = root / "ca"
    ssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
        "-subj", "/CN=test CA", "-keyout", "key.pem", "-out", "cert.pem", cwd=ca)  # fmt: skip
    extensions = {
        "server": "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth",
        "client": "extendedKeyUsage=clientAuth",
    }
    for part, ext in extensions.items():
        d = root / part
        (d / "ext.cnf").write_text(ext + "\n")
        ssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", f"/CN={part}", "-keyout", "key.pem", "-out", "req.pem", cwd=d)  # fmt: skip
        ssl("x509", "-req", "-in", "req.pem", "-CA", str(ca / "cert.pem"), "-CAkey", str(ca / "key.pem"),
            "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "cert.pem", cwd=d)  # fmt: skip
        (d / "ca.pem").write_bytes((ca / "cert.pem").read_bytes())
        (d / "key.pem").chmod(0o644)
    # Supplied means: server certificates present, no CA key for the entrypoint to re-issue with.
    (ca / "key.pem").unlink()


def _host_processes() -> str:
    return subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout


def test_word_lists_are_not_globbed(agents: Agents) -> None:
    """JAVA_OPTS="/*" reaches java as the one word `/*`, not as every directory of /."""
    proc = agents.run_to_end(
        "glob",
        env={
            "JENKINS_URL": "http://127.0.0.1:9/",
            "JENKINS_SECRET": "s3",
            "JENKINS_AGENT_NAME": "n",
            "AGENT_JAR": "/etc/hostname",  # present: no download; java fails at once
            "JAVA_OPTS": "-Dagentpool.test=1 /*",
        },
    )
    assert proc.returncode != 0
    assert "starting the Jenkins agent: java -Dagentpool.test=1 /* -jar" in proc.stderr
    assert "/bin /boot" not in proc.stderr


@pytest.mark.parametrize("san", ["evil.example,DNS:attacker.example", "a.example\nsubjectAltName=x", "a b;c"])
def test_a_tls_san_that_would_inject_is_refused(agents: Agents, san: str) -> None:
    proc = agents.run_to_end("san", env={"PORT": "2376", "DOCKER_TLS_SAN": san})
    assert proc.returncode == 1
    assert "DOCKER_TLS_SAN:" in proc.stderr and "is not a host name" in proc.stderr


def test_a_timeout_that_is_not_a_number_is_refused_not_evaluated(agents: Agents) -> None:
    proc = agents.run_to_end("num", env={"DIND_START_TIMEOUT": "a[$(echo evaluated >&2)]"})
    assert proc.returncode == 1
    assert "DIND_START_TIMEOUT must be a whole number of seconds" in proc.stderr
    assert "evaluated\n" not in proc.stderr


def test_a_start_niceness_out_of_range_is_refused(agents: Agents) -> None:
    proc = agents.run_to_end("nice", env={"DIND_DOCKERD_START_NICE": "-5"})
    assert proc.returncode == 1
    assert "DIND_DOCKERD_START_NICE must be a niceness from 0 to 19, got '-5'" in proc.stderr
