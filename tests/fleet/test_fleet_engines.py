"""The fleet fixture itself: three TLS engines, each its own namespace, that only a client
with the fleet's client certificate can use, driven through agentpool's adapter and config.
"""

from __future__ import annotations

import secrets
import time

import docker
import docker.errors
import docker.tls
import pytest
import requests

from agentpool.adapters.docker import AgentSpec, DockerHost
from agentpool.config import DockerTLSConfig, load_config_text
from agentpool.errors import DockerError
from agentpool.model import LABEL_AGENT, LABEL_INSTANCE, LABEL_POOL, ContainerState
from tests.fleet.certs import CertificateAuthority
from tests.fleet.conftest import BUSYBOX, CAP_DROP, Fleet

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

CONFIG = """\
jenkins:
  url: http://127.0.0.1:9/
  user: agentpool
  token: t
pools:
  - name: noop
    labels: [noop]
    image: {image}
"""


def test_three_engines_in_their_own_namespaces_each_run_an_agent_over_tls(fleet: Fleet) -> None:
    config = load_config_text(CONFIG.format(image=BUSYBOX) + fleet.docker_hosts_yaml(), "fleet.yaml")
    instance = "t" + secrets.token_hex(3)
    assert [h.url for h in config.docker_hosts] == [e.url for e in fleet.engines]
    ids, addresses = set(), set()
    for host_config in config.docker_hosts:
        assert host_config.url.startswith("tcp://")
        host = DockerHost.from_config(host_config)
        assert host.tls is not None and host.tls.verify and host.tls.key is not None
        try:
            info = host.client.info()
            ids.add(info["ID"])
            addresses.add(host_config.url)
            name = f"{instance}-noop-{host_config.name}"
            labels = {LABEL_INSTANCE: instance, LABEL_POOL: "noop", LABEL_AGENT: name}
            host.create_volume(name, labels)
            host.start_agent(
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
            deadline = time.monotonic() + 30
            while True:
                [container] = host.observe(instance).containers
                if container.state is ContainerState.EXITED or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert (container.name, container.pool, container.volume) == (name, "noop", name)
            assert container.state is ContainerState.EXITED
            assert host.client.api.inspect_container(container.id)["State"]["ExitCode"] == 0
            host.remove_container(container.id, stop_timeout=1)
            host.remove_volume(name)
            view = host.observe(instance)
            assert view.reachable and not view.containers and not view.volumes
        finally:
            host.close()
    # Three different engines (not one reached three ways), at three addresses.
    assert len(ids) == 3
    assert len(addresses) == 3


def test_a_client_without_the_client_certificate_is_refused(fleet: Fleet) -> None:
    engine = fleet.engines[0]
    anonymous = DockerHost("anonymous", engine.url, tls=DockerTLSConfig(ca=str(fleet.ca)))
    with pytest.raises(DockerError) as refused:
        anonymous.ping()
    assert refused.value.kind == "unreachable"
    assert "certificate" in str(refused.value).lower() or "alert" in str(refused.value).lower()
    # The same with a bare HTTPS client that trusts the CA: the handshake fails.
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"https://{engine.ip}:2376/version", verify=str(fleet.ca), timeout=10)
    # Plain HTTP is answered with an error, never with the API.
    plain = requests.get(f"http://{engine.ip}:2376/version", timeout=10)
    assert plain.status_code == 400
    # And with the client certificate it works (the refusal was about the certificate).
    engine.host().ping()


def test_an_engine_certificate_from_another_ca_fails_verification(fleet: Fleet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    other = CertificateAuthority("some other CA")
    (tmp_path / "other-ca.pem").write_bytes(other.pem)
    certs = fleet.client_certs
    host = DockerHost(
        "wrong-ca",
        fleet.engines[1].url,
        tls=DockerTLSConfig(ca=str(tmp_path / "other-ca.pem"), cert=str(certs.cert), key=str(certs.key)),
    )
    with pytest.raises(DockerError) as failed:
        host.ping()
    assert "CERTIFICATE_VERIFY_FAILED" in str(failed.value)


def test_the_engine_ca_holds_even_with_requests_ca_bundle_set(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    # requests lets REQUESTS_CA_BUNDLE replace a session's CA file (psf/requests#3829): with
    # the machine's bundle there, the SDK alone checks the engine against the wrong CAs.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    engine, certs = fleet.engines[2], fleet.client_certs
    tls = docker.tls.TLSConfig(
        client_cert=(str(certs.cert), str(certs.key)), ca_cert=str(certs.ca), verify=True
    )
    with pytest.raises(docker.errors.DockerException, match="CERTIFICATE_VERIFY_FAILED"):
        docker.APIClient(base_url=engine.url, tls=tls, timeout=10)
    host = engine.host()
    try:
        host.ping()  # agentpool's client keeps the engine's CA
    finally:
        host.close()
