"""doctor's Jenkins checks against the project's Jenkins-compatible controller, over real HTTP."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import jenkins
import pytest

from agentpool import doctor
from agentpool.adapters.jenkins import JenkinsAdapter
from agentpool.config import Config, load_config_text
from agentpool.doctor import check_jenkins, format_report
from agentpool_testing.jenkins import Controller, freestyle_config

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


PERMISSIONS = [p for p, _ in doctor.PERMISSIONS]
LOOP = ["Overall/Read", "Job/Read", "Agent/Create", "Agent/Connect", "Agent/Disconnect", "Agent/Delete"]


def _svc(ctl: Controller, perms: list[str], instance: str, **kw: object) -> Config:
    token = secrets.token_hex(16)
    ctl.add_user("svc", token, perms, **kw)  # type: ignore[arg-type]
    return load_config_text(
        f"jenkins: {{url: '{ctl.url}', user: svc, token: '{token}', timeout: 5s}}\n"
        f"instance: {instance}\npools:\n  - {{name: p, labels: [docker], image: x}}\n"
    )


def _by_name(checks: list[doctor.Check]) -> dict[str, doctor.Check]:
    return {c.name: c for c in checks}


def test_readme_lists_every_permission_doctor_checks() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("| permission | why |") :].split("\n\n")[0]
    listed = re.findall(r"^\s*\| ([A-Z][a-z]+/[A-Za-z]+) \|", section, re.MULTILINE)
    assert listed == PERMISSIONS
    assert set(LOOP) < set(PERMISSIONS)


def test_reachable_jenkins_good_credentials(controller: Controller) -> None:
    instance = f"svcdj{secrets.token_hex(3)}"
    server = jenkins.Jenkins(controller.url, username="admin", password=TOKEN, timeout=5)
    server.create_job("app", freestyle_config("docker"))
    checks = check_jenkins(_config(controller.url, TOKEN, instance))
    print(format_report(checks))
    assert [(c.name, c.ok) for c in checks] == [
        ("jenkins reachable", True),
        ("jenkins credentials", True),
        *((f"jenkins permission {p}", True) for p in PERMISSIONS),
        ("jenkins other daemons", True),
    ]
    assert checks[0].detail.startswith("Jenkins 2.")
    assert checks[1].detail == "authenticated as admin"
    by_name = _by_name(checks)
    assert by_name["jenkins permission Agent/Create"].detail.startswith(f"created node {instance}-doctor-")
    assert "reads 1 job(s)" in by_name["jenkins permission Job/Read"].detail
    assert "granted" in by_name["jenkins permission Overall/Administer"].detail
    assert _nodes(controller) == []  # the throwaway node is gone


def test_bad_credentials(controller: Controller) -> None:
    wrong = "ffffffffffffffffffffffffffffffff"
    checks = check_jenkins(_config(controller.url, wrong, "svcdj"))
    report = format_report(checks)
    assert [(c.name, c.ok) for c in checks][1:] == [
        ("jenkins credentials", False),
        ("jenkins permissions", False),
    ]
    assert checks[1].detail == "credentials rejected for user 'admin' (HTTP 401)"
    assert "API token" in checks[1].fix
    assert checks[2].detail == "not checked: credentials failed"
    assert wrong not in report and TOKEN not in report


@pytest.mark.parametrize("missing", ["Agent/Create", "Agent/Connect", "Agent/Disconnect", "Agent/Delete"])
def test_each_missing_agent_permission_is_named_with_its_fix(controller: Controller, missing: str) -> None:
    instance = f"svcdj{secrets.token_hex(3)}"
    server = jenkins.Jenkins(controller.url, username="admin", password=TOKEN, timeout=5)
    server.create_job("app", freestyle_config("docker"))
    checks = check_jenkins(_svc(controller, [p for p in LOOP if p != missing], instance))
    print(format_report(checks))
    failed = [c for c in checks if not c.ok]
    if missing == "Agent/Create":  # nothing else can be tried without the throw-away node
        assert [c.name for c in failed] == [f"jenkins permission {p}" for p in LOOP[2:]]
        assert "lacks Agent/Create: HTTP 403" in failed[0].detail
    else:
        [fail] = failed
        assert fail.name == f"jenkins permission {missing}" and f"lacks {missing}: HTTP 403" in fail.detail
    assert failed[0].fix.startswith(f"grant jenkins.user {missing} (")
    optional = _by_name(checks)["jenkins permission Overall/Administer"]
    assert optional.ok and "not granted" in optional.detail
    left = _nodes(controller)
    assert left == ([] if missing != "Agent/Delete" else left)  # without Agent/Delete it stays
    if missing == "Agent/Delete":
        assert len(left) == 1 and f"delete node {left[0]} by hand" in failed[0].fix


def test_an_account_without_job_read_is_reported(controller: Controller) -> None:
    server = jenkins.Jenkins(controller.url, username="admin", password=TOKEN, timeout=5)
    server.create_job("app", freestyle_config("docker"))
    instance = f"svcdj{secrets.token_hex(3)}"
    checks = check_jenkins(_svc(controller, [p for p in LOOP if p != "Job/Read"], instance))
    job_read = _by_name(checks)["jenkins permission Job/Read"]
    assert (
        not job_read.ok and "sees no job at all" in job_read.detail and "queue looks empty" in job_read.detail
    )
    assert job_read.fix.startswith("grant jenkins.user Job/Read")
    assert doctor.exit_code(checks) == 1


def test_a_second_daemon_at_the_same_instance_is_named(controller: Controller, tmp_path: Path) -> None:
    instance = f"svcdj{secrets.token_hex(3)}"
    adapter = JenkinsAdapter(controller.url, "admin", TOKEN, timeout=5)
    adapter.create_node(
        f"{instance}-p-abcdef",
        labels=["docker"],
        executors=1,
        remote_fs="/tmp",
        exclusive=True,
        websocket=True,
        description=f"agentpool:{instance}:someone-else:b1 docker-in-docker agent of pool p",
    )
    check = doctor.check_neighbours(adapter, _config(controller.url, TOKEN, instance))
    assert not check.ok and "someone-else (1 node(s))" in check.detail and "own `instance`" in check.fix
    adapter.delete_node(f"{instance}-p-abcdef")
    assert doctor.check_neighbours(adapter, _config(controller.url, TOKEN, instance)).ok


def test_an_administrator_on_a_controller_without_jobs_passes_job_read(controller: Controller) -> None:
    """A fresh controller has no job yet: only an account that might not see them all fails."""
    instance = f"svcdj{secrets.token_hex(3)}"
    checks = check_jenkins(_config(controller.url, TOKEN, instance))
    job_read = _by_name(checks)["jenkins permission Job/Read"]
    assert job_read.ok and "no job yet" in job_read.detail, job_read
    without = check_jenkins(_svc(controller, [p for p in LOOP if p != "Job/Read"], instance))
    assert not _by_name(without)["jenkins permission Job/Read"].ok  # no job seen, none provable
