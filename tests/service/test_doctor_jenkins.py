"""doctor's Jenkins checks against the project's Jenkins-compatible controller, over real HTTP."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import jenkins
import pytest

from agentpool.config import Config, load_config_text
from agentpool.doctor import _check_node_permissions, check_jenkins, format_report
from agentpool_testing.jenkins import Controller

TOKEN = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def controller() -> Iterator[Controller]:
    ctl = Controller(listen="127.0.0.1:0", user="admin", token=TOKEN)
    ctl.start()
    yield ctl
    ctl.stop()


def _config(url: str, token: str, instance: str) -> Config:
    return load_config_text(
        f"jenkins: {{url: '{url}', user: admin, token: '{token}', timeout: 5s}}\n"
        f"instance: {instance}\npools:\n  - {{name: p, labels: [docker], image: x}}\n"
    )


def _nodes(ctl: Controller) -> list[str]:
    server = jenkins.Jenkins(ctl.url, username="admin", password=TOKEN, timeout=5)
    return [n["name"] for n in server.get_nodes() if n["name"] != "Built-In Node"]


def test_reachable_jenkins_good_credentials(controller: Controller) -> None:
    instance = f"svcdj{secrets.token_hex(3)}"
    checks = check_jenkins(_config(controller.url, TOKEN, instance))
    print(format_report(checks))
    assert [(c.name, c.ok) for c in checks] == [
        ("jenkins reachable", True),
        ("jenkins credentials", True),
        ("jenkins node permissions", True),
    ]
    assert checks[0].detail.startswith("Jenkins 2.")
    assert checks[1].detail == "authenticated as admin"
    assert checks[2].detail.startswith(f"created and deleted node {instance}-doctor-")
    assert _nodes(controller) == []  # the throwaway node is gone


def test_bad_credentials(controller: Controller) -> None:
    wrong = "ffffffffffffffffffffffffffffffff"
    checks = check_jenkins(_config(controller.url, wrong, "svcdj"))
    report = format_report(checks)
    assert [c.ok for c in checks] == [True, False, False]
    assert checks[1].detail == "credentials rejected for user 'admin' (HTTP 401)"
    assert "API token" in checks[1].fix
    assert checks[2].detail == "not checked: credentials failed"
    assert wrong not in report and TOKEN not in report


def test_no_permission_to_create_nodes(controller: Controller) -> None:
    instance = f"svcdj{secrets.token_hex(3)}"
    controller.faults.fail_next(20, status=403)
    check = _check_node_permissions(controller.url + "/", "admin", TOKEN, 5.0, instance)
    controller.faults.fail_next(0)
    assert not check.ok
    assert check.detail.startswith(
        f"user 'admin' may not create agents (HTTP 403 creating node {instance}-doctor-"
    )
    assert "Agent/Create" in check.fix
    assert _nodes(controller) == []
