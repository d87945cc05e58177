"""Fixtures for the test controller's own tests: a running controller and clients of it."""

from __future__ import annotations

from collections.abc import Iterator

import jenkins
import pytest
import requests

from agentpool_testing.jenkins import Controller

USER = "admin"
TOKEN = "11d2c5e0a7f34b5c9a1e0f00c0ffee42"


@pytest.fixture
def controller() -> Iterator[Controller]:
    with Controller(listen="127.0.0.1:0", user=USER, token=TOKEN, quiet_period=0) as ctl:
        yield ctl


@pytest.fixture
def server(controller: Controller) -> jenkins.Jenkins:
    """An unmodified python-jenkins client, authenticated with the API token."""
    return jenkins.Jenkins(controller.url, username=USER, password=TOKEN, timeout=10)


@pytest.fixture
def http(controller: Controller) -> Iterator[requests.Session]:
    session = requests.Session()
    session.auth = (USER, TOKEN)
    session.headers["Accept-Language"] = "en"
    yield session
    session.close()


class AgentFactory:
    """Creates inbound WebSocket agent nodes the way a provisioner does."""

    def __init__(self, server: jenkins.Jenkins) -> None:
        self.server = server

    def __call__(
        self,
        name: str,
        labels: str = "",
        *,
        exclusive: bool = False,
        executors: int = 1,
        remote_fs: str = "/home/jenkins/agent",
    ) -> None:
        self.server.create_node(
            name,
            numExecutors=executors,
            remoteFS=remote_fs,
            labels=labels,
            exclusive=exclusive,
            launcher=jenkins.LAUNCHER_JNLP,
            launcher_params={"webSocket": True},
        )


@pytest.fixture
def add_agent(server: jenkins.Jenkins) -> AgentFactory:
    return AgentFactory(server)


@pytest.fixture
def credentials() -> tuple[str, str]:
    return USER, TOKEN
