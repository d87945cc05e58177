"""Config loading: defaults, units, the token sources, and errors shaped `FILE:LINE: key.path: message`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from agentpool.config import (
    DEFAULT_DOCKER_URL,
    ConfigError,
    load_config,
    load_config_text,
    parse_bytes,
    parse_duration,
)
from agentpool_testing.demo import DEMO_CONFIG, load_demo_config

REPO = Path(__file__).resolve().parents[2]

MINIMAL = """\
jenkins:
  url: http://jenkins:8080
  user: agentpool
  token: inline-secret-value
pools:
  - name: dind
    labels: [docker, linux]
    image: agentpool/dind-agent:latest
"""


def errors_of(text: str, name: str = "agentpool.yaml") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(textwrap.dedent(text), name)
    assert str(caught.value) == "\n".join(caught.value.errors)
    return caught.value.errors


def test_minimal_config_gets_the_documented_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    config = load_config_text(MINIMAL, "x.yaml")
    assert config.instance == "agentpool"
    assert config.poll_interval == 5.0
    assert config.jenkins.url == "http://jenkins:8080/"
    assert config.jenkins.effective_agent_url == "http://jenkins:8080/"
    assert config.jenkins.websocket is True
    assert config.jenkins.timeout == 10.0
    assert config.jenkins.token is not None
    assert config.jenkins.token.get_secret_value() == "inline-secret-value"
    assert "inline-secret-value" not in repr(config)
    [host] = config.docker_hosts
    assert (host.name, host.url, host.max_agents) == ("local", DEFAULT_DOCKER_URL, 20)
    [pool] = config.pools
    assert pool.executors == 1
    assert (pool.min_idle, pool.max_agents) == (0, 10)
    assert (pool.idle_timeout, pool.launch_timeout) == (300.0, 180.0)
    assert (pool.one_shot, pool.exclusive) == (False, True)
    assert (pool.security, pool.docker_volume) == ("privileged", "per-agent")
    assert pool.remote_fs == "/home/jenkins/agent"
    assert config.metrics.listen == "127.0.0.1:9464"


def test_default_docker_host_follows_docker_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.5:2375")
    assert load_config_text(MINIMAL).docker_hosts[0].url == "tcp://10.0.0.5:2375"


def test_configs_compare_equal_by_content() -> None:
    assert load_config_text(MINIMAL) == load_config_text(MINIMAL)
    other = load_config_text(MINIMAL.replace("linux]", "linux, x86]"))
    assert load_config_text(MINIMAL) != other


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("250ms", 0.25), ("1d", 86400.0), (12, 12.0), (0.5, 0.5)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["0s", 0, -3, "5 minutes", "1h30m", True, None, "s"])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("text", "size"),
    [("4g", 4 * 1024**3), ("512m", 512 * 1024**2), ("1024k", 1024**2), ("2GiB", 2 * 1024**3), (1000, 1000)],
)
def test_sizes(text: object, size: int) -> None:
    assert parse_bytes(text) == size


def test_units_in_a_pool() -> None:
    text = MINIMAL + "    idle_timeout: 20s\n    launch_timeout: 2m\n    memory: 4g\n    cpus: 1.5\n"
    pool = load_config_text(text).pools[0]
    assert (pool.idle_timeout, pool.launch_timeout, pool.memory, pool.cpus) == (20.0, 120.0, 4 * 1024**3, 1.5)


def test_env_values_become_strings() -> None:
    pool = load_config_text(MINIMAL + "    env: {A: 1, B: true, C: x}\n").pools[0]
    assert pool.env == {"A": "1", "B": "true", "C": "x"}


# Each kind of error, with the line of the offending key (or of its parent mapping when missing).
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("    colour: red\n", "agentpool.yaml:9: pools[0].colour: unknown key"),
        (
            "    executors: many\n",
            "agentpool.yaml:9: pools[0].executors: Input should be a valid integer, got 'many'",
        ),
        (
            "    max_agents: -1\n",
            "agentpool.yaml:9: pools[0].max_agents: Input should be greater than or equal to 0",
        ),
        (
            "    min_idle: -2\n",
            "agentpool.yaml:9: pools[0].min_idle: Input should be greater than or equal to 0",
        ),
        (
            "    min_idle: 4\n    max_agents: 3\n",
            "agentpool.yaml:9: pools[0].min_idle: min_idle (4) is greater than max_agents (3)",
        ),
        (
            "    idle_timeout: 0s\n",
            "agentpool.yaml:9: pools[0].idle_timeout: a duration must be greater than 0",
        ),
        ("    idle_timeout: soon\n", "agentpool.yaml:9: pools[0].idle_timeout: expected a duration like 30s"),
        (
            "    security: root\n",
            "agentpool.yaml:9: pools[0].security: Input should be 'privileged', 'capabilities'",
        ),
        (
            "    docker_volume: shared\n",
            "agentpool.yaml:9: pools[0].docker_volume: Input should be 'per-agent' or",
        ),
        (
            "    one_shot: yes please\n",
            "agentpool.yaml:9: pools[0].one_shot: Input should be a valid boolean",
        ),
        ("    cap_drop: [SYS_RESOURCE]\n", "agentpool.yaml:9: pools[0].cap_drop: cap_drop applies only with"),
        ("    memory: lots\n", "agentpool.yaml:9: pools[0].memory: expected a size like 512m or 4g"),
        ("    remote_fs: agent\n", "agentpool.yaml:9: pools[0].remote_fs: expected an absolute path"),
        (
            "    env: {JENKINS_SECRET: x}\n",
            "agentpool.yaml:9: pools[0].env.JENKINS_SECRET: JENKINS_SECRET is set by agentpool",
        ),
        (
            "  - name: dind\n    labels: [docker]\n    image: x\n",
            "agentpool.yaml:9: pools[1].name: duplicate pool name 'dind' (also pools[0])",
        ),
        (
            "  - name: Bad_Name\n    labels: [a]\n    image: x\n",
            "agentpool.yaml:9: pools[1].name: pool name 'Bad_Name' must be",
        ),
        ("  - name: other\n    labels: [a]\n", "agentpool.yaml:9: pools[1].image: required key is missing"),
        (
            "  - name: other\n    labels: []\n    image: x\n",
            "agentpool.yaml:10: pools[1].labels: List should have at least 1",
        ),
        (
            "  - name: other\n    labels: ['docker && linux']\n    image: x\n",
            "agentpool.yaml:10: pools[1].labels: 'docker && linux' is not a plain Jenkins label",
        ),
        ("poll_interval: -5\n", "agentpool.yaml:9: poll_interval: a duration must be greater than 0"),
        ("instance: Agent.Pool\n", "agentpool.yaml:9: instance: instance name 'Agent.Pool' must be"),
        ("metrics: {listen: nowhere}\n", "agentpool.yaml:9: metrics.listen: expected HOST:PORT"),
        (
            "docker_hosts:\n  - {name: a, url: 'unix:///x'}\n  - {name: a, url: 'unix:///y'}\n",
            "agentpool.yaml:11: docker_hosts[1].name: duplicate docker host name 'a'",
        ),
        ("pools: {}\n", "agentpool.yaml:9: pools: key is given twice"),
    ],
)
def test_errors_name_file_line_and_key(extra: str, expected: str) -> None:
    errors = errors_of(MINIMAL + extra)
    assert any(e.startswith(expected) for e in errors), errors


def test_missing_top_level_keys_point_at_the_document() -> None:
    errors = errors_of("instance: x\n")
    assert "agentpool.yaml:1: jenkins: required key is missing" in errors
    assert "agentpool.yaml:1: pools: required key is missing" in errors


def test_missing_nested_key_points_at_its_parent_mapping() -> None:
    errors = errors_of(MINIMAL.replace("  user: agentpool\n", ""))
    assert errors == ["agentpool.yaml:2: jenkins.user: required key is missing"]


def test_all_errors_reported_sorted_by_line() -> None:
    errors = errors_of(
        MINIMAL.replace("url: http://jenkins:8080", "url: ftp://x") + "    executors: 0\n    x: 1\n"
    )
    assert [e.split(":")[1] for e in errors] == ["2", "9", "10"]


def test_wrong_types_are_errors_not_coerced() -> None:
    errors = errors_of(MINIMAL + "    max_agents: '3'\n")
    assert errors == ["agentpool.yaml:9: pools[0].max_agents: Input should be a valid integer, got '3'"]


def test_yaml_syntax_error_has_a_line() -> None:
    errors = errors_of("jenkins:\n  url: [unclosed\n")
    assert len(errors) == 1 and errors[0].startswith("agentpool.yaml:")


@pytest.mark.parametrize("text", ["", "# nothing\n", "- a list\n"])
def test_empty_or_non_mapping_documents(text: str) -> None:
    [error] = errors_of(text)
    assert error.startswith("agentpool.yaml:1: (top level): ")


def test_token_file_read_and_stripped(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    config_file = tmp_path / "agentpool.yaml"
    config_file.write_text(MINIMAL.replace("token: inline-secret-value", "token_file: token"))
    config = load_config(config_file)
    assert config.jenkins.token is not None
    assert config.jenkins.token.get_secret_value() == "s3cret"


def test_unreadable_token_file_names_file_line_and_key(tmp_path: Path) -> None:
    config_file = tmp_path / "agentpool.yaml"
    config_file.write_text(MINIMAL.replace("token: inline-secret-value", "token_file: /nonexistent/token"))
    with pytest.raises(ConfigError) as caught:
        load_config(config_file)
    assert caught.value.errors == [
        f"{config_file}:4: jenkins.token_file: "
        "cannot read token file '/nonexistent/token': No such file or directory"
    ]


def test_token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    text = MINIMAL.replace("token: inline-secret-value", "token_env: AP_TEST_TOKEN")
    monkeypatch.setenv("AP_TEST_TOKEN", "from-env")
    token = load_config_text(text).jenkins.token
    assert token is not None and token.get_secret_value() == "from-env"
    monkeypatch.delenv("AP_TEST_TOKEN")
    assert errors_of(text) == [
        "agentpool.yaml:4: jenkins.token_env: environment variable AP_TEST_TOKEN is not set or empty"
    ]


def test_exactly_one_token_source() -> None:
    both = MINIMAL.replace("  token: inline", "  token_env: X\n  token: inline")
    assert errors_of(both) == [
        "agentpool.yaml:5: jenkins.token: give exactly one of token_file, token_env, token (got 2)"
    ]
    none = MINIMAL.replace("  token: inline-secret-value\n", "")
    assert errors_of(none) == [
        "agentpool.yaml:2: jenkins.token_file: give exactly one of token_file, token_env, token (got none)"
    ]


def test_inline_token_never_in_errors() -> None:
    errors = errors_of(MINIMAL.replace("token: inline-secret-value", "token: [inline-secret-value]"))
    assert errors and not any("inline-secret-value" in e for e in errors)


def test_unreadable_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "missing.yaml")
    assert caught.value.errors[0].startswith(f"{tmp_path / 'missing.yaml'}:1: (file): cannot read the config")


def test_shipped_configs_are_valid(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AGENTPOOL_DEMO_TOKEN", "demo")
    demo = load_demo_config(DEMO_CONFIG, "http://192.0.2.7:40123/")  # the demo fills in its URL
    [pool] = demo.pools
    assert (pool.name, pool.labels, pool.security, pool.cap_drop) == (
        "dind",
        ["docker", "linux"],
        "capabilities",
        ["SYS_RESOURCE"],
    )
    assert (pool.idle_timeout, pool.max_agents, demo.poll_interval) == (20.0, 3, 2.0)
    assert demo.jenkins.url == demo.jenkins.effective_agent_url == "http://192.0.2.7:40123/"
    # example.yaml reads /etc/agentpool/jenkins.token: point it at a file that exists
    example = (REPO / "config" / "example.yaml").read_text()
    (tmp_path / "jenkins.token").write_text("t")
    (tmp_path / "example.yaml").write_text(example.replace("/etc/agentpool/jenkins.token", "jenkins.token"))
    config = load_config(tmp_path / "example.yaml")
    assert config.pools[0].memory == 4 * 1024**3


def test_recursive_yaml_alias_is_an_error_not_a_hang() -> None:
    errors = errors_of(MINIMAL + "metrics: &m {listen: *m}\n")
    assert errors == ["agentpool.yaml:9: (yaml): an alias refers to the node that contains it"]
