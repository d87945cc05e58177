"""The daemon's HTTP side: the status page at ``/``, ``/metrics``, ``/healthz``, ``/status``, ``POST /drain`` and ``/resume``.

Prometheus scrapes ``/metrics``; a load balancer or systemd-independent monitor polls
``/healthz``; ``agentpool status`` reads ``/status`` and ``agentpool drain``/``resume`` post to
a running daemon instead of acting behind its back. Six small routes do not justify a web
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
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, SupportsIndex
from urllib.parse import parse_qs, urlsplit

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from agentpool.logs import redact
from agentpool.service import page
from agentpool.service.metrics import Metrics

log = logging.getLogger(__name__)

HealthFn = Callable[[], tuple[bool, str]]
StatusFn = Callable[[], dict[str, Any]]
PoolActionFn = Callable[[str | None], dict[str, Any]]

MAX_CONNECTIONS = 128  # twice this stays far below systemd's default soft limit of 1,024 descriptors
ACCEPT_BATCH = 16  # connections accepted (and admitted) per wake-up of the listener
GRACE = 0.5  # a new connection's time to send its head before it may be evicted
MAX_HEAD = 8 * 1024  # request line and headers
MAX_BODY = 1024  # no route reads a body; a small one (an empty JSON object) is ignored
HEAD_TIMEOUT = 5.0  # to receive the request line and headers
CALLBACK_TIMEOUT = 10.0  # for the daemon's answer (status, drain, …)
WRITE_TIMEOUT = 10.0  # for the client to take the answer
TEXT = "text/plain; charset=utf-8"


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
class Request:
    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]  # names lower-case


@dataclass
class Response:
    status: HTTPStatus
    body: bytes = b""
    content_type: str = TEXT
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def text(cls, status: HTTPStatus, text: str, **headers: str) -> Response:
        return cls(status, (text + "\n").encode(), TEXT, headers)

    @classmethod
    def json(cls, status: HTTPStatus, body: Any) -> Response:
        data = json.dumps(body, default=str, indent=1, sort_keys=True).encode() + b"\n"
        return cls(status, data, "application/json")


@dataclass(frozen=True)
class Route:
    methods: tuple[str, ...]
    handler: Callable[[Request], Response]
    admin: bool = False  # needs the admin bearer token and no browser headers


class _HTTPError(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class _Reader(asyncio.StreamReader):
    """A StreamReader that knows when a whole request head has arrived, parsed or not yet."""

    head_arrived = False
    _tail = b""

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        super().feed_data(data)
        if not self.head_arrived:
            seen = self._tail + bytes(data)[:MAX_HEAD]
            self.head_arrived = b"\r\n\r\n" in seen
            self._tail = seen[-3:]


class _Connection:
    """One accepted client socket; evictable while its request head has not arrived."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = _Reader(limit=MAX_HEAD)
        self.transport: asyncio.Transport | None = None
        self.reading = True
        self.closed = False
        self.since = time.monotonic()

    @property
    def evictable(self) -> bool:
        return self.reading and not self.reader.head_arrived

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        else:
            self.sock.close()


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
    ) -> None:
        self.host, self._requested_port = parse_listen(listen)
        self.listen = listen
        self.metrics = metrics
        self.health = health
        self.status = status
        self.drain = drain
        self.resume = resume
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts)
        self.admin_token = admin_token
        # One line per route.
        self.routes: dict[str, Route] = {
            "/metrics": Route(("GET",), self._metrics),
            "/healthz": Route(("GET",), self._healthz),
            "/status": Route(("GET",), self._status),
            "/": Route(("GET",), self._page),
            "/drain": Route(("POST",), lambda r: self._pool_action(r, self.drain), admin=True),
            "/resume": Route(("POST",), lambda r: self._pool_action(r, self.resume), admin=True),
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        self._connections: dict[_Connection, None] = {}  # ordered: oldest first

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("ServiceHTTP is not started")
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        family = socket.AF_INET6 if _is_ipv6(self.host) else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self._requested_port))
            listener.listen(1024)
        except OSError as exc:
            listener.close()
            raise OSError(
                exc.errno, f"cannot listen on {self.listen} (metrics.listen): {exc.strerror}"
            ) from exc
        listener.setblocking(False)
        self._port = int(listener.getsockname()[1])
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(_log_loop_error)
        loop.add_reader(listener, self._accept)
        self._loop, self._listener = loop, listener
        self._thread = threading.Thread(target=loop.run_forever, name="agentpool-http", daemon=True)
        self._thread.start()
        log.info("http listening", extra={"url": self.url})

    def stop(self) -> None:
        loop, listener = self._loop, self._listener
        if loop is None or listener is None:
            return

        async def close() -> None:
            loop.remove_reader(listener)
            listener.close()
            for conn in list(self._connections):
                conn.abort()
            tasks = [t for t in asyncio.all_tasks(loop) if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not loop.is_running():
            loop.close()
        self._loop = self._listener = self._thread = None

    # -- connections -------------------------------------------------------------------------

    def _accept(self) -> None:
        """Accept what is waiting, a bounded batch at a time, each admitted before the next."""
        assert self._loop is not None and self._listener is not None
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # Out of descriptors (another part of the daemon holds them): retry a little
                # later instead of spinning on a listener that stays readable.
                log.warning("http: cannot accept a connection: %s", exc.strerror or exc)
                loop, listener = self._loop, self._listener
                loop.remove_reader(listener)
                loop.call_later(0.1, loop.add_reader, listener, self._accept)
                return
            sock.setblocking(False)
            conn = _Connection(sock)
            if self._admit(conn):
                self._loop.create_task(self._serve(conn))

    def _admit(self, conn: _Connection) -> bool:
        """Track ``conn``; over the cap, evict the oldest connection still sending its head.

        Past :data:`MAX_CONNECTIONS`, the victim is the oldest connection whose head has not
        arrived after :data:`GRACE` seconds; when every such one is younger (a burst of
        connections accepted together, a real client among them), up to twice the cap are
        kept, then the oldest is evicted whatever its age. A connection whose head has
        arrived is never evicted: a real client gets its answer. False: ``conn`` is refused.
        """
        count = len(self._connections)
        if count >= MAX_CONNECTIONS:
            now = time.monotonic()
            old = (c for c in self._connections if c.evictable and now - c.since >= GRACE)
            victim = next(old, None)
            if victim is None and count >= 2 * MAX_CONNECTIONS:
                victim = next((c for c in self._connections if c.evictable), None)
                if victim is None:
                    log.warning("http: %d requests in progress: refusing a connection", count)
                    conn.abort()
                    return False
            if victim is not None:
                self._connections.pop(victim, None)
                victim.abort()
        self._connections[conn] = None
        return True

    async def _serve(self, conn: _Connection) -> None:
        loop = asyncio.get_running_loop()
        method = "-"
        writer: asyncio.StreamWriter | None = None
        try:
            transport, protocol = await loop.connect_accepted_socket(
                lambda: asyncio.StreamReaderProtocol(conn.reader), conn.sock
            )
            conn.transport = transport
            if conn.closed:
                return
            writer = asyncio.StreamWriter(transport, protocol, conn.reader, loop)
            try:
                request = await asyncio.wait_for(self._read_head(conn.reader), HEAD_TIMEOUT)
            except TimeoutError:
                return  # a client too slow to send a request head: dropped without an answer
            conn.reading = False
            if request is None:
                return
            if isinstance(request, Response):
                response = request
            else:
                method = request.method
                response = await self._answer(request)
            await self._write(writer, response, head_only=method == "HEAD")
            log.debug("http %s %s %d", method, getattr(request, "path", "-"), response.status.value)
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            pass
        except Exception:
            log.exception("http: serving a connection failed")
        finally:
            self._connections.pop(conn, None)
            conn.abort()

    async def _read_head(self, reader: asyncio.StreamReader) -> Request | Response | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            return Response.text(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large")
        except asyncio.IncompleteReadError:
            return None
        try:
            text = head.decode("latin-1")
            request_line, *header_lines = text[:-4].split("\r\n")
            method, target, version = request_line.split(" ")
        except ValueError:
            return Response.text(HTTPStatus.BAD_REQUEST, "malformed request line")
        if not version.startswith("HTTP/1.") or not method.isalpha() or not target.startswith("/"):
            return Response.text(HTTPStatus.BAD_REQUEST, "malformed request line")
        headers: dict[str, str] = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip() or not name.isascii():
                return Response.text(HTTPStatus.BAD_REQUEST, "malformed header")
            key = name.lower()
            if key in headers and key in ("host", "content-length", "authorization", "transfer-encoding"):
                return Response.text(HTTPStatus.BAD_REQUEST, f"{name} given twice")
            headers[key] = value.strip()
        url = urlsplit(target)
        return Request(method, url.path, parse_qs(url.query, keep_blank_values=True), headers)

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

    async def _write(self, writer: asyncio.StreamWriter, response: Response, head_only: bool) -> None:
        body = redact(response.body.decode("utf-8", "replace")).encode()
        lines = [
            f"HTTP/1.1 {response.status.value} {response.status.phrase}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(body)}",
            "Cache-Control: no-store",
            "Connection: close",
            "Server: agentpool",
            *(f"{name}: {value}" for name, value in response.headers.items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head_only:
            writer.write(body)
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)

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

    def _pool_action(self, request: Request, action: PoolActionFn) -> Response:
        pools = request.query.get("pool", [])
        if len(pools) > 1:
            return Response.json(HTTPStatus.BAD_REQUEST, {"error": "give at most one pool"})
        if pools and not pools[0]:
            return Response.json(
                HTTPStatus.BAD_REQUEST, {"error": "pool= is empty: name a pool or leave pool out"}
            )
        try:
            return Response.json(HTTPStatus.OK, action(pools[0] if pools else None))
        except LookupError as exc:
            return Response.json(HTTPStatus.NOT_FOUND, {"error": str(exc.args[0] if exc.args else exc)})
        except ValueError as exc:
            return Response.json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})


def _log_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio's own errors (e.g. accept() out of descriptors) as one line of the project's log."""
    exc = context.get("exception")
    detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
    log.warning("http: %s%s", context.get("message", "event loop error"), detail)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False
