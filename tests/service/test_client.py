"""The daemon client against the real HTTP endpoints, and without a daemon."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from agentpool.service.client import DaemonClient, DaemonError, DaemonUnavailable
from agentpool.service.http import ServiceHTTP
from agentpool.service.metrics import Metrics


def test_status_drain_resume_through_a_daemon() -> None:
    draining: set[str] = set()
    pools = {"dind", "big"}

    def status() -> dict[str, Any]:
        return {"draining": sorted(draining)}

    def act(add: bool) -> Any:
        def action(pool: str | None) -> dict[str, Any]:
            if pool is not None and pool not in pools:
                raise LookupError(f"no pool named {pool!r}")
            chosen = {pool} if pool else pools
            if add:
                draining.update(chosen)
            else:
                draining.difference_update(chosen)
            return status()

        return action

    http = ServiceHTTP(
        "127.0.0.1:0",
        Metrics(),
        lambda: (False, "no successful pass yet"),
        status,
        act(True),
        act(False),
        admin_token="client-admin-token",
    )
    http.start()
    try:
        with pytest.raises(DaemonError, match="HTTP 401"):
            DaemonClient(f"0.0.0.0:{http.port}").drain("dind")
        client = DaemonClient(f"0.0.0.0:{http.port}", admin_token="client-admin-token")
        assert client.drain("dind") == {"draining": ["dind"]}
        assert client.status() == {"draining": ["dind"]}
        assert client.drain() == {"draining": ["big", "dind"]}
        assert client.resume("big") == {"draining": ["dind"]}
        assert client.health() == (False, "no successful pass yet")
        with pytest.raises(DaemonError, match="HTTP 404: no pool named 'nope'"):
            client.drain("nope")
    finally:
        http.stop()


def test_no_daemon_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DaemonUnavailable, match=f"no agentpool daemon answers at http://127.0.0.1:{port}"):
        DaemonClient(f"127.0.0.1:{port}", timeout=2).status()
