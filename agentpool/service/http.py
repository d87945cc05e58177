"""The daemon's HTTP side: ``/metrics``, ``/healthz``, ``/status``, ``POST /drain`` and ``/resume``.

Prometheus scrapes ``/metrics``; a load balancer or systemd-independent monitor polls
``/healthz``; ``agentpool status`` reads ``/status`` and ``agentpool drain``/``resume`` post to
a running daemon instead of acting behind its back. The server is the standard library's
``ThreadingHTTPServer`` in a daemon thread: prometheus_client's own ``start_http_server``
serves only metrics, and five small routes do not justify a web framework. It binds to
127.0.0.1 unless ``metrics.listen`` names another address: drain and resume change what the
daemon does and have no authentication, so they are refused for browser requests (an
``Origin`` header), which would otherwise let any web page a local user opens post to them.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from agentpool.service import page
from agentpool.service.metrics import Metrics

log = logging.getLogger(__name__)

HealthFn = Callable[[], tuple[bool, str]]
StatusFn = Callable[[], dict[str, Any]]
PoolActionFn = Callable[[str | None], dict[str, Any]]


def health_verdict(
    last_success: float | None, now: float, poll_interval: float, last_error: str
) -> tuple[bool, str]:
    """Healthy while the last successful pass is younger than 3 × ``poll_interval``.

    Returns ``(True, "ok")`` or ``(False, reason)``; the reason names the age, the limit and
    the last error, as ``/healthz`` shows it to whoever is paged.
    """
    limit = 3 * poll_interval
    error = f"; last error: {last_error}" if last_error else ""
    if last_success is None:
        return False, f"no successful pass yet{error}"
    age = now - last_success
    if age < limit:
        return True, "ok"
    return False, f"last successful pass {age:.0f}s ago, limit {limit:.0f}s (3 x poll_interval){error}"


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``:port`` (127.0.0.1) → ``(host, port)``; clear error otherwise."""
    host, sep, port_text = listen.rpartition(":")
    if not sep:
        raise ValueError(f"metrics.listen {listen!r}: expected HOST:PORT, e.g. 127.0.0.1:9464")
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"metrics.listen {listen!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"metrics.listen {listen!r}: port {port} is out of range 0-65535")
    return host, port


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    service: ServiceHTTP


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "agentpool"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s " + format, self.client_address[0], *args)

    def do_GET(self) -> None:
        self._guarded(self._get)

    def do_POST(self) -> None:
        self._guarded(self._post)

    def _guarded(self, handler: Callable[[], None]) -> None:
        try:
            handler()
        except Exception as exc:
            # A callback failed before anything was written: answer 500 naming the error.
            log.exception("http handler for %s %s failed", self.command, self.path)
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(exc).__name__}: {exc}"})

    def _get(self) -> None:
        path = urlsplit(self.path).path
        service = self.server.service
        if path == "/metrics":
            self._send(HTTPStatus.OK, service.metrics.exposition(), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            ok, reason = service.health()
            status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
            self._send(status, (reason + "\n").encode(), "text/plain; charset=utf-8")
        elif path == "/status":
            self._json(HTTPStatus.OK, service.status())
        elif path == "/":
            self._send(*page.response(service.status()))
        elif path in ("/drain", "/resume"):
            self._send(
                HTTPStatus.METHOD_NOT_ALLOWED, b"use POST\n", "text/plain; charset=utf-8", {"Allow": "POST"}
            )
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def _post(self) -> None:
        url = urlsplit(self.path)
        service = self.server.service
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        actions = {"/drain": service.drain, "/resume": service.resume}
        if url.path not in actions:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
            return
        if self.headers.get("Origin"):
            self._json(HTTPStatus.FORBIDDEN, {"error": "cross-origin requests are refused"})
            return
        pools = parse_qs(url.query).get("pool", [])
        if len(pools) > 1:
            self._json(HTTPStatus.BAD_REQUEST, {"error": "give at most one pool"})
            return
        try:
            result = actions[url.path](pools[0] if pools else None)
        except LookupError as exc:
            self._json(HTTPStatus.NOT_FOUND, {"error": str(exc.args[0] if exc.args else exc)})
            return
        except ValueError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        self._json(HTTPStatus.OK, result)

    def _json(self, status: HTTPStatus, body: Any) -> None:
        data = json.dumps(body, default=str, indent=1, sort_keys=True).encode() + b"\n"
        self._send(status, data, "application/json")

    def _send(
        self, status: HTTPStatus, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class ServiceHTTP:
    """The HTTP endpoints on ``listen`` (``host:port``; port 0 picks a free port, see ``.port``)."""

    def __init__(
        self,
        listen: str,
        metrics: Metrics,
        health: HealthFn,
        status: StatusFn,
        drain: PoolActionFn,
        resume: PoolActionFn,
    ) -> None:
        self.host, self._requested_port = parse_listen(listen)
        self.listen = listen
        self.metrics = metrics
        self.health = health
        self.status = status
        self.drain = drain
        self.resume = resume
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("ServiceHTTP is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        cls = _Server6 if _is_ipv6(self.host) else _Server
        try:
            server = cls((self.host, self._requested_port), _Handler)
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot listen on {self.listen} (metrics.listen): {exc.strerror}"
            ) from exc
        server.service = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.1,), name="agentpool-http", daemon=True
        )
        self._thread.start()
        log.info("http listening", extra={"url": self.url})

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False
