"""The real daemon with systemd's default descriptor limit against 1,100 partial connections and 1 GB bodies.

`agentpool run` (soft RLIMIT_NOFILE 1,024, as systemd starts services without LimitNOFILE)
talks to the real controller and engine while its HTTP port gets more partial connections
than it has descriptors, and request bodies of 1 GB. Its passes must go on, `/healthz` must
answer within a second, and its JSON log must stay 100 % JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.waiting import wait_for

from .conftest import REPO, ConfigFactory, free_port

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("cleanup")]


def passes(base: str) -> float:
    for line in requests.get(base + "/metrics", timeout=5).text.splitlines():
        if line.startswith("agentpool_pass_duration_seconds_count"):
            return float(line.split()[-1])
    return 0.0


def _soft_limit_1024() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


def test_passes_go_on_and_healthz_answers_under_connection_abuse(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2500:
        pytest.skip(f"the hard descriptor limit ({hard}) is too low for 1,100 client sockets")
    port = free_port()
    make_config(metrics_listen=f"127.0.0.1:{port}")
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "daemon.log"
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agentpool",
            "--log-format",
            "json",
            "run",
            "--config",
            str(tmp_path / "agentpool.yaml"),
        ],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=log_path.open("wb"),
        preexec_fn=_soft_limit_1024,
    )
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2500), hard))
    sockets: list[socket.socket] = []
    stop = threading.Event()
    try:
        wait_for("the first pass", lambda: _healthy(base), 60)
        for i in range(1100):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            sockets.append(sock)
            if i % 2:
                with contextlib.suppress(OSError):
                    sock.send(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished

        def flood() -> None:
            while not stop.is_set():
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", port), timeout=2) as s,
                ):
                    s.sendall(b"POST /drain HTTP/1.1\r\nContent-Length: 1073741824\r\n\r\n")
                    for _ in range(16384):
                        s.sendall(b"x" * 65536)

        floods = [threading.Thread(target=flood, daemon=True) for _ in range(3)]
        for t in floods:
            t.start()
        before = passes(base)
        worst = 0.0
        for _ in range(15):
            start = time.monotonic()
            assert requests.get(base + "/healthz", timeout=5).status_code == 200
            worst = max(worst, time.monotonic() - start)
            time.sleep(0.3)
        assert worst < 1.0, f"/healthz took {worst:.2f}s"
        assert passes(base) >= before + 3  # poll_interval 1 s: the passes went on
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    finally:
        stop.set()
        for sock in sockets:
            sock.close()
        if daemon.poll() is None:
            daemon.kill()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    lines = log_path.read_text().splitlines()
    assert lines
    for line in lines:
        json.loads(line)


def _healthy(base: str) -> bool:
    try:
        return requests.get(base + "/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False
