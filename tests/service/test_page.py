"""The status page and the terminal view, rendered from a status dict as ``/status`` serves it."""

from __future__ import annotations

import base64
import hashlib
import io
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from agentpool import statusview
from agentpool.service import page
from agentpool.service.http import ServiceHTTP
from agentpool.service.metrics import Metrics

EVIL = '<script>alert("x")</script>&"'


def sample(**changes: Any) -> dict[str, Any]:
    status: dict[str, Any] = {
        "instance": "ap",
        "generated": 1000.0,
        "last_pass": 997.0,
        "poll_interval": 5.0,
        "error": "",
        "source": "running daemon",
        "agents": [
            {
                "name": "ap-dind-1",
                "pool": "dind",
                "host": "local",
                "state": "busy",
                "age": 75.0,
                "idle": None,
                "build": "http://jenkins.example/job/app/42/",
            },
            {
                "name": "ap-dind-" + EVIL,
                "pool": "dind",
                "host": "local",
                "state": "online-idle",
                "age": 4000.0,
                "idle": 30.0,
                "build": "javascript:alert(1)",
            },
        ],
        "demand": {"docker": 3, "windows": 1},
        "unserved": [
            {"item": 7, "task": "app " + EVIL, "label": "docker", "why": "cap reached " + EVIL},
            {"item": 8, "task": "win", "label": "windows", "why": "no pool matches"},
        ],
        "pools": {
            "dind": {
                "labels": ["docker", "linux"],
                "max_agents": 2,
                "min_idle": 0,
                "agents": 2,
                "states": {"starting": 0, "online-idle": 1, "busy": 1, "draining": 0},
                "draining": False,
                "consecutive_failures": 2,
                "backoff_until": 1030.0,
                "backoff_seconds": 30,
                "at_cap": True,
            },
        },
        "hosts": [
            {
                "name": "local",
                "url": "unix:///var/run/docker.sock",
                "max_agents": 20,
                "agents": 2,
                "reachable": True,
                "error": "",
            }
        ],
        "waiting": [
            {"label": "docker", "count": 3, "unserved": 1},
            {"label": "windows", "count": 1, "unserved": 1},
        ],
        "queued_to_online": {
            "window_seconds": 3600.0,
            "count": 4,
            "p50": 6.0,
            "p95": 19.0,
            "max": 19.0,
            "pools": {"dind": {"count": 4, "p50": 6.0, "p95": 19.0, "max": 19.0}},
        },
        "decisions": [
            {
                "time": 990.0,
                "event": "provisioned",
                "agent": "ap-dind-1",
                "pool": "dind",
                "reason": "demand",
                "detail": "1 item(s) waiting for " + EVIL,
            }
        ],
    }
    status.update(changes)
    return status


def test_page_escapes_every_value_and_links_only_http_builds() -> None:
    text = page.render(sample())
    assert "<script" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&quot;" in text
    assert 'href="http://jenkins.example/job/app/42/"' in text
    assert 'href="javascript' not in text
    assert "cap reached" in text and "no pool matches" in text
    assert "backoff 30s (2 failures)" in text and "at cap" in text
    assert '<meta http-equiv="refresh" content="5">' in text
    assert 'name="viewport"' in text


def test_page_loads_nothing_and_its_csp_allows_exactly_its_inline_style() -> None:
    text = page.render(sample())
    # Nothing that makes a browser fetch: no src, no stylesheet link, no url() or @import.
    assert not re.search(r"\bsrc\s*=|<link\b|url\(|@import|<script\b|<iframe\b|<img\b", text, re.I)
    style = re.search(r"<style>(.*?)</style>", text, re.S)
    assert style is not None
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    csp = page.HEADERS["Content-Security-Policy"]
    assert f"style-src 'sha256-{digest}'" in csp
    assert "default-src 'none'" in csp


def test_page_without_a_daemon_history_says_so() -> None:
    text = page.render(sample(queued_to_online=None, decisions=[], agents=[], unserved=[], waiting=[]))
    assert text.count("known to a running daemon only") == 2
    assert "no agents" in text and "no build is waiting" in text


@pytest.fixture
def served() -> Iterator[ServiceHTTP]:
    def refuse(pool: str | None) -> dict[str, Any]:
        raise AssertionError("not called")

    http = ServiceHTTP("127.0.0.1:0", Metrics(["dind"]), lambda: (True, "ok"), sample, refuse, refuse)
    http.start()
    yield http
    http.stop()


def test_root_serves_the_page_with_its_security_headers(served: ServiceHTTP) -> None:
    answer = requests.get(served.url + "/", timeout=5)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    assert answer.headers["Content-Security-Policy"] == page.HEADERS["Content-Security-Policy"]
    assert 'data-agent="ap-dind-1"' in answer.text
    assert requests.get(served.url + "/nothing", timeout=5).status_code == 404


def test_terminal_view_has_the_page_sections_and_colours_only_when_asked() -> None:
    plain = statusview.render(sample(), colour=False)
    for section in (
        "Pools",
        "Waiting builds",
        "Not served, and why",
        "Queued → online",
        "Agents",
        "Docker hosts",
        "Last decisions",
    ):
        assert section in plain
    assert "\033[" not in plain
    assert "cap reached" in plain and "backoff 30s (2 failures)" in plain
    assert "http://jenkins.example/job/app/42/" in plain
    coloured = statusview.render(sample(), colour=True)
    assert "\033[36mbusy" in coloured and "\033[0m" in coloured
    assert re.sub(r"\033\[[0-9;]*m", "", coloured).replace(" ", "") == plain.replace(" ", "")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_follows_the_terminal_and_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert statusview.use_colour(_Tty())
    assert not statusview.use_colour(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not statusview.use_colour(_Tty())


def test_watch_redraws_until_ctrl_c_and_exits_0() -> None:
    calls: list[float] = []

    def sleep(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) == 3:
            raise KeyboardInterrupt

    out = _Tty()
    assert statusview.show(sample, 1.5, stream=out, sleep=sleep) == 0
    assert calls == [1.5, 1.5, 1.5]
    assert out.getvalue().count(statusview.CLEAR) == 3
