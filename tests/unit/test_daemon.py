"""The daemon's loop against a Jenkins and an engine that do not answer: it backs off, bounded,
however long the outage lasts."""

from __future__ import annotations

import time

from agentpool.config import load_config_text
from agentpool.daemon import Daemon, Engine

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
