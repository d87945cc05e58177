"""The daemon's loop: against a Jenkins and an engine that do not answer it backs off, bounded,
however long the outage lasts; SIGTERM in the middle of a pass lets the pass end, then exits 0."""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from agentpool.config import load_config_text
from agentpool.daemon import Daemon, Engine
from agentpool_testing.jenkins import Controller

REPO = Path(__file__).resolve().parents[2]

CONFIG = """jenkins:
  url: http://127.0.0.1:9/
  user: agentpool
  token: not-used
  timeout: 1s
poll_interval: 5s
docker_hosts:
  - name: nowhere
    url: unix:///nonexistent/agentpool-test.sock
pools:
  - name: dind
    labels: [docker]
    image: agentpool/dind-agent:latest
"""


def test_backoff_stays_bounded_after_a_day_long_outage() -> None:
    engine = Engine(load_config_text(CONFIG, "agentpool.yaml"))
    daemon = Daemon("agentpool.yaml", engine)
    daemon._failures = 1440  # a day of failed passes at the one-minute cap
    daemon._tick()
    assert daemon._failures == 1441
    delay = daemon._skip_until - time.time()
    assert Daemon.MAX_BACKOFF - 5 < delay <= Daemon.MAX_BACKOFF
    engine.close()


def test_a_dead_engine_alone_does_not_slow_the_loop_down() -> None:
    """Jenkins answers, one engine does not: the planner serves through the others, so the
    loop keeps its pace (the pass is still reported incomplete for /healthz)."""
    token = secrets.token_hex(16)
    with Controller(listen="127.0.0.1:0", user="admin", token=token) as controller:
        config = CONFIG.replace("http://127.0.0.1:9/", controller.url).replace("not-used", token)
        engine = Engine(load_config_text(config.replace("user: agentpool", "user: admin"), "agentpool.yaml"))
        daemon = Daemon("agentpool.yaml", engine)
        daemon._tick()
        assert engine.last_report is not None and not engine.last_report.ok
        assert engine.last_report.observed.queue is not None
        assert daemon._failures == 0 and daemon._skip_until == 0.0
        engine.close()


def test_sigterm_during_a_pass_finishes_it_and_exits_0(tmp_path: Path) -> None:
    token = secrets.token_hex(16)
    controller = Controller(listen="127.0.0.1:0", user="admin", token=token)
    controller.start()
    try:
        controller.faults.latency(1.5)  # a pass takes several seconds
        config = tmp_path / "agentpool.yaml"
        config.write_text(
            CONFIG.replace("http://127.0.0.1:9/", controller.url)
            .replace("not-used", token)
            .replace("user: agentpool", "user: admin")
            .replace("timeout: 1s", "timeout: 10s")
            + "metrics:\n  listen: null\n"
        )
        log = tmp_path / "daemon.log"
        with log.open("wb") as stderr:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "agentpool", "run", "--config", str(config)],
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
            try:
                deadline = time.monotonic() + 20
                while "msg=started" not in log.read_text() and time.monotonic() < deadline:
                    time.sleep(0.1)
                time.sleep(1.0)  # the first pass is waiting on Jenkins now
                daemon.send_signal(signal.SIGTERM)
                assert daemon.wait(30) == 0
            finally:
                if daemon.poll() is None:
                    daemon.kill()
    finally:
        controller.stop()
    text = log.read_text()
    stopping = text.index("msg=stopping")
    assert text.find('msg="pass incomplete"', stopping) > stopping, text  # the pass ran to its end
    assert token not in text
