"""Config input a typo or a hostile neighbour writes: each is refused on one located line, or read bounded.

The cases are the ones issue 11 found accepted-but-wrong, printing a traceback, or hanging.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from agentpool.config import ConfigError, load_config, load_config_text
from agentpool.logs import redact

BASE = """\
jenkins:
  url: http://jenkins:8080
  user: agentpool
  token: inline-secret-value
pools:
  - name: dind
    labels: [docker, linux]
    image: agentpool/dind-agent:latest
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, "f.yaml")
    for line in caught.value.errors:
        assert "\n" not in line and "\r" not in line
    return caught.value.errors


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("    cpus: .inf\n", "f.yaml:9: pools[0].cpus: Input should be a finite number"),
        ("    cpus: .nan\n", "f.yaml:9: pools[0].cpus: Input should be a finite number"),
        ("    cpus: 5000\n", "f.yaml:9: pools[0].cpus: Input should be less than or equal to 1024"),
        ("    idle_timeout: .inf\n", "f.yaml:9: pools[0].idle_timeout: a duration must be a finite number"),
        ("    launch_timeout: 100000d\n", "f.yaml:9: pools[0].launch_timeout: must be between 1s and 1d"),
        ("poll_interval: 1ms\n", "f.yaml:9: poll_interval: must be between 0.5s and 1h, got '1ms'"),
        ("poll_interval: " + "9" * 400 + "\n", "f.yaml:9: poll_interval: "),
        ("    memory: 1\n", "f.yaml:9: pools[0].memory: Input should be greater than or equal to 6291456"),
        ("    memory: 99999999999999t\n", "f.yaml:9: pools[0].memory: Input should be less than or equal to"),
        (
            "    executors: 100000\n",
            "f.yaml:9: pools[0].executors: Input should be less than or equal to 100",
        ),
        (
            "    env: {A: null}\n",
            "f.yaml:9: pools[0].env.A: env values must be strings, numbers or booleans, got null",
        ),
        (
            "    env: {A: [1]}\n",
            "f.yaml:9: pools[0].env.A: env values must be strings, numbers or booleans, got list",
        ),
        (
            "    env: {A: {b: 1}}\n",
            "f.yaml:9: pools[0].env.A: env values must be strings, numbers or booleans, got dict",
        ),
        ("    env: {A: .inf}\n", "f.yaml:9: pools[0].env.A: inf is not a finite number"),
        (
            "    env: {PORT: '2375'}\n",
            "f.yaml:9: pools[0].env.PORT: PORT is set by agentpool or read by the agent",
        ),
        (
            "    env: {DIND_INSECURE_TCP: 'true'}\n",
            "f.yaml:9: pools[0].env.DIND_INSECURE_TCP: DIND_INSECURE_TCP is",
        ),
        (
            "    env: {DOCKERD_OPTS: -H tcp://0.0.0.0:2375}\n",
            "f.yaml:9: pools[0].env.DOCKERD_OPTS: DOCKERD_OPTS is",
        ),
        ("    env: {DOCKER_TLS_SAN: x}\n", "f.yaml:9: pools[0].env.DOCKER_TLS_SAN: DOCKER_TLS_SAN is"),
        ("    env: {JENKINS_TUNNEL: x}\n", "f.yaml:9: pools[0].env.JENKINS_TUNNEL: JENKINS_TUNNEL is"),
        (
            "    env: {BAD-NAME: x}\n",
            "f.yaml:9: pools[0].env.BAD-NAME: 'BAD-NAME' is not a valid environment",
        ),
        (
            "    image: 'Agentpool/DIND:@@'\n",
            "f.yaml:9: pools[0].image: 'Agentpool/DIND:@@' is not a Docker image",
        ),
        ("    image: 'img:tag with space'\n", "f.yaml:9: pools[0].image: "),
        (
            "    security: capabilities\n    cap_drop: [NOPE]\n",
            "f.yaml:10: pools[0].cap_drop: 'NOPE' is not a Linux",
        ),
        (
            '    labels: ["docker\\n"]\n',
            "f.yaml:9: pools[0].labels: 'docker\\n' is not a plain Jenkins label",
        ),
        (
            "metrics: {listen: 'evil host:80'}\n",
            "f.yaml:9: metrics.listen: expected HOST:PORT with an IP address",
        ),
        (
            "metrics: {listen: '0.0.0.0:99999'}\n",
            "f.yaml:9: metrics.listen: expected HOST:PORT (port 0-65535)",
        ),
        ("metrics: {listen: '[::zz]:1'}\n", "f.yaml:9: metrics.listen: '[::zz]' is not an IPv6 address"),
        (
            "docker_hosts: [{name: a, url: 'foo://x'}]\n",
            "f.yaml:9: docker_hosts[0].url: expected a Docker engine URL",
        ),
        (
            "docker_hosts: [{name: a, url: 'unix://rel.sock'}]\n",
            "f.yaml:9: docker_hosts[0].url: expected unix:///",
        ),
        ("docker_hosts: [{name: a, url: 'tcp://h:99999'}]\n", "f.yaml:9: docker_hosts[0].url: the port of"),
        (
            "docker_hosts: [{name: a, url: 'tcp://u:pw@h:2375'}]\n",
            "f.yaml:9: docker_hosts[0].url: credentials in a",
        ),
    ],
)
def test_wrong_values_are_refused_naming_the_key(extra: str, expected: str) -> None:
    errors = errors_of(BASE + extra)
    assert any(e.startswith(expected) for e in errors), errors


def test_a_pool_name_with_a_trailing_newline_is_refused() -> None:
    [error] = errors_of(BASE.replace("name: dind", 'name: "dind\\n"'))
    assert error.startswith("f.yaml:6: pools[0].name: pool name 'dind\\n' must be")


def test_env_numbers_and_booleans_become_strings() -> None:
    config = load_config_text(BASE + "    env: {A: 1, B: true, C: 1.5, D: text}\n")
    assert config.pools[0].env == {"A": "1", "B": "true", "C": "1.5", "D": "text"}


@pytest.mark.parametrize("url", ["http://admin:hunter2-pw@jenkins:8080/", "https://hunter2-pw@jenkins/"])
def test_credentials_in_the_url_are_refused_without_printing_them(url: str) -> None:
    [error] = errors_of(BASE.replace("http://jenkins:8080", url))
    assert error.startswith("f.yaml:2: jenkins.url: credentials in jenkins.url are refused")
    assert "token_file" in error and "hunter2" not in error


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            BASE + "    cpus: !foo 3\n",
            "f.yaml:9: (yaml): could not determine a constructor for the tag '!foo'",
        ),
        (
            BASE + "    env: {? [a] : b}\n",
            "f.yaml:9: (yaml): while constructing a mapping; found unhashable key",
        ),
        (BASE + "    executors: !!int 'abc'\n", "f.yaml:9: (yaml): cannot read this int value: ValueError"),
        (
            BASE + "    when: 2001-02-30\n",
            "f.yaml:9: (yaml): cannot read this timestamp value: day is out of range",
        ),
        (
            BASE + "    executors: " + "9" * 5000 + "\n",
            "f.yaml:9: (yaml): cannot read this int value: Exceeds the limit",
        ),
        (
            BASE + "    env: " + "[" * 5000 + "]" * 5000 + "\n",
            "f.yaml:9: (yaml): nested deeper than 32 levels",
        ),
        (BASE + "    x: \x07\n", "f.yaml:9: (yaml): character #x0007 is not allowed in YAML"),
        (BASE + "    x: [\n", "f.yaml:10: (yaml): while parsing a flow node; expected the node content"),
        (BASE + "    1: 2\n", "f.yaml:9: pools[0].1: keys must be strings"),
    ],
)
def test_yaml_failures_are_one_located_line(text: str, expected: str) -> None:
    [error] = errors_of(text)
    assert error.startswith(expected), error


def test_a_tagged_token_is_not_printed() -> None:
    errors = errors_of(BASE.replace("token: inline-secret-value", "token: !!int inline-secret-value"))
    assert errors == ["f.yaml:4: (yaml): cannot read this int value: ValueError"]


def test_an_alias_bomb_is_stopped_at_its_line() -> None:
    bomb = "a0: &a0 [" + ", ".join(["x"] * 10) + "]\n"
    for i in range(1, 9):
        bomb += f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n"
    [error] = errors_of(BASE + bomb)
    assert error == "f.yaml:13: (yaml): more than 20000 values once aliases are expanded"


def test_a_key_holding_a_newline_cannot_forge_a_line() -> None:
    errors = errors_of(BASE + '    "x\\nf.yaml:1: jenkins: forged": 1\n')
    assert errors == ["f.yaml:9: pools[0].x\\nf.yaml:1: jenkins: forged: unknown key"]


def test_a_file_name_with_control_characters_is_escaped(tmp_path: Path) -> None:
    path = tmp_path / "a\nb.yaml"
    path.write_text("[")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [error] = caught.value.errors
    assert "\n" not in error and "a\\nb.yaml:" in error


@pytest.mark.timeout(10)
def test_a_fifo_config_or_token_file_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match=r"fifo:1: \(file\): cannot read the config: not a regular file"):
        load_config(fifo)
    config = tmp_path / "c.yaml"
    config.write_text(BASE.replace("token: inline-secret-value", f"token_file: {fifo}"))
    with pytest.raises(
        ConfigError, match=r"c.yaml:4: jenkins.token_file: cannot read token file .*: not a regular"
    ):
        load_config(config)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("special", ["/dev/zero", "/etc"])
def test_devices_and_directories_are_refused(tmp_path: Path, special: str) -> None:
    with pytest.raises(ConfigError, match=rf"{special}:1: \(file\): cannot read the config: "):
        load_config(special)
    config = tmp_path / "c.yaml"
    config.write_text(BASE.replace("token: inline-secret-value", f"token_file: {special}"))
    with pytest.raises(ConfigError, match=r"jenkins.token_file: cannot read token file"):
        load_config(config)


def test_a_huge_config_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(BASE + "# " + "x" * (2 * 1024 * 1024) + "\n")
    with pytest.raises(ConfigError, match=r"big.yaml:1: \(file\): cannot read the config: larger than"):
        load_config(path)


def test_non_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes(BASE.encode() + b"    x: \xff\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.errors == [f"{path}:9: (file): the config is not UTF-8 text"]


def test_env_files_and_the_admin_token_are_read_and_masked(tmp_path: Path) -> None:
    (tmp_path / "proxy").write_text("http://user:proxy-pass-77@proxy:3128\n")
    (tmp_path / "admin").write_text("admin-token-991\n")
    path = tmp_path / "c.yaml"
    path.write_text(
        BASE
        + "    env_files: {HTTP_PROXY: proxy}\n"
        + textwrap.dedent(
            """\
            metrics:
              listen: 127.0.0.1:9464
              admin_token_file: admin
            """
        )
    )
    config = load_config(path)
    assert config.pools[0].env == {"HTTP_PROXY": "http://user:proxy-pass-77@proxy:3128"}
    assert config.metrics.admin_token is not None
    assert config.metrics.admin_token.get_secret_value() == "admin-token-991"
    text = "env http://user:proxy-pass-77@proxy:3128 admin admin-token-991 token inline-secret-value"
    assert redact(text) == "env *** admin *** token ***"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("    env_files: {PORT: /etc/hostname}\n", "pools[0].env_files.PORT: PORT is set by agentpool"),
        (
            "    env_files: {A: /dev/zero}\n",
            "pools[0].env_files.A: cannot read the file of A '/dev/zero': not a regular",
        ),
        (
            "    env_files: {A: /nonexistent}\n",
            "pools[0].env_files.A: cannot read the file of A '/nonexistent'",
        ),
        ("    env_files: {A: [1]}\n", "pools[0].env_files.A: expected the path of a file"),
        (
            "    env: {A: x}\n    env_files: {A: /etc/hostname}\n",
            "pools[0].env_files.A: A is also given in env",
        ),
        (
            "metrics: {admin_token_file: /dev/zero}\n",
            "metrics.admin_token_file: cannot read admin token file",
        ),
        ("metrics: {admin_token: inline}\n", "metrics.admin_token: unknown key (give admin_token_file)"),
    ],
)
def test_secret_files_errors(extra: str, expected: str) -> None:
    errors = errors_of(BASE + extra)
    assert any(expected in e for e in errors), errors


def test_a_wrong_docker_host_default_names_docker_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "foo://x")
    [error] = errors_of(BASE)
    assert error.startswith("f.yaml:1: docker_hosts: not given, and the default from DOCKER_HOST is wrong")
