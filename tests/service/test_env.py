"""Environment variables in config paths (token_file under LoadCredential=)."""

from __future__ import annotations

import pytest

from agentpool.service.env import expand_env


def test_credentials_directory_is_expanded() -> None:
    env = {"CREDENTIALS_DIRECTORY": "/run/credentials/agentpool.service"}
    assert (
        expand_env("${CREDENTIALS_DIRECTORY}/jenkins.token", env)
        == "/run/credentials/agentpool.service/jenkins.token"
    )
    assert expand_env("$CREDENTIALS_DIRECTORY/t", env) == "/run/credentials/agentpool.service/t"


def test_plain_path_is_unchanged() -> None:
    assert expand_env("/etc/agentpool/jenkins.token", {}) == "/etc/agentpool/jenkins.token"


def test_unset_variable_is_named() -> None:
    with pytest.raises(ValueError, match=r"CREDENTIALS_DIRECTORY in .* is not set \(systemd sets it"):
        expand_env("${CREDENTIALS_DIRECTORY}/jenkins.token", {})
    with pytest.raises(ValueError, match="environment variable TOKEN_DIR"):
        expand_env("$TOKEN_DIR/x", {"TOKEN_DIR": ""})
