"""doctor against the fleet's TLS engines: OK with the right files, and the fix that applies
when the client certificate is missing or the CA is not the engine's.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import docker
import docker.types
import pytest

from agentpool.config import DockerHostConfig, DockerTLSConfig, load_config_text
from agentpool.doctor import check_docker_host, format_check
from tests.fleet.certs import CertificateAuthority
from tests.fleet.conftest import BUSYBOX, CAP_DROP, LABEL, Fleet, free_subnet

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

CONFIG = f"""\
jenkins:
  url: http://127.0.0.1:9/
  user: agentpool
  token: t
instance: fleetdoc
pools:
  - name: noop
    labels: [noop]
    image: {BUSYBOX}
    security: capabilities
    cap_drop: [{", ".join(CAP_DROP)}]
"""


def test_doctor_passes_a_tls_engine_with_the_client_certificate(fleet: Fleet) -> None:
    engine = fleet.engines[1]
    config = load_config_text(CONFIG + fleet.docker_hosts_yaml())
    checks = {c.name: c for c in check_docker_host(config, engine.config())}
    lines = "\n".join(format_check(c) for c in checks.values())
    assert checks[f"docker {engine.name} reachable"].ok, lines
    assert engine.url in checks[f"docker {engine.name} reachable"].detail
    assert checks[f"docker {engine.name} image {BUSYBOX}"].ok, lines
    assert checks[f"docker {engine.name} security noop (capabilities)"].ok, lines


def test_doctor_names_the_tls_fix(fleet: Fleet, tmp_path: Path) -> None:
    engine = fleet.engines[1]
    config = load_config_text(CONFIG + fleet.docker_hosts_yaml())
    no_cert = DockerHostConfig(name="nocert", url=engine.url, tls=DockerTLSConfig(ca=str(fleet.ca)))
    [check] = check_docker_host(config, no_cert)
    assert not check.ok
    assert "refused agentpool's client certificate" in check.fix, format_check(check)

    (tmp_path / "other.pem").write_bytes(CertificateAuthority("other").pem)
    certs = fleet.client_certs
    wrong_ca = DockerHostConfig(
        name="wrongca",
        url=engine.url,
        tls=DockerTLSConfig(ca=str(tmp_path / "other.pem"), cert=str(certs.cert), key=str(certs.key)),
    )
    [check] = check_docker_host(config, wrong_ca)
    assert not check.ok
    assert "not signed by tls.ca" in check.fix, format_check(check)
    assert "BEGIN" not in format_check(check)  # no certificate or key material in the output


def test_doctor_names_a_wrong_name_and_plain_tcp_on_a_tls_port(
    fleet: Fleet, host_engine: docker.DockerClient
) -> None:
    engine = fleet.engines[2]
    config = load_config_text(CONFIG + fleet.docker_hosts_yaml())
    # A second address for the engine that its certificate does not name.
    subnet, _ = free_subnet(host_engine)
    hosts = [str(h) for h in subnet.hosts()]
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=str(subnet), gateway=hosts[0])])
    network = host_engine.networks.create(
        f"agentpool-fleet-san-{secrets.token_hex(3)}", driver="bridge", ipam=ipam, labels={LABEL: "san"}
    )
    try:
        network.connect(engine.container, ipv4_address=hosts[1])
        other_name = DockerHostConfig(
            name="othername", url=f"tcp://{hosts[1]}:2376", cert_path=str(fleet.client_certs.dir)
        )
        [check] = check_docker_host(config, other_name)
        assert not check.ok
        assert f"does not name {hosts[1]}" in check.fix, format_check(check)
    finally:
        network.disconnect(engine.container, force=True)
        network.remove()

    plain = DockerHostConfig(name="plain", url=engine.url, tls=DockerTLSConfig(enabled=False))
    [check] = check_docker_host(config, plain)
    assert not check.ok
    assert "the engine speaks TLS" in check.fix, format_check(check)
    engine.host().ping()  # the engine itself is fine
