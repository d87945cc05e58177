"""The run lock: one process decides for an instance at a time (two sharing a state directory
share the daemon id and would remove each other's agents as leftovers of an earlier run), and
a drain or resume done without a daemon is kept for its next start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentpool.state import State

REPO = Path(__file__).resolve().parents[2]
CONFIG = """jenkins: {url: "http://127.0.0.1:9/", user: agentpool, token: not-used, timeout: 2}
instance: ap
metrics: {listen: null}
docker_hosts: [{name: local, url: "unix:///nonexistent.sock"}]
pools: [{name: dind, labels: [docker], image: agentpool/dind-agent:latest}]
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding instance ap's lock in ``tmp_path`` until it is killed."""
    code = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from agentpool.state import State
        state = State({str(tmp_path)!r}, "ap")
        assert state.lock() is None
        print("held", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "agentpool.yaml"
    path.write_text(CONFIG)
    env = {**os.environ, "STATE_DIRECTORY": str(tmp_path), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "agentpool", *args, "--config", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_lock_names_its_holder_and_is_released_when_the_holder_dies(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    assert State(str(tmp_path), "ap").lock() == f"pid {holder.pid}"
    assert State(str(tmp_path), "other").lock() is None  # another instance: its own lock
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    mine = State(str(tmp_path), "ap")
    assert mine.lock() is None
    assert mine.lock() is None  # held already: taking it again is a no-op
    assert (tmp_path / "ap" / "lock").read_text().strip() == str(os.getpid())


@pytest.mark.parametrize("command", [["once"], ["run"], ["drain", "--pool", "dind"], ["resume"]])
def test_a_second_process_for_the_instance_refuses_to_decide(
    tmp_path: Path, holder: subprocess.Popen[str], command: list[str]
) -> None:
    done = cli(tmp_path, *command)
    assert done.returncode == 1, done.stderr
    assert f"another agentpool process runs for instance 'ap' (pid {holder.pid}" in done.stderr
    assert "Traceback" not in done.stderr
    assert holder.poll() is None  # nothing was done to the holder


def test_resume_without_a_daemon_clears_the_drain_its_next_start_would_read(tmp_path: Path) -> None:
    state = tmp_path / "ap" / "state.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"draining": ["dind"], "draining_hosts": ["local"]}))
    done = cli(tmp_path, "resume")
    assert done.returncode == 0, done.stderr
    assert "resumed: dind (no daemon running: saved for its next start)" in done.stdout
    done = cli(tmp_path, "resume", "--host", "local")
    assert done.returncode == 0, done.stderr
    assert json.loads(state.read_text()) == {"draining": []}
