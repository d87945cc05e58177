"""``python -m agentpool_testing.jenkins``: prints its URL, serves, stops on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys

import jenkins
import pytest

from agentpool_testing.jenkins import Controller, freestyle_config

pytestmark = pytest.mark.timeout(60)


def test_cli_serves_until_sigterm() -> None:
    argv = [sys.executable, "-m", "agentpool_testing.jenkins", "--listen", "127.0.0.1:0", "--token", "t0k"]
    argv += ["--url", "http://jenkins.example:8080/"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url == "http://jenkins.example:8080/"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_cli_accounts_have_only_their_permissions() -> None:
    argv = [sys.executable, "-m", "agentpool_testing.jenkins", "--listen", "127.0.0.1:0", "--token", "t0k"]
    argv += ["--account", "svc:svc-t0k:Overall/Read,Job/Read"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        svc = jenkins.Jenkins(proc.stdout.readline().strip(), username="svc", password="svc-t0k", timeout=10)
        assert svc.get_queue_info() == []
        with pytest.raises(jenkins.JenkinsException, match=r"\[403\]"):
            svc.create_node("agent-1", launcher=jenkins.LAUNCHER_JNLP, launcher_params={})
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


@pytest.mark.parametrize(
    ("account", "message"),
    [("svc:t:Agent/Fly", "unknown permission 'Agent/Fly'"), ("svc-s3cr3t", "NAME:TOKEN:PERMISSION")],
)
def test_cli_rejects_a_bad_account(account: str, message: str) -> None:
    argv = [sys.executable, "-m", "agentpool_testing.jenkins", "--token", "t", "--account", account]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr and "s3cr3t" not in proc.stderr


def test_cli_rejects_a_bad_listen_address() -> None:
    argv = [sys.executable, "-m", "agentpool_testing.jenkins", "--listen", "nonsense", "--token", "t"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 2
    assert "--listen must be HOST:PORT" in proc.stderr


def test_root_url_option_is_used_in_answers() -> None:
    with Controller(token="t", url="http://jenkins.example:9999") as ctl:
        assert ctl.url == "http://jenkins.example:9999/"
        local = jenkins.Jenkins(f"http://127.0.0.1:{ctl.port}/", username="admin", password="t")
        local.create_job("app", freestyle_config(None))
        assert local.get_job_info("app")["url"] == "http://jenkins.example:9999/job/app/"


def test_built_in_node_executors_run_unlabelled_builds() -> None:
    with Controller(token="t", builtin_executors=1, quiet_period=0) as ctl:
        server = jenkins.Jenkins(ctl.url, username="admin", password="t")
        server.create_job("local", freestyle_config(None, "echo on $NODE_NAME"))
        server.build_job("local")
        assert ctl.wait_for_build("local", 1, timeout=30) == "SUCCESS"
        console = server.get_build_console_output("local", 1)
        assert "Building on the built-in node in workspace" in console
        assert "on built-in\n" in console


def test_root_url_can_name_the_bound_port_or_be_set_later() -> None:
    with Controller(listen="127.0.0.1:0", token="t", url="http://jenkins.example:{port}") as ctl:
        assert ctl.url == f"http://jenkins.example:{ctl.port}/"
        ctl.url = "http://jenkins.example:8080"
        assert ctl.url == "http://jenkins.example:8080/"
        local = jenkins.Jenkins(f"http://127.0.0.1:{ctl.port}/", username="admin", password="t")
        local.create_job("app", freestyle_config(None))
        assert local.get_job_info("app")["url"] == "http://jenkins.example:8080/job/app/"
