"""An ``ssh://`` engine out of the box: Debian's openssh-server in front of a dind engine.

The remote host is the project's dind image plus Debian's openssh-server (a test image built
once, FROM the agent image). agentpool reaches its engine as a user would configure it:
``url: ssh://root@IP``, the key and ``known_hosts`` in ``~/.ssh`` of the user agentpool runs
as (here a temporary HOME), no other setting. An unknown host key and a key the server does
not accept are refused, each with doctor's fix for it.
"""

from __future__ import annotations

import io
import secrets
import socket
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from agentpool.adapters.docker import AgentSpec, DockerHost
from agentpool.adapters.images import copy_image
from agentpool.config import DockerHostConfig
from agentpool.doctor_transport import connection_fix
from agentpool.errors import DockerError
from agentpool.model import LABEL_AGENT, LABEL_INSTANCE, LABEL_POOL
from agentpool.security import create_container
from tests.fleet.conftest import BUSYBOX, CAP_DROP, IMAGE, LABEL, Fleet

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

SSH_IMAGE = "agentpool/test-dind-sshd:bookworm"
DOCKERFILE = f"""\
FROM {IMAGE}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openssh-server \\
 && rm -rf /var/lib/apt/lists/* \\
 && mkdir -p /run/sshd
"""


@dataclass
class SSHEngine:
    ip: str
    host_key: str  # "ssh-ed25519 AAAA…"
    container: str
    hostname: str

    @property
    def url(self) -> str:
        return f"ssh://root@{self.ip}"


def _key() -> tuple[bytes, str]:
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public.decode()


def _home(root: Path, private: bytes, known_hosts: str) -> Path:
    ssh = root / ".ssh"
    ssh.mkdir(parents=True)
    (ssh / "id_ed25519").write_bytes(private)
    (ssh / "id_ed25519").chmod(0o600)
    (ssh / "known_hosts").write_text(known_hosts)
    return root


def _put(client: docker.DockerClient, container: str, path: str, data: bytes) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(path.lstrip("/"))
        info.size, info.mode = len(data), 0o600
        tar.addfile(info, io.BytesIO(data))
    client.api.put_archive(container, "/", buf.getvalue())


@pytest.fixture(scope="module")
def ssh_engine(host_engine: docker.DockerClient, fleet: Fleet) -> Iterator[tuple[SSHEngine, bytes]]:
    try:
        host_engine.images.get(SSH_IMAGE)
    except docker.errors.ImageNotFound:
        # apt-get from deb.debian.org during the build: the host's network (plain http).
        host_engine.images.build(
            fileobj=io.BytesIO(DOCKERFILE.encode()), tag=SSH_IMAGE, network_mode="host", rm=True
        )
    suffix = secrets.token_hex(3)
    name = f"agentpool-fleet-ssh-{suffix}"
    host_engine.volumes.create(name=name, labels={LABEL: suffix})
    try:
        container = create_container(
            host_engine,
            SSH_IMAGE,
            "capabilities",
            CAP_DROP,
            name=name,
            labels={LABEL: suffix},
            command=["sh", "-c", "exec /usr/sbin/sshd -D -e"],
            volumes={name: {"bind": "/var/lib/docker", "mode": "rw"}},
        )
        container.start()
        private, public = _key()
        _put(host_engine, name, "/root/.ssh/authorized_keys", public.encode() + b"\n")
        ip = host_engine.api.inspect_container(name)["NetworkSettings"]["IPAddress"]
        host_key = (
            host_engine.containers.get(name)
            .exec_run(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"])
            .output.decode()
            .split()
        )
        deadline = time.monotonic() + 90
        while True:  # sshd starts once the inner engine is ready (the entrypoint's command mode)
            try:
                with socket.create_connection((ip, 22), timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, host_engine.api.logs(name, tail=30).decode()
                time.sleep(0.3)
        hostname = host_engine.api.inspect_container(name)["Config"]["Hostname"]
        yield SSHEngine(ip, f"{host_key[0]} {host_key[1]}", name, hostname), private
    finally:
        for c in host_engine.containers.list(
            all=True, filters={"label": f"{LABEL}={suffix}"}, ignore_removed=True
        ):
            c.remove(force=True, v=True)
        for v in host_engine.volumes.list(filters={"label": f"{LABEL}={suffix}"}):
            v.remove(force=True)


def test_an_ssh_engine_works_with_only_the_users_ssh_files(
    ssh_engine: tuple[SSHEngine, bytes], fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, private = ssh_engine
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.setenv("HOME", str(_home(tmp_path / "home", private, f"{engine.ip} {engine.host_key}\n")))
    host = DockerHost.from_config(DockerHostConfig(name="over-ssh", url=engine.url))
    instance = "t" + secrets.token_hex(3)
    try:
        host.ping()
        # The engine behind sshd in that container (its host name), not the machine's own.
        assert host.client.info()["Name"] == engine.hostname
        copy_image(fleet.local, host, BUSYBOX)  # images travel over SSH too
        name = f"{instance}-noop-1"
        labels = {LABEL_INSTANCE: instance, LABEL_POOL: "noop", LABEL_AGENT: name}
        host.create_volume(name, labels)
        container = host.start_agent(
            AgentSpec(
                name=name,
                pool="noop",
                image=BUSYBOX,
                volume=name,
                env={},
                security="capabilities",
                cap_drop=tuple(CAP_DROP),
                labels=labels,
            )
        )
        [seen] = host.observe(instance).containers
        assert seen.id == container
        host.remove_container(container, stop_timeout=1)
        host.remove_volume(name)
        assert not host.observe(instance).containers
    finally:
        host.close()


def test_unknown_host_key_and_refused_key_each_get_their_fix(
    ssh_engine: tuple[SSHEngine, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, private = ssh_engine
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.setenv("HOME", str(_home(tmp_path / "stranger", private, "")))
    with pytest.raises(DockerError) as unknown:
        DockerHost("ssh", engine.url).ping()
    assert "known_hosts" in str(unknown.value)
    assert f"ssh-keyscan -p 22 {engine.ip}" in connection_fix(
        engine.url, False, unknown.value.__cause__ or unknown.value
    )

    other, _ = _key()
    monkeypatch.setenv("HOME", str(_home(tmp_path / "wrongkey", other, f"{engine.ip} {engine.host_key}\n")))
    with pytest.raises(DockerError) as refused:
        DockerHost("ssh", engine.url).ping()
    assert "Authentication failed" in str(refused.value)
    assert "let root log in" in connection_fix(engine.url, False, refused.value.__cause__ or refused.value)
