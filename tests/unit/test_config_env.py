"""token_file may name systemd's credentials directory: ``${CREDENTIALS_DIRECTORY}/jenkins.token``."""

from pathlib import Path

import pytest

from agentpool.config import ConfigError, load_config_text

CONFIG = """jenkins:
  url: http://127.0.0.1:8080/
  user: agentpool
  token_file: ${CREDENTIALS_DIRECTORY}/jenkins.token
pools:
  - name: dind
    labels: [docker]
    image: agentpool/dind-agent:latest
"""


def test_token_file_expands_the_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "jenkins.token").write_text("s3cret-token\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    config = load_config_text(CONFIG, "agentpool.yaml")
    assert config.jenkins.token is not None
    assert config.jenkins.token.get_secret_value() == "s3cret-token"


def test_unset_variable_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError) as caught:
        load_config_text(CONFIG, "agentpool.yaml")
    (line,) = caught.value.errors
    assert line.startswith("agentpool.yaml:4: jenkins.token_file:")
    assert "CREDENTIALS_DIRECTORY" in line
