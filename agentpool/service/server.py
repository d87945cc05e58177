"""The connection server under :class:`agentpool.service.http.ServiceHTTP`: sockets, not routes.

It exists so that ``ServiceHTTP`` says what the daemon answers (routes, ``Host``, the admin
token) while this module says how a possibly hostile client is served: one asyncio loop in a
daemon thread, where an idle connection costs a few hundred bytes and no thread; at most
:data:`MAX_CONNECTIONS` open (a new one evicts the oldest that has not finished its request
head, so a real client always gets in); the head within :data:`HEAD_TIMEOUT` and
:data:`MAX_HEAD`; the answer taken within :data:`WRITE_TIMEOUT`, redacted on its way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, SupportsIndex
from urllib.parse import parse_qs, urlsplit

from agentpool.logs import redact

log = logging.getLogger("agentpool.service.http")

MAX_CONNECTIONS = 128  # twice this stays far below systemd's default soft limit of 1,024 descriptors
ACCEPT_BATCH = 16  # connections accepted (and admitted) per wake-up of the listener
GRACE = 0.5  # a new connection's time to send its head before it may be evicted
MAX_HEAD = 8 * 1024  # request line and headers
HEAD_TIMEOUT = 5.0  # to receive the request line and headers
WRITE_TIMEOUT = 10.0  # for the client to take the answer
TEXT = "text/plain; charset=utf-8"

AnswerFn = Callable[["Request"], Awaitable["Response"]]


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


class ConnectionServer:
    """Serves ``answer`` on ``host:requested_port`` (0: a free port, see ``.port`` once started).

    ``listen`` is the configured text, named in the error when the port cannot be bound.
    """

    def __init__(self, host: str, requested_port: int, listen: str, answer: AnswerFn) -> None:
        self.host = host
        self.requested_port = requested_port
        self.listen = listen
        self.answer = answer
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        self._connections: dict[_Connection, None] = {}  # ordered: oldest first

    @property
    def started(self) -> bool:
        return self._listener is not None

    @property
    def port(self) -> int:
        return self._port

    def start(self) -> None:
        family = socket.AF_INET6 if _is_ipv6(self.host) else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.requested_port))
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
                response = await self.answer(request)
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


def _log_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio's own errors (e.g. accept() out of descriptors) as one line of the project's log."""
    exc = context.get("exception")
    detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
    log.warning("http: %s%s", context.get("message", "event loop error"), detail)


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False
