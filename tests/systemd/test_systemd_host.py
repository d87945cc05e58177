"""agentpool under a real systemd (PID 1 of a Debian 12 host container), installed by
``scripts/install-service`` as the README says: readiness, builds, stop/start, the watchdog,
reload, LoadCredential, the hardening, the journal, and the installer itself.

The tests share one host (starting systemd and installing take most of the time) and run in
file order: the service is started by the first test and uninstalled by the last one. Each
test that needs an agent makes sure one is there.
"""

from __future__ import annotations

import re
import secrets
import stat
import subprocess
import time
from typing import Any

import pytest

from tests.waiting import wait_for

from .conftest import (
    CHECKOUT,
    INSTALL_SNAPSHOT_ROOTS,
    INSTALL_SNAPSHOT_SKIP,
    UNIT,
    SystemdHost,
    config_yaml,
    message_text,
)

pytestmark = [pytest.mark.systemd, pytest.mark.docker]

CONFIG = "/etc/agentpool/agentpool.yaml"
DROP_IN = f"/etc/systemd/system/{UNIT}.d"
# `systemd-analyze security agentpool` on the unit as it was before these tests existed
# (systemd 252, Debian 12): the hardening may get better, never worse.
MAX_EXPOSURE = 1.5


def running(host: SystemdHost) -> SystemdHost:
    """The service, started if an earlier test did not (a test run on its own)."""
    if host.show("ActiveState") != "active":
        host.systemctl("enable", "--now", UNIT)
    return host


@pytest.fixture
def host(systemd_host: SystemdHost) -> SystemdHost:
    return systemd_host


def test_enable_now_returns_once_the_first_pass_succeeded_and_status_shows_the_status_line(
    host: SystemdHost,
) -> None:
    cursor = host.cursor()
    rejected_for = 6.0
    host.controller.faults.reject_credentials(rejected_for)
    began = time.monotonic()
    enable = subprocess.Popen(
        ["docker", "exec", host.name, "systemctl", "enable", "--now", UNIT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        refused = host.wait_journal("a pass Jenkins refused", r"msg=\"pass incomplete\"", cursor, 30)
        assert "401" in refused or "authentication" in refused.lower(), refused
        assert enable.poll() is None, "systemctl returned before any pass succeeded"
        assert (host.show("ActiveState"), host.show("SubState")) == ("activating", "start")
        _, err = enable.communicate(timeout=90)
    finally:
        if enable.poll() is None:
            enable.kill()
    assert enable.returncode == 0, err
    assert time.monotonic() - began >= rejected_for - 0.5

    status = host.systemctl("status", "--no-pager", UNIT)
    assert "Active: active (running)" in status, status
    assert re.search(r'Status: "agents busy=0 idle=0 starting=0 draining=0; waiting items=0"', status), status
    assert host.show("UnitFileState") == "enabled"
    messages = host.messages(cursor)
    first_refusal = next(i for i, m in enumerate(messages) if 'msg="pass incomplete"' in m)
    started = next(i for i, m in enumerate(messages) if m.startswith("Started agentpool.service"))
    assert first_refusal < started, messages


def test_a_build_queued_on_the_controller_gets_an_agent_and_runs(host: SystemdHost) -> None:
    running(host)
    cursor = host.cursor()
    result, console = host.finished("hello", host.queue("hello", "echo built-on-$NODE_NAME"))
    assert result == "SUCCESS", console
    agents = host.agent_containers()
    assert len(agents) == 1
    (name,) = agents
    assert f"built-on-{name}" in console
    provisioned = host.decisions(cursor, "provisioned")
    assert [(d["agent"], d["reason"]) for d in provisioned] == [(name, "demand")]
    online = wait_for("the online line", lambda: host.decisions(cursor, "online"), 15)
    assert [d["agent"] for d in online] == [name]


def test_stop_leaves_agents_running_and_start_adopts_them(host: SystemdHost) -> None:
    running(host)
    agent = host.idle_agent()
    agents = host.agent_containers()
    pid = host.main_pid()
    cursor = host.cursor()

    host.systemctl("stop", UNIT)
    assert host.show("ActiveState") == "inactive"
    assert host.decisions(cursor, "stopping"), host.messages(cursor)
    assert host.agent_containers() == agents
    # The agent still serves builds while agentpool is down.
    result, console = host.finished("while-stopped", host.queue("while-stopped", "echo on-$NODE_NAME"))
    assert (result, f"on-{agent}" in console) == ("SUCCESS", True), console

    cursor = host.cursor()
    host.systemctl("start", UNIT)  # returns at READY=1
    assert host.show("ActiveState") == "active"
    assert host.main_pid() != pid
    adopted = [a["name"] for a in host.status()["agents"]]
    assert adopted == sorted(agents)
    assert host.agent_containers() == agents
    assert host.decisions(cursor, "provisioned") == []
    assert host.decisions(cursor, "removed") == []


def test_the_watchdog_restarts_a_hung_loop_and_the_new_daemon_adopts_the_agents(
    host: SystemdHost,
) -> None:
    running(host)
    host.idle_agent()
    agents = host.agent_containers()
    host.run("mkdir", "-p", DROP_IN)
    # A short watchdog keeps the test quick; the hang is real: every Jenkins request stalls
    # 20 s (jenkins.timeout is 30 s), so no pass ends and no WATCHDOG=1 is sent.
    host.write(f"{DROP_IN}/watchdog.conf", "[Service]\nWatchdogSec=4s\nRestartSec=3s\n")
    try:
        host.systemctl("daemon-reload")
        host.systemctl("reset-failed", UNIT)  # the start limit counts this suite's restarts too
        host.systemctl("restart", UNIT)
        assert host.show("WatchdogUSec") == "4s"
        pid, restarts = host.main_pid(), int(host.show("NRestarts"))
        job = "through-the-hang"
        number = host.queue(job, "sleep 15; echo survived-the-hang")
        wait_for("the build to start", lambda: any(n["busy"] for n in host.controller.nodes()), 30)

        cursor = host.cursor()
        host.controller.faults.latency(20)
        try:
            host.wait_journal("the watchdog firing", r"Watchdog timeout", cursor, timeout=30)
        finally:
            host.controller.faults.latency(0)
        wait_for(
            "the restarted daemon to be ready",
            lambda: int(host.show("NRestarts")) > restarts and host.show("ActiveState") == "active",
            60,
        )
        assert host.main_pid() != pid
        assert any("Failed with result 'watchdog'" in m for m in host.messages(cursor))
        assert [a["name"] for a in host.status()["agents"]] == sorted(agents)
        result, console = host.finished(job, number)
        assert (result, "survived-the-hang" in console) == ("SUCCESS", True), console
        assert host.agent_containers() == agents
        assert host.decisions(cursor, "provisioned") == []
    finally:
        host.controller.faults.latency(0)
        host.run("rm", "-rf", DROP_IN)
        host.systemctl("daemon-reload")


def test_reload_applies_a_valid_config_and_keeps_the_old_one_for_an_invalid_file(host: SystemdHost) -> None:
    running(host)
    agent = host.idle_agent()
    pid = host.main_pid()
    try:
        # Invalid: had any of it been applied, idle_timeout 3s would reap the idle agent.
        cursor = host.cursor()
        host.write(CONFIG, config_yaml(host, idle_timeout="3s", max_agents=-1))
        host.systemctl("reload", UNIT)
        refused = host.wait_journal("the refusal", r'msg="reload refused"', cursor)
        assert f"{CONFIG}:" in refused and "max_agents" in refused, refused
        time.sleep(8)  # eight passes under whichever config is in force
        assert agent in host.agent_containers()
        assert host.decisions(cursor, "cordoned") == []
        assert (host.show("ActiveState"), host.main_pid()) == ("active", pid)

        # Valid: the same idle_timeout now applies and the agent is reaped.
        cursor = host.cursor()
        host.write(CONFIG, config_yaml(host, idle_timeout="3s"))
        host.systemctl("reload", UNIT)
        host.wait_journal("the reload", r'msg="config reloaded"', cursor)
        # The container goes before the decision line reaches the journal: wait for the line.
        wait_for("the reaped decision", lambda: host.decisions(cursor, "reaped"), 60)
        assert [d["agent"] for d in host.decisions(cursor, "reaped")] == [agent]
        assert agent not in host.agent_containers()
        assert host.main_pid() == pid
    finally:
        host.write(CONFIG, config_yaml(host))
        host.systemctl("reload", UNIT)


def test_the_token_arrives_only_through_load_credential(host: SystemdHost) -> None:
    running(host)
    pid = host.main_pid()
    credential = f"/run/credentials/{UNIT}/jenkins.token"
    # The service's private copy, in its own mount namespace.
    seen = host.run("nsenter", "-t", str(pid), "-m", "stat", "-c", "%U %a", credential).stdout.split()
    assert seen == ["agentpool", "400"]
    assert host.run("nsenter", "-t", str(pid), "-m", "cat", credential).stdout.strip() == host.token
    # The root-only file is closed to the service's user, and systemd's copy is the only
    # place that user can read the token from (the token is given to grep on stdin).
    as_user = ("setpriv", "--reuid=agentpool", "--regid=agentpool", "--init-groups")
    denied = host.run(*as_user, "cat", "/etc/agentpool/jenkins.token", check=False)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
    found = host.run(
        *as_user,
        "grep",
        "-rlsF",
        "-f",
        "-",
        "/etc",
        "/opt",
        "/var",
        "/run",
        "/tmp",
        "/home",
        "/root",
        input=host.token + "\n",
        check=False,
    )
    assert found.stdout.split() == [credential]
    environ = host.run("cat", f"/proc/{pid}/environ").stdout.split("\0")
    assert f"CREDENTIALS_DIRECTORY=/run/credentials/{UNIT}" in environ
    assert not any(host.token in e for e in environ)
    assert host.token not in host.run("cat", CONFIG).stdout
    assert host.token not in host.systemctl("show", UNIT)
    assert host.http("/healthz")[0] == 200  # and the daemon did authenticate with it


def test_the_hardening_leaves_the_socket_state_directory_and_port_and_exposure_stays(
    host: SystemdHost,
) -> None:
    running(host)
    pid = host.main_pid()
    # The filesystem as the service sees it (its mount namespace), as its user and groups.
    in_service = ("nsenter", "-t", str(pid), "-m", "--", "setpriv", "--reuid=agentpool")
    in_service += ("--regid=agentpool", "--init-groups")
    ping = (
        "import socket; s = socket.socket(socket.AF_UNIX); s.connect('/var/run/docker.sock');"
        "s.sendall(b'GET /_ping HTTP/1.0\\r\\n\\r\\n'); print(s.recv(4096).decode())"
    )
    answer = host.run(*in_service, "python3", "-c", ping).stdout
    assert answer.startswith("HTTP/1.0 200") and answer.endswith("OK\n"), answer
    host.run(*in_service, "sh", "-c", "touch /var/lib/agentpool/.probe && rm /var/lib/agentpool/.probe")
    # Everything else is read-only in the service's view, even to root (ProtectSystem=strict).
    for elsewhere in ("/opt/agentpool/.probe", "/etc/agentpool/.probe", "/usr/local/.probe"):
        refused = host.run("nsenter", "-t", str(pid), "-m", "touch", elsewhere, check=False)
        assert refused.returncode != 0 and "Read-only file system" in refused.stderr, (elsewhere, refused)

    code, body = host.http("/healthz")
    assert code == 200, body
    code, body = host.http("/metrics")
    assert code == 200 and "agentpool_pass_duration_seconds_count" in body

    limits = host.run("cat", f"/proc/{pid}/limits").stdout
    assert re.search(r"Max open files\s+4096\s+4096\s+files", limits), limits

    security = host.run("systemd-analyze", "security", "--no-pager", UNIT).stdout
    found = re.search(r"Overall exposure level for agentpool\.service: (\d+\.\d+)", security)
    assert found, security
    assert float(found.group(1)) <= MAX_EXPOSURE, security


def test_the_journal_has_one_line_per_decision_and_never_the_token(host: SystemdHost) -> None:
    running(host)
    daemon = [
        message_text(entry.get("MESSAGE", ""))
        for entry in host.journal()
        if entry.get("SYSLOG_IDENTIFIER") == "agentpool" and entry.get("_PID") != "1"
    ]
    assert daemon
    not_logfmt = [m for m in daemon if "\n" in m or not m.startswith("ts=") or " msg=" not in m]
    assert not_logfmt == []
    provisioned = [d["agent"] for d in host.decisions(event="provisioned")]
    assert provisioned and len(provisioned) == len(set(provisioned))
    reaped = [d["agent"] for d in host.decisions(event="reaped")]
    assert len(reaped) == len(set(reaped))
    for decision in host.decisions():
        if decision.get("logger") == "agentpool":
            assert decision.get("event") == decision["msg"], decision

    everything = host.run("journalctl", "--no-pager", "-o", "json").stdout  # every unit, every field
    assert host.token not in everything
    assert host.token not in host.systemctl("status", "--no-pager", UNIT)


# -- the installer -------------------------------------------------------------------------


def _installed(host: SystemdHost, mtimes: bool = False) -> dict[str, list[Any]]:
    return host.snapshot("/opt/agentpool", "/etc/agentpool", f"/etc/systemd/system/{UNIT}", mtimes=mtimes)


def test_the_installer_copies_with_root_ownership_and_fixed_modes(host: SystemdHost) -> None:
    checkout = host.snapshot(CHECKOUT)
    assert {e[2] for e in checkout.values()} == {1000}
    assert all(e[1] & 0o022 for e in checkout.values() if e[0] != stat.S_IFLNK)

    installed = _installed(host)
    assert "/opt/agentpool/src/agentpool/__init__.py" in installed
    not_root = {p: e for p, e in installed.items() if (e[2], e[3]) != (0, 0)}
    assert not_root == {}
    writable = {p: oct(e[1]) for p, e in installed.items() if e[0] != stat.S_IFLNK and e[1] & 0o022}
    assert writable == {}
    copied = {
        oct(e[1])
        for p, e in installed.items()
        if p.startswith("/opt/agentpool/src/") and e[0] == stat.S_IFREG
    }
    assert copied == {"0o644", "0o755"}
    assert installed["/opt/agentpool/src/scripts/install-service"][1] == 0o755
    assert installed["/opt/agentpool/src/agentpool/cli.py"][1] == 0o644
    assert installed["/etc/agentpool/jenkins.token"][1] == 0o600


def test_a_second_install_changes_nothing(host: SystemdHost) -> None:
    running(host)
    accounts = ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow")

    def state() -> dict[str, list[Any]]:
        return {**_installed(host, mtimes=True), **host.snapshot(*accounts, mtimes=True)}

    before, pid = state(), host.main_pid()
    again = host.install_service()
    assert "up to date" in again.stderr, again.stderr
    assert state() == before
    assert host.main_pid() == pid


def test_a_newer_checkout_upgrades_in_place_and_restarts_the_service(host: SystemdHost) -> None:
    running(host)
    agents, pid = host.agent_containers(), host.main_pid()
    marker = "upgraded-" + secrets.token_hex(4)
    init = f"{CHECKOUT}/agentpool/__init__.py"
    original = host.run("cat", init).stdout
    host.write(init, original + f"# {marker}\n")
    try:
        upgraded = host.install_service()
    finally:
        host.write(init, original)
        host.run("chown", "1000:1000", init)
        host.run("chmod", "0666", init)
    assert "restarting the running agentpool.service" in upgraded.stderr, upgraded.stderr
    code = host.run(
        "/opt/agentpool/venv/bin/python",
        "-c",
        "import agentpool, pathlib; print(pathlib.Path(agentpool.__file__).read_text())",
        workdir="/",
    ).stdout
    assert marker in code
    assert host.show("ActiveState") == "active" and host.main_pid() != pid
    assert host.agent_containers() == agents
    installed = _installed(host)
    assert not {p for p, e in installed.items() if (e[2], e[3]) != (0, 0)}


def test_uninstall_removes_what_the_installer_made_and_leaves_agents_running(host: SystemdHost) -> None:
    agents = host.agent_containers()
    host.install_service("--uninstall", "--purge")
    gone = host.run("systemctl", "status", UNIT, check=False)
    assert gone.returncode == 4 and "could not be found" in gone.stderr, gone
    assert host.run("getent", "passwd", "agentpool", check=False).returncode == 2
    after = host.snapshot(*INSTALL_SNAPSHOT_ROOTS, skip=INSTALL_SNAPSHOT_SKIP)
    before = host.before_install
    assert sorted(set(after) - set(before)) == []
    assert sorted(set(before) - set(after)) == []
    assert {p: (before[p], after[p]) for p in before if before[p] != after[p]} == {}
    assert host.agent_containers() == agents  # builds own them; drain before uninstalling
