"""The daemon's HTTP side: the status page at ``/``, ``/metrics``, ``/healthz``, ``/status``, ``POST /drain`` and ``/resume``.

Prometheus scrapes ``/metrics``; a load balancer or systemd-independent monitor polls
``/healthz``; ``agentpool status`` reads ``/status`` and ``agentpool drain``/``resume`` post to
a running daemon (``?pool=P``, ``?host=H`` or neither: every pool) instead of acting behind its
back. Six small routes do not justify a web
framework, and prometheus_client's own server serves only metrics.

Whoever can reach the port may be hostile (another local user, a web page the operator opens,
a port scanner), and the daemon's passes must go on whatever they send. So the server is one
asyncio loop in a daemon thread, where an idle connection costs a few hundred bytes and no
thread: at most :data:`MAX_CONNECTIONS` are open (a new one evicts the oldest that has not
finished its request head, so a real client always gets in), the head must arrive within
:data:`HEAD_TIMEOUT` and fit in :data:`MAX_HEAD`, the route and the method are checked
before anything else, and a body is never read (no route takes one: a declared body over
:data:`MAX_BODY` is refused at once). ``Host`` must name the listen address (or one of
``metrics.allowed_hosts``) so that DNS rebinding cannot read ``/status``. ``/drain`` and
``/resume`` change what the daemon does: they require ``Authorization: Bearer`` with the
token of ``metrics.admin_token_file`` (refused when none is configured) and refuse anything a
browser sends (``Origin``, ``Referer``, ``Sec-Fetch-Site``). Every answer goes through the
log redaction, and every failure is logged through the project's logger, never on raw stderr.
The sockets (accept, caps, eviction, head parsing, timeouts, writing) are
:mod:`agentpool.service.server`'s; this module keeps the routes and the checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from agentpool.service import page
from agentpool.service.metrics import Metrics
from agentpool.service.server import (
    ACCEPT_BATCH,
    GRACE,
    HEAD_TIMEOUT,
    MAX_CONNECTIONS,
    MAX_HEAD,
    TEXT,
    WRITE_TIMEOUT,
    ConnectionServer,
    Request,
    Response,
)

__all__ = [
    "ACCEPT_BATCH",
    "CALLBACK_TIMEOUT",
    "GRACE",
    "HEAD_TIMEOUT",
    "MAX_BODY",
    "MAX_CONNECTIONS",
    "MAX_HEAD",
    "TEXT",
    "WRITE_TIMEOUT",
    "Request",
    "Response",
    "Route",
    "ServiceHTTP",
    "health_verdict",
    "parse_listen",
]

log = logging.getLogger(__name__)

HealthFn = Callable[[], tuple[bool, str]]
StatusFn = Callable[[], dict[str, Any]]
PoolActionFn = Callable[[str | None], dict[str, Any]]

MAX_BODY = 1024  # no route reads a body; a small one (an empty JSON object) is ignored
CALLBACK_TIMEOUT = 10.0  # for the daemon's answer (status, drain, …)


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


@dataclass(frozen=True)
class Route:
    methods: tuple[str, ...]
    handler: Callable[[Request], Response]
    admin: bool = False  # needs the admin bearer token and no browser headers


class _HTTPError(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


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
        allowed_hosts: Sequence[str] = (),
        admin_token: str | None = None,
        drain_host: PoolActionFn | None = None,
        resume_host: PoolActionFn | None = None,
    ) -> None:
        self.host, self._requested_port = parse_listen(listen)
        self.listen = listen
        self.metrics = metrics
        self.health = health
        self.status = status
        self.drain = drain
        self.resume = resume
        self.drain_host = drain_host  # called with the host's name (never None)
        self.resume_host = resume_host
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts)
        self.admin_token = admin_token
        # One line per route.
        self.routes: dict[str, Route] = {
            "/metrics": Route(("GET",), self._metrics),
            "/healthz": Route(("GET",), self._healthz),
            "/status": Route(("GET",), self._status),
            "/": Route(("GET",), self._page),
            "/drain": Route(
                ("POST",), lambda r: self._pool_action(r, self.drain, self.drain_host), admin=True
            ),
            "/resume": Route(
                ("POST",), lambda r: self._pool_action(r, self.resume, self.resume_host), admin=True
            ),
        }
        self._server = ConnectionServer(self.host, self._requested_port, listen, self._answer)

    @property
    def port(self) -> int:
        if not self._server.started:
            raise RuntimeError("ServiceHTTP is not started")
        return self._server.port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._server.start()
        log.info("http listening", extra={"url": self.url})

    def stop(self) -> None:
        self._server.stop()

    # -- answers -----------------------------------------------------------------------------

    async def _answer(self, request: Request) -> Response:
        try:
            route = self._route(request)
            loop = asyncio.get_running_loop()
            return await asyncio.wait_for(
                loop.run_in_executor(None, route.handler, request), CALLBACK_TIMEOUT
            )
        except _HTTPError as exc:
            return exc.response
        except TimeoutError:
            log.warning(
                "http: %s %s: the daemon did not answer within %gs",
                request.method,
                request.path,
                CALLBACK_TIMEOUT,
            )
            return Response.text(HTTPStatus.SERVICE_UNAVAILABLE, "the daemon is busy; try again")
        except Exception as exc:
            log.exception("http handler for %s %s failed", request.method, request.path)
            return Response.json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(exc).__name__}: {exc}"})

    def _route(self, request: Request) -> Route:
        """The route of ``request`` after every check that needs no body; raises ``_HTTPError``."""
        if not self._host_allowed(request.headers.get("host")):
            raise _HTTPError(
                Response.text(HTTPStatus.MISDIRECTED_REQUEST, "unknown Host (metrics.allowed_hosts)")
            )
        route = self.routes.get(request.path)
        if route is None:
            raise _HTTPError(Response.text(HTTPStatus.NOT_FOUND, "not found"))
        allowed = route.methods + (("HEAD",) if "GET" in route.methods else ())
        if request.method not in allowed:
            raise _HTTPError(
                Response.text(
                    HTTPStatus.METHOD_NOT_ALLOWED, f"use {' or '.join(allowed)}", Allow=", ".join(allowed)
                )
            )
        if "transfer-encoding" in request.headers:
            raise _HTTPError(Response.text(HTTPStatus.BAD_REQUEST, "request bodies are not accepted"))
        length = request.headers.get("content-length", "0")
        if not length.isdigit() or len(length) > 12:
            raise _HTTPError(Response.text(HTTPStatus.BAD_REQUEST, "bad Content-Length"))
        if int(length) > MAX_BODY:
            raise _HTTPError(
                Response.text(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request bodies are not accepted")
            )
        if route.admin:
            self._check_admin(request)
        return route

    def _host_allowed(self, host: str | None) -> bool:
        if host is None:
            return True  # HTTP/1.0 tools; a browser always sends Host
        host = host.lower()
        if host in self.allowed_hosts:
            return True
        name = host
        if name.startswith("["):
            name = name[1 : name.find("]")] if "]" in name else name
        elif name.count(":") == 1:
            name = name.partition(":")[0]
        if name in self.allowed_hosts:
            return True
        listen = self.host.lower()
        if name == listen:
            return True
        wildcard = listen in ("0.0.0.0", "::")
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            # A name: only localhost for a loopback listener; DNS rebinding comes with a name.
            return name == "localhost" and (wildcard or _is_loopback(listen))
        if wildcard:
            return True  # every address of this machine: an address literal cannot be rebound
        with contextlib.suppress(ValueError):
            if address == ipaddress.ip_address(listen):
                return True
        return address.is_loopback and _is_loopback(listen)

    def _check_admin(self, request: Request) -> None:
        headers = request.headers
        site = headers.get("sec-fetch-site")
        if "origin" in headers or "referer" in headers or (site is not None and site != "none"):
            raise _HTTPError(Response.json(HTTPStatus.FORBIDDEN, {"error": "browser requests are refused"}))
        if self.admin_token is None:
            raise _HTTPError(
                Response.json(
                    HTTPStatus.FORBIDDEN,
                    {
                        "error": "drain and resume over HTTP need metrics.admin_token_file in the daemon's config"
                    },
                )
            )
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self.admin_token.encode()
        ):
            raise _HTTPError(
                Response.json(HTTPStatus.UNAUTHORIZED, {"error": "a valid admin bearer token is required"})
            )

    # -- the routes --------------------------------------------------------------------------

    def _metrics(self, request: Request) -> Response:
        return Response(HTTPStatus.OK, self.metrics.exposition(), CONTENT_TYPE_LATEST)

    def _healthz(self, request: Request) -> Response:
        ok, reason = self.health()
        return Response.text(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, reason)

    def _status(self, request: Request) -> Response:
        return Response.json(HTTPStatus.OK, self.status())

    def _page(self, request: Request) -> Response:
        status, body, content_type, headers = page.response(self.status())
        return Response(status, body, content_type, dict(headers))

    def _pool_action(
        self, request: Request, action: PoolActionFn, host_action: PoolActionFn | None
    ) -> Response:
        """``?pool=P``, ``?host=H`` or neither (every pool)."""
        pools, hosts = request.query.get("pool", []), request.query.get("host", [])
        if len(pools) > 1 or len(hosts) > 1 or (pools and hosts):
            return Response.json(HTTPStatus.BAD_REQUEST, {"error": "give at most one pool or one host"})
        for key, given in (("pool", pools), ("host", hosts)):
            if given and not given[0]:
                return Response.json(
                    HTTPStatus.BAD_REQUEST, {"error": f"{key}= is empty: name a {key} or leave {key} out"}
                )
        target: str | None = pools[0] if pools else None
        if hosts:
            if host_action is None:
                return Response.json(HTTPStatus.NOT_FOUND, {"error": "this daemon cannot drain hosts"})
            action, target = host_action, hosts[0]
        try:
            return Response.json(HTTPStatus.OK, action(target))
        except LookupError as exc:
            return Response.json(HTTPStatus.NOT_FOUND, {"error": str(exc.args[0] if exc.args else exc)})
        except ValueError as exc:
            return Response.json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
