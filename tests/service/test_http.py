"""The service endpoints over real HTTP: metrics, health, status, drain and resume."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from agentpool.model import AgentState, Reason
from agentpool.service.http import ServiceHTTP, health_verdict, parse_listen
from agentpool.service.metrics import Metrics

ADMIN = "admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


class FakeDaemon:
    """Stands in for the daemon's state behind the callbacks: what a drain would change."""

    def __init__(self) -> None:
        self.pools = {"dind": False, "big": False}  # name -> draining
        self.healthy: tuple[bool, str] = (True, "ok")
        self.lock = threading.Lock()

    def health(self) -> tuple[bool, str]:
        return self.healthy

    def status(self) -> dict[str, Any]:
        return {"pools": {name: {"draining": d} for name, d in self.pools.items()}}

    def _set(self, pool: str | None, draining: bool) -> dict[str, Any]:
        if pool is not None and pool not in self.pools:
            raise LookupError(f"no pool named {pool!r}")
        with self.lock:
            for name in [pool] if pool else list(self.pools):
                self.pools[name] = draining
        return {"draining": sorted(n for n, d in self.pools.items() if d)}

    def drain(self, pool: str | None) -> dict[str, Any]:
        return self._set(pool, True)

    def resume(self, pool: str | None) -> dict[str, Any]:
        return self._set(pool, False)


@pytest.fixture
def served() -> Iterator[tuple[ServiceHTTP, FakeDaemon, Metrics]]:
    daemon = FakeDaemon()
    metrics = Metrics(pools=["dind", "big"])
    http = ServiceHTTP(
        "127.0.0.1:0", metrics, daemon.health, daemon.status, daemon.drain, daemon.resume, admin_token=ADMIN
    )
    http.start()
    yield http, daemon, metrics
    http.stop()


def _request(
    url: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    resp = requests.request(method, url, headers=headers, timeout=5)
    return resp.status_code, dict(resp.headers), resp.text


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_show_what_was_reported(served: tuple[ServiceHTTP, FakeDaemon, Metrics]) -> None:
    http, _, metrics = served
    metrics.set_agents({("dind", AgentState.BUSY): 2, ("dind", AgentState.STARTING): 1})
    metrics.set_waiting({"docker&&linux": 3, "": 1})
    for seconds in (4.2, 7.9, 12.0):
        metrics.observe_online("dind", seconds)
        metrics.provisioned("dind")
    metrics.observe_pass(0.03)
    metrics.launch_failed("big")
    metrics.api_error("jenkins", "timeout")
    metrics.api_error("docker", "500")
    metrics.api_error("jenkins", "timeout")
    metrics.reaped("dind", Reason.IDLE_TIMEOUT)
    metrics.pass_succeeded(1_800_000_000.0)

    status, headers, body = _request(http.url + "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    s = _samples(body)
    assert s[("agentpool_agents", (("pool", "dind"), ("state", "busy")))] == 2
    assert s[("agentpool_agents", (("pool", "dind"), ("state", "starting")))] == 1
    assert s[("agentpool_agents", (("pool", "big"), ("state", "online-idle")))] == 0
    assert s[("agentpool_waiting_items", (("label", "docker&&linux"),))] == 3
    assert s[("agentpool_waiting_items", (("label", ""),))] == 1
    assert s[("agentpool_queued_to_online_seconds_count", (("pool", "dind"),))] == 3
    assert s[("agentpool_queued_to_online_seconds_sum", (("pool", "dind"),))] == pytest.approx(24.1)
    assert s[("agentpool_queued_to_online_seconds_bucket", (("le", "5.0"), ("pool", "dind")))] == 1
    assert s[("agentpool_queued_to_online_seconds_bucket", (("le", "10.0"), ("pool", "dind")))] == 2
    assert s[("agentpool_pass_duration_seconds_count", ())] == 1
    assert s[("agentpool_provisioned_total", (("pool", "dind"),))] == 3
    assert s[("agentpool_provisioned_total", (("pool", "big"),))] == 0
    assert s[("agentpool_launch_failures_total", (("pool", "big"),))] == 1
    assert s[("agentpool_launch_failures_total", (("pool", "dind"),))] == 0
    assert s[("agentpool_api_errors_total", (("kind", "timeout"), ("system", "jenkins")))] == 2
    assert s[("agentpool_api_errors_total", (("kind", "500"), ("system", "docker")))] == 1
    assert s[("agentpool_reaped_total", (("pool", "dind"), ("reason", "idle-timeout")))] == 1
    assert s[("agentpool_last_successful_pass_timestamp_seconds", ())] == 1_800_000_000.0
    assert all(name.startswith("agentpool_") for name, _ in s)


def test_agents_gauge_is_replaced_each_pass(served: tuple[ServiceHTTP, FakeDaemon, Metrics]) -> None:
    http, _, metrics = served
    metrics.set_agents({("dind", "busy"): 2, ("gone", "busy"): 1})
    metrics.set_agents({("dind", "online-idle"): 1})
    s = _samples(_request(http.url + "/metrics")[2])
    assert s[("agentpool_agents", (("pool", "dind"), ("state", "busy")))] == 0
    assert s[("agentpool_agents", (("pool", "dind"), ("state", "online-idle")))] == 1
    assert ("agentpool_agents", (("pool", "gone"), ("state", "busy"))) not in s


def test_two_metrics_objects_do_not_share_numbers() -> None:
    a, b = Metrics(), Metrics()
    a.provisioned("dind")
    assert b"agentpool_provisioned_total" in a.exposition()
    assert b'agentpool_provisioned_total{pool="dind"}' not in b.exposition()


def test_api_error_system_is_checked() -> None:
    with pytest.raises(ValueError, match="unknown system 'github'"):
        Metrics().api_error("github", "timeout")


def test_healthz_follows_the_verdict(served: tuple[ServiceHTTP, FakeDaemon, Metrics]) -> None:
    http, daemon, _ = served
    assert _request(http.url + "/healthz")[::2] == (200, "ok\n")
    daemon.healthy = health_verdict(100.0, 120.0, 5.0, "jenkins: connection refused")
    status, _, body = _request(http.url + "/healthz")
    assert status == 503
    assert body == (
        "last successful pass 20s ago, limit 15s (3 x poll_interval); "
        "last error: jenkins: connection refused\n"
    )


def test_status_is_json(served: tuple[ServiceHTTP, FakeDaemon, Metrics]) -> None:
    http, _, _ = served
    status, headers, body = _request(http.url + "/status")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"pools": {"big": {"draining": False}, "dind": {"draining": False}}}


def test_drain_and_resume(served: tuple[ServiceHTTP, FakeDaemon, Metrics]) -> None:
    http, daemon, _ = served
    status, _, body = _request(http.url + "/drain?pool=dind", "POST", AUTH)
    assert (status, json.loads(body)) == (200, {"draining": ["dind"]})
    assert daemon.pools == {"dind": True, "big": False}
    status, _, body = _request(http.url + "/drain", "POST", AUTH)
    assert json.loads(body) == {"draining": ["big", "dind"]}
    status, _, body = _request(http.url + "/resume?pool=big", "POST", AUTH)
    assert json.loads(body) == {"draining": ["dind"]}
    status, _, body = _request(http.url + "/resume", "POST", AUTH)
    assert (status, json.loads(body)) == (200, {"draining": []})


def test_drain_errors(served: tuple[ServiceHTTP, FakeDaemon, Metrics]) -> None:
    http, daemon, _ = served
    status, _, body = _request(http.url + "/drain?pool=nope", "POST", AUTH)
    assert (status, json.loads(body)) == (404, {"error": "no pool named 'nope'"})
    status, headers, _ = _request(http.url + "/drain?pool=dind")
    assert (status, headers["Allow"]) == (405, "POST")
    status, _, body = _request(
        http.url + "/drain?pool=dind", "POST", {**AUTH, "Origin": "http://evil.example"}
    )
    assert status == 403
    assert daemon.pools == {"dind": False, "big": False}
    assert _request(http.url + "/nothing")[0] == 404


def test_a_failing_callback_answers_500(served: tuple[ServiceHTTP, FakeDaemon, Metrics]) -> None:
    http, _, _ = served

    def broken() -> dict[str, Any]:
        raise RuntimeError("planner state unavailable")

    http.status = broken
    status, _, body = _request(http.url + "/status")
    assert (status, json.loads(body)) == (500, {"error": "RuntimeError: planner state unavailable"})
    assert _request(http.url + "/healthz")[0] == 200  # the server survives


def test_port_in_use_is_named() -> None:
    first = ServiceHTTP("127.0.0.1:0", Metrics(), lambda: (True, "ok"), dict, dict, dict)  # type: ignore[arg-type]
    first.start()
    try:
        second = ServiceHTTP(f"127.0.0.1:{first.port}", Metrics(), lambda: (True, "ok"), dict, dict, dict)  # type: ignore[arg-type]
        with pytest.raises(OSError, match=rf"cannot listen on 127.0.0.1:{first.port} \(metrics.listen\)"):
            second.start()
    finally:
        first.stop()


@pytest.mark.parametrize(
    ("listen", "expected"),
    [("127.0.0.1:9464", ("127.0.0.1", 9464)), (":9464", ("127.0.0.1", 9464)), ("[::1]:0", ("::1", 0))],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize(
    ("listen", "message"),
    [("9464", "expected HOST:PORT"), ("h:port", "'port' is not a number"), ("h:70000", "out of range")],
)
def test_parse_listen_errors(listen: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_listen(listen)


@pytest.mark.parametrize(
    ("last_success", "now", "last_error", "expected"),
    [
        (None, 10.0, "", (False, "no successful pass yet")),
        (
            None,
            10.0,
            "docker local: refused",
            (False, "no successful pass yet; last error: docker local: refused"),
        ),
        (100.0, 114.9, "", (True, "ok")),
        (100.0, 115.0, "", (False, "last successful pass 15s ago, limit 15s (3 x poll_interval)")),
    ],
)
def test_health_verdict(
    last_success: float | None, now: float, last_error: str, expected: tuple[bool, str]
) -> None:
    assert health_verdict(last_success, now, 5.0, last_error) == expected
