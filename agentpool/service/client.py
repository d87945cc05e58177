"""Talk to a running daemon: ``agentpool status``, ``drain`` and ``resume`` use it.

A daemon that runs owns the pools' state (what is draining, which agent is idle since when);
the commands ask it over its HTTP endpoints rather than acting behind its back. When no
daemon answers on ``metrics.listen`` they get :class:`DaemonUnavailable` and act themselves.
"""

from __future__ import annotations

from typing import Any

import requests

from agentpool.errors import AgentpoolError
from agentpool.service.http import parse_listen


class DaemonUnavailable(AgentpoolError):
    """No daemon answers on the configured address."""


class DaemonError(AgentpoolError):
    """The daemon answered with an error (unknown pool, bad request, internal error)."""


class DaemonClient:
    """HTTP client of :class:`agentpool.service.http.ServiceHTTP` at ``listen`` (``host:port``)."""

    def __init__(self, listen: str, timeout: float = 10.0, admin_token: str | None = None) -> None:
        host, port = parse_listen(listen)
        if host in ("0.0.0.0", "::"):  # listening on every address: reach it on loopback
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        self.base = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        self.timeout = timeout
        self.admin_token = admin_token  # for drain and resume (metrics.admin_token_file)

    def status(self) -> dict[str, Any]:
        return self._json("GET", "/status")

    def drain(self, pool: str | None = None) -> dict[str, Any]:
        return self._json("POST", "/drain", pool)

    def resume(self, pool: str | None = None) -> dict[str, Any]:
        return self._json("POST", "/resume", pool)

    def health(self) -> tuple[bool, str]:
        answer = self._request("GET", "/healthz")
        return answer.status_code == 200, answer.text.strip()

    def _request(self, method: str, path: str, pool: str | None = None) -> requests.Response:
        params = {"pool": pool} if pool is not None else None
        headers = (
            {"Authorization": f"Bearer {self.admin_token}"} if self.admin_token and method == "POST" else {}
        )
        try:
            return requests.request(
                method, self.base + path, params=params, headers=headers, timeout=self.timeout
            )
        except requests.ConnectionError as exc:
            raise DaemonUnavailable(f"no agentpool daemon answers at {self.base}") from exc
        except requests.RequestException as exc:
            raise DaemonError(f"{method} {self.base}{path}: {exc}") from exc

    def _json(self, method: str, path: str, pool: str | None = None) -> dict[str, Any]:
        answer = self._request(method, path, pool)
        try:
            body = answer.json()
        except ValueError:
            raise DaemonError(
                f"{method} {self.base}{path} answered HTTP {answer.status_code}, not JSON: is this agentpool?"
            ) from None
        if answer.status_code != 200:
            error = body.get("error") if isinstance(body, dict) else body
            raise DaemonError(f"{method} {path}: HTTP {answer.status_code}: {error}")
        if not isinstance(body, dict):
            raise DaemonError(f"{method} {path}: expected a JSON object, got {type(body).__name__}")
        return body
