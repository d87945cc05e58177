"""A fleet of three real Docker engines on this machine, reached over TCP with mutual TLS.

Each engine is the project's own dind image in ``PORT`` mode ("Docker as a service") started
on the machine's engine with the ``capabilities`` security profile and its own
``/var/lib/docker`` volume: each is its own network namespace with its own address. The tests
make the certificates (a CA, a server certificate per engine naming its IP, one client
certificate), so the engines are reached the way a real fleet is: ``tcp://IP:2376`` with
verification on.

Addresses: the engines sit on a network of their own with a fixed subnet, so that each
engine's address (the one its certificate names) is known before it starts and stays the same
when it is stopped and started again. The subnet is a free 192.168.N.0/24, away from 172.16/12:
the engines' own dockerd takes 172.17.0.0/16 for its bridge, and an agent inside an engine
takes the next 172.x for its own dockerd; an address of the machine in that range would be
shadowed for agents there. Agents in the engines reach the machine (the test controller) at the
gateway of that network, read from ``docker network inspect``, through the engines' NAT.

Bring-up runs the three in parallel once per session; busybox (2 MB) is copied into each by
:func:`agentpool.adapters.images.copy_image`; the 600 MB agent image only where a test asks
(:meth:`Fleet.ensure_image`). Everything created carries the label ``agentpool.test-fleet`` and
is removed at the end.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
import pytest

from agentpool.adapters.docker import DockerHost
from agentpool.adapters.images import copy_image
from agentpool.config import DockerHostConfig
from agentpool.security import create_container
from tests.engine import local_engine
from tests.fleet.certs import CertificateAuthority, Issued

IMAGE = "agentpool/dind-agent:latest"
BUSYBOX = "agentpool/busybox:latest"
PORT = 2376
SIZE = 3
LABEL = "agentpool.test-fleet"
CAP_DROP = ["SYS_RESOURCE"]  # this machine's capability bounding set lacks it

pytestmark = pytest.mark.docker


def local_url() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


@dataclass
class FleetEngine:
    """One engine of the fleet: a PORT-mode dind container with its own address."""

    name: str
    container: str
    volume: str
    ip: str
    client_certs: Issued

    @property
    def url(self) -> str:
        return f"tcp://{self.ip}:{PORT}"

    def config(self, max_agents: int = 5) -> DockerHostConfig:
        return DockerHostConfig(
            name=self.name, url=self.url, max_agents=max_agents, cert_path=str(self.client_certs.dir)
        )

    def host(self) -> DockerHost:
        """agentpool's adapter for this engine, over TLS with the client certificate."""
        return DockerHost.from_config(self.config())

    def yaml(self, max_agents: int = 5) -> str:
        """This engine as an item of a config's ``docker_hosts:``."""
        return (
            f"  - name: {self.name}\n    url: {self.url}\n    max_agents: {max_agents}\n"
            f"    cert_path: {self.client_certs.dir}\n"
        )


@dataclass
class Fleet:
    engines: list[FleetEngine]
    network: str
    gateway: str  # the machine's address as agents in the engines reach it
    ca: Path
    client_certs: Issued
    local: DockerHost  # the machine's own engine, where the images are built
    bring_up_seconds: float
    copies: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)

    def docker_hosts_yaml(self, max_agents: int = 5) -> str:
        return "docker_hosts:\n" + "".join(e.yaml(max_agents) for e in self.engines)

    def ensure_image(self, engine: FleetEngine, image: str) -> None:
        """Copy ``image`` from the machine's engine into ``engine`` unless it is there."""
        host = engine.host()
        try:
            if host.image_id(image) is None:
                start = time.monotonic()
                sent = copy_image(self.local, host, image)
                self.copies[(engine.name, image)] = (sent, time.monotonic() - start)
        finally:
            host.close()


def free_subnet(client: docker.DockerClient) -> tuple[ipaddress.IPv4Network, list[ipaddress.IPv4Network]]:
    used = []
    for net in client.networks.list():
        for pool in (net.attrs.get("IPAM") or {}).get("Config") or ():
            if pool.get("Subnet") and ":" not in pool["Subnet"]:
                used.append(ipaddress.ip_network(pool["Subnet"], strict=False))
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=False).stdout
    for line in routes.splitlines():
        first = line.split()[0] if line.split() else ""
        if "/" in first:
            used.append(ipaddress.ip_network(first, strict=False))
    candidates = [ipaddress.ip_network(f"192.168.{n}.0/24") for n in range(200, 255)]
    free = [c for c in candidates if not any(c.overlaps(u) for u in used)]
    if not free:
        pytest.fail("no free 192.168.200-254.0/24 subnet for the fleet network")
    return free[secrets.randbelow(len(free))], free


def _create_network(client: docker.DockerClient, name: str, suffix: str) -> tuple[str, list[str]]:
    """The fleet's network; (gateway, engine addresses). Retries when another run took the subnet."""
    for _ in range(5):
        subnet, _free = free_subnet(client)
        hosts = [str(h) for h in subnet.hosts()]
        gateway, addresses = hosts[0], hosts[1 : 1 + SIZE]
        ipam = docker.types.IPAMConfig(
            pool_configs=[docker.types.IPAMPool(subnet=str(subnet), gateway=gateway)]
        )
        try:
            client.networks.create(name, driver="bridge", ipam=ipam, labels={LABEL: suffix})
        except docker.errors.APIError as exc:
            if "overlap" in str(exc).lower():
                continue
            raise
        inspected = client.api.inspect_network(name)
        found = inspected["IPAM"]["Config"][0]["Gateway"]
        return str(found), addresses
    pytest.fail("could not create the fleet network: every free subnet was taken meanwhile")


def _start_engine(
    client: docker.DockerClient, network: str, ip: str, name: str, suffix: str, server: Issued
) -> str:
    volume = f"agentpool-fleet-{suffix}-{name}"
    client.volumes.create(name=volume, labels={LABEL: suffix})
    container = create_container(
        client,
        IMAGE,
        "capabilities",
        CAP_DROP,
        name=volume,
        labels={LABEL: suffix},
        environment={"PORT": str(PORT), "DIND_START_TIMEOUT": "60"},
        volumes={
            volume: {"bind": "/var/lib/docker", "mode": "rw"},
            str(server.dir): {"bind": "/certs/server", "mode": "ro"},
        },
        network=network,
        networking_config={network: client.api.create_endpoint_config(ipv4_address=ip)},
    )
    container.start()
    return str(container.name)


def _wait_engine(engine: FleetEngine, client: docker.DockerClient, timeout: float = 90) -> None:
    """Until the engine answers over TLS; its container's log when it never does."""
    deadline = time.monotonic() + timeout
    host = engine.host()
    try:
        while True:
            try:
                host.ping()
                return
            except Exception as exc:
                state = client.api.inspect_container(engine.container)["State"]
                if not state["Running"] or time.monotonic() > deadline:
                    logs = client.api.logs(engine.container, tail=40).decode(errors="replace")
                    raise AssertionError(f"engine {engine.name} did not come up ({exc}):\n{logs}") from exc
                host.close()
                time.sleep(0.3)
    finally:
        host.close()


def _cleanup(client: docker.DockerClient, suffix: str) -> None:
    label = f"{LABEL}={suffix}"
    for container in client.containers.list(all=True, filters={"label": label}, ignore_removed=True):
        container.remove(force=True, v=True)
    for volume in client.volumes.list(filters={"label": label}):
        volume.remove(force=True)
    for network in client.networks.list(filters={"label": label}):
        network.remove()


@pytest.fixture(scope="session")
def host_engine() -> Iterator[docker.DockerClient]:
    client = local_engine(IMAGE, BUSYBOX)
    yield client
    client.close()


@pytest.fixture(scope="session")
def fleet(host_engine: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Three TLS engines, each with busybox loaded; removed with everything in them at the end."""
    suffix = secrets.token_hex(3)
    root = tmp_path_factory.mktemp("fleet")
    network = f"agentpool-fleet-{suffix}"
    local = DockerHost("local", local_url())
    start = time.monotonic()
    try:
        gateway, addresses = _create_network(host_engine, network, suffix)
        ca = CertificateAuthority()
        (root / "ca.pem").write_bytes(ca.pem)
        client_certs = ca.issue(root / "client", "agentpool")
        names = [f"fleet-{i + 1}" for i in range(SIZE)]
        servers = [
            ca.issue(root / "server" / name, name, server_ips=(ip, "127.0.0.1"))
            for name, ip in zip(names, addresses, strict=True)
        ]
        with ThreadPoolExecutor(SIZE) as pool:
            containers = list(
                pool.map(
                    lambda args: _start_engine(host_engine, network, args[1], args[0], suffix, args[2]),
                    zip(names, addresses, servers, strict=True),
                )
            )
            engines = [
                FleetEngine(name, container, container, ip, client_certs)
                for name, container, ip in zip(names, containers, addresses, strict=True)
            ]
            list(pool.map(lambda e: _wait_engine(e, host_engine), engines))
            up = time.monotonic() - start
            fleet = Fleet(engines, network, gateway, root / "ca.pem", client_certs, local, up)
            list(pool.map(lambda e: fleet.ensure_image(e, BUSYBOX), engines))
        print(
            f"\nfleet: {SIZE} TLS engines up in {up:.1f}s (busybox loaded at {time.monotonic() - start:.1f}s)"
        )
        yield fleet
    finally:
        local.close()
        _cleanup(host_engine, suffix)
