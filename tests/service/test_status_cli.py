"""`agentpool status` in a real pseudo-terminal against a daemon's listener: colour on a TTY,
none with NO_COLOR or into a pipe, and `--watch` redrawing until Ctrl-C, which exits 0."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentpool.service.http import ServiceHTTP
from agentpool.service.metrics import Metrics

from .test_page import sample

REPO = Path(__file__).resolve().parents[2]
CLEAR = b"\033[H\033[2J"
TOKEN = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def config(tmp_path: Path) -> Iterator[Path]:
    def refuse(pool: str | None) -> dict[str, Any]:
        raise AssertionError("not called")

    http = ServiceHTTP("127.0.0.1:0", Metrics(["dind"]), lambda: (True, "ok"), sample, refuse, refuse)
    http.start()
    path = tmp_path / "agentpool.yaml"
    path.write_text(
        "jenkins: {url: 'http://127.0.0.1:9/', user: u, token_env: AGENTPOOL_TEST_TOKEN}\n"
        f"metrics: {{listen: '127.0.0.1:{http.port}'}}\n"
        "pools: [{name: dind, labels: [docker], image: x}]\n"
    )
    yield path
    http.stop()


def run_in_pty(args: list[str], env: dict[str, str], stop_after: int | None = None) -> tuple[int, str]:
    """Run ``agentpool ARGS`` on a pty; with ``stop_after``, send Ctrl-C (SIGINT) once that many
    screens were drawn (counted, not timed: a loaded machine starts Python slowly)."""
    main, sub = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentpool", *args],
        stdin=sub,
        stdout=sub,
        stderr=sub,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "AGENTPOOL_TEST_TOKEN": TOKEN, **env},
        start_new_session=True,
    )
    os.close(sub)
    out = b""
    started = time.monotonic()
    interrupted = False
    while True:
        if stop_after is not None and not interrupted and out.count(CLEAR) >= stop_after:
            os.killpg(proc.pid, signal.SIGINT)
            interrupted = True
        ready, _, _ = select.select([main], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the child closed the pty
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
        assert time.monotonic() - started < 60, out.decode(errors="replace")
    os.close(main)
    return proc.wait(timeout=10), out.decode(errors="replace")


def test_status_is_coloured_on_a_terminal_and_plain_with_no_color(config: Path) -> None:
    code, out = run_in_pty(["status", "--config", str(config)], {"NO_COLOR": ""})
    assert code == 0, out
    assert "\033[1mPools" in out and "\033[36mbusy" in out
    assert "cap reached" in out
    code, out = run_in_pty(["status", "--config", str(config)], {"NO_COLOR": "1"})
    assert code == 0, out
    assert "\033[" not in out and "Last decisions" in out


def test_status_into_a_pipe_has_no_colour(config: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agentpool", "status", "--config", str(config)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "AGENTPOOL_TEST_TOKEN": TOKEN},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "\033[" not in done.stdout and "Pools" in done.stdout


def test_watch_redraws_until_ctrl_c_and_exits_0(config: Path) -> None:
    code, out = run_in_pty(["status", "--config", str(config), "--watch", "0.5"], {}, stop_after=3)
    assert code == 0, out
    assert out.count(CLEAR.decode()) >= 3, out
    assert "Traceback" not in out


def test_watch_refuses_a_non_positive_interval(config: Path) -> None:
    code, out = run_in_pty(["status", "--config", str(config), "--watch", "0"], {})
    assert code == 2 and "--watch 0: give a number of seconds above 0" in out
