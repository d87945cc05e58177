"""docker_hosts[]: TLS settings for tcp:// engines, plain TCP only on request, checked files."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from agentpool.config import ConfigError, load_config, load_config_text

HEAD = """\
jenkins:
  url: http://jenkins:8080
  user: agentpool
  token: t
pools:
  - name: dind
    labels: [docker]
    image: agentpool/dind-agent:latest
docker_hosts:
"""
KEY_TEXT = "-----BEGIN PRIVATE KEY-----\nNOT-TO-BE-PRINTED\n-----END PRIVATE KEY-----\n"


def certs(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "ca.pem").write_text("ca\n")
    (root / "cert.pem").write_text("cert\n")
    (root / "key.pem").write_text(KEY_TEXT)
    return root


def errors_of(tmp_path: Path, hosts: str) -> list[str]:
    path = tmp_path / "agentpool.yaml"
    path.write_text(HEAD + textwrap.dedent(hosts))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "NOT-TO-BE-PRINTED" not in str(caught.value)
    return caught.value.errors


def test_tls_files_are_resolved_relative_to_the_config(tmp_path: Path) -> None:
    certs(tmp_path / "b")
    path = tmp_path / "agentpool.yaml"
    path.write_text(
        HEAD
        + "  - name: b\n    url: tcp://10.0.0.5:2376\n"
        + "    tls: {ca: b/ca.pem, cert: b/cert.pem, key: b/key.pem}\n"
    )
    [host] = load_config(path).docker_hosts
    tls = host.effective_tls
    assert tls is not None and tls.verify
    assert (tls.ca, tls.cert, tls.key) == tuple(
        str(tmp_path / "b" / f) for f in ("ca.pem", "cert.pem", "key.pem")
    )


def test_cert_path_follows_dockers_convention(tmp_path: Path) -> None:
    certs(tmp_path / "c")
    path = tmp_path / "agentpool.yaml"
    path.write_text(HEAD + "  - name: c\n    url: tcp://10.0.0.6:2376\n    cert_path: c\n")
    [host] = load_config(path).docker_hosts
    assert host.cert_path == str(tmp_path / "c")
    tls = host.effective_tls
    assert tls is not None and tls.verify
    assert tls.key == str(tmp_path / "c" / "key.pem")


def test_plain_tcp_needs_tls_false_and_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    [error] = errors_of(tmp_path, "  - name: p\n    url: tcp://10.0.0.7:2375\n")
    assert error.startswith(
        f"{tmp_path / 'agentpool.yaml'}:11: docker_hosts[0].url: a tcp:// engine needs TLS"
    )
    assert "tls: false" in error
    with caplog.at_level(logging.WARNING):
        config = load_config_text(HEAD + "  - name: p\n    url: tcp://10.0.0.7:2375\n    tls: false\n")
    assert config.docker_hosts[0].effective_tls is None
    assert "plain TCP without TLS" in caplog.text


@pytest.mark.parametrize(
    ("hosts", "expected"),
    [
        (
            "  - name: u\n    url: unix:///var/run/docker.sock\n    cert_path: /etc\n",
            "docker_hosts[0].cert_path: applies only to tcp:// engines, not unix://",
        ),
        (
            "  - name: s\n    url: ssh://agentpool@b\n    tls: false\n",
            "docker_hosts[0].tls: applies only to tcp:// engines, not ssh://",
        ),
        (
            "  - name: t\n    url: tcp://b:2376\n    tls: true\n",
            "docker_hosts[0].tls: give the files",
        ),
        (
            "  - name: t\n    url: tcp://b:2376\n    tls: {verify: true}\n",
            "docker_hosts[0].tls.ca: verify: true needs the CA certificate",
        ),
        (
            "  - name: t\n    url: tcp://b:2376\n    cert_path: /x\n    tls: false\n",
            "docker_hosts[0].cert_path: give either tls or cert_path, not both",
        ),
        (
            "  - name: t\n    url: tcp://b:2376\n    tls: {ca: x, verify: maybe}\n",
            "docker_hosts[0].tls.verify: Input should be a valid boolean",
        ),
        (
            "  - name: t\n    url: http://b:2376\n    tls: false\n",
            "docker_hosts[0].url: expected a Docker engine URL (unix://, tcp://, ssh://)",
        ),
    ],
)
def test_tls_settings_that_do_not_fit(tmp_path: Path, hosts: str, expected: str) -> None:
    found = errors_of(tmp_path, hosts)
    assert any(expected in e for e in found), found


def test_missing_and_odd_files_are_named_and_keys_never_printed(tmp_path: Path) -> None:
    d = certs(tmp_path / "d")
    (d / "cert.pem").unlink()
    (d / "key.pem").unlink()
    (d / "key.pem").mkdir()
    found = errors_of(
        tmp_path,
        f"  - name: d\n    url: tcp://b:2376\n    tls: {{ca: {d}/ca.pem, cert: {d}/cert.pem, key: {d}/key.pem}}\n",
    )
    assert any(f"tls.cert: TLS cert file '{d}/cert.pem': no such file" in e for e in found), found
    assert any(f"tls.key: TLS key file '{d}/key.pem': not a regular file" in e for e in found), found
    assert not any("tls.ca" in e for e in found)


def test_cert_without_key(tmp_path: Path) -> None:
    d = certs(tmp_path / "e")
    found = errors_of(
        tmp_path, f"  - name: e\n    url: tcp://b:2376\n    tls: {{ca: {d}/ca.pem, cert: {d}/cert.pem}}\n"
    )
    assert any("docker_hosts[0].tls.key: give cert and key together" in e for e in found), found


def test_default_host_from_docker_tls_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    minimal = HEAD.removesuffix("docker_hosts:\n")
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.8:2376")
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(certs(tmp_path / "env")))
    [host] = load_config_text(minimal).docker_hosts
    assert host.cert_path == str(tmp_path / "env")
    monkeypatch.delenv("DOCKER_TLS_VERIFY")
    [plain] = load_config_text(minimal).docker_hosts
    assert plain.effective_tls is None and plain.tls is not None and not plain.tls.enabled


def test_verify_false_is_accepted_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = certs(tmp_path / "f")
    with caplog.at_level(logging.WARNING):
        config = load_config_text(
            HEAD
            + f"  - name: f\n    url: tcp://b:2376\n    tls: {{cert: {d}/cert.pem, key: {d}/key.pem, verify: false}}\n"
        )
    tls = config.docker_hosts[0].effective_tls
    assert tls is not None and not tls.verify and tls.ca is None
    assert "tls.verify is false" in caplog.text


def test_image_archive_is_a_checked_file(tmp_path: Path) -> None:
    (tmp_path / "agent.tar").write_bytes(b"tar")
    path = tmp_path / "agentpool.yaml"
    path.write_text(HEAD.replace("docker_hosts:\n", "    image_archive: agent.tar\n"))
    assert load_config(path).pools[0].image_archive == str(tmp_path / "agent.tar")
    path.write_text(HEAD.replace("docker_hosts:\n", "    image_archive: missing.tar\n"))
    with pytest.raises(
        ConfigError,
        match=r"agentpool.yaml:9: pools\[0\].image_archive: image archive .*missing.tar': no such file",
    ):
        load_config(path)
