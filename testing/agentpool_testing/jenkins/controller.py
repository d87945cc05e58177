"""Run the Jenkins-compatible controller in a background thread, for pytest and the CLI.

Tests drive agentpool against it over real HTTP; this wrapper owns the event loop the
server runs on, hands out its URL, and offers fault switches, request counts and a few
read-only helpers for assertions (which hop onto the loop thread to read a consistent
state).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

from .auth import Account, Permission, permissions_of
from .model import JENKINS_VERSION, Jenkins
from .server import Faults, LocalChannel, Server

T = TypeVar("T")


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (port 0 picks a free one); a clear error for anything else."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--listen must be HOST:PORT, got {listen!r}")
    return host.strip("[]"), int(port)


class Controller:
    """A Jenkins-compatible controller serving from a background thread."""

    def __init__(
        self,
        listen: str = "127.0.0.1:0",
        user: str = "admin",
        token: str = "",
        url: str | None = None,
        *,
        password: str | None = None,
        anonymous_read: bool = False,
        builtin_executors: int = 0,
        builtin_labels: str = "",
        quiet_period: int = 5,
        left_item_ttl: float = 300.0,
        cloud: bool = False,
        version: str = JENKINS_VERSION,
        agent_jar: Path | None = None,
    ) -> None:
        if not token:
            raise ValueError("the controller needs an API token for its user")
        self.host, self.port = parse_listen(listen)
        self._url = url
        self.faults = Faults()
        self._workspace_root = tempfile.mkdtemp(prefix="agentpool-builtin-")
        self.jenkins = Jenkins(
            "",
            user=user,
            builtin_executors=builtin_executors,
            builtin_labels=builtin_labels,
            builtin_channel=LocalChannel() if builtin_executors > 0 else None,
            quiet_period=quiet_period,
            left_item_ttl=left_item_ttl,
            cloud=cloud,
        )
        self.jenkins.builtin.remote_fs = self._workspace_root
        self.server = Server(
            self.jenkins,
            user=user,
            token=token,
            password=password,
            anonymous_read=anonymous_read,
            version=version,
            faults=self.faults,
            agent_jar=agent_jar,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def add_user(
        self,
        name: str,
        token: str,
        permissions: Iterable[Permission | str] = (Permission.READ, Permission.JOB_READ),
        *,
        readable_jobs: Iterable[str] = (),
        password: str | None = None,
    ) -> Account:
        """Add (or replace) a user with an API token and only ``permissions`` (Jenkins titles
        such as ``Agent/Create`` or :class:`Permission` members); Overall/Administer implies all.
        ``readable_jobs``: Job/Read on those jobs alone. Safe while serving."""
        if not name or name == "anonymous":
            raise ValueError(f"a user needs a name other than {name!r}")
        if not token:
            raise ValueError(f"user {name} needs an API token")
        account = Account(name, token, password, permissions_of(permissions), frozenset(readable_jobs))
        self.server.accounts[name] = account
        return account

    @property
    def url(self) -> str:
        """The root URL with a trailing slash (what the controller calls itself)."""
        return self.jenkins.root_url

    @url.setter
    def url(self, value: str) -> None:
        """Change the root URL while serving (e.g. once the port picked for port 0 is known)."""
        self.jenkins.root_url = value if value.endswith("/") else value + "/"

    # --- life cycle ----------------------------------------------------------------

    def start(self) -> Controller:
        if self._thread is not None:
            raise RuntimeError("controller already started")
        self._thread = threading.Thread(target=self._serve, name="jenkins-controller", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            self._thread = None
            shutil.rmtree(self._workspace_root, ignore_errors=True)
            raise RuntimeError(f"controller failed to start: {self._error}") from self._error
        return self

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._startup())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._cleanup())
            loop.close()

    async def _startup(self) -> None:
        wake = asyncio.Event()
        self.jenkins.changed = wake.set
        self.faults._dropper = self._drop_agents
        self._runner = web.AppRunner(self.server.app(), handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]
        shown = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        if ":" in shown:
            shown = f"[{shown}]"
        url = (self._url or "http://{host}:{port}/").format(host=shown, port=self.port)
        self.jenkins.root_url = url if url.endswith("/") else url + "/"
        self._scheduler = asyncio.get_running_loop().create_task(self._schedule(wake))

    async def _schedule(self, wake: asyncio.Event) -> None:
        while True:
            wake.clear()
            try:
                self.jenkins.maintain()
            except Exception:  # the scheduler must survive a bug in one pass
                import logging

                logging.getLogger(__name__).exception("queue maintenance failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), 0.2)

    async def _cleanup(self) -> None:
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(BaseException):
                await self._scheduler
        await self.server.drop_agents()
        await self.jenkins.shutdown()
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        """Close agent sockets, stop serving, and join the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        self._thread = None
        self._loop = None
        shutil.rmtree(self._workspace_root, ignore_errors=True)

    def __enter__(self) -> Controller:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- on the loop thread -----------------------------------------------------------

    def _call(self, fn: Callable[[], T]) -> T:
        loop = self._loop
        if loop is None:
            raise RuntimeError("controller is not running")

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=30)

    def _drop_agents(self) -> None:
        loop = self._loop
        if loop is None:
            raise RuntimeError("controller is not running")
        asyncio.run_coroutine_threadsafe(self.server.drop_agents(), loop).result(timeout=30)

    # --- helpers for tests --------------------------------------------------------------

    @property
    def request_counts(self) -> dict[str, int]:
        """Requests per endpoint pattern, e.g. ``{"GET /queue/api/json": 3}``."""
        with self.server.counts_lock:
            return dict(self.server.counts)

    def reset_counts(self) -> None:
        with self.server.counts_lock:
            self.server.counts.clear()

    def secret(self, node: str) -> str:
        """The agent secret of ``node`` (what ``jenkins-agent.jnlp`` hands out)."""
        return self.jenkins.secret(node)

    def nodes(self) -> list[dict[str, Any]]:
        """Agent nodes (not the built-in one): name, labels, mode, executors, state."""

        def read() -> list[dict[str, Any]]:
            return [
                {
                    "name": c.name,
                    "labels": sorted(c.labels),
                    "mode": c.mode,
                    "num_executors": c.num_executors,
                    "connected": c.connected,
                    "offline": c.offline,
                    "temporarily_offline": c.temp_offline,
                    "busy": c.count_busy(),
                }
                for c in self.jenkins.nodes.values()
            ]

        return self._call(read)

    def queue_items(self) -> list[dict[str, Any]]:
        """Items in the queue, in API order, with their (unexported) label and ``why``."""

        def read() -> list[dict[str, Any]]:
            return [
                {
                    "id": i.id,
                    "state": i.state,
                    "task": i.task.name,
                    "label": None if i.label is None else str(i.label),
                    "why": self.jenkins.why(i),
                }
                for i in self.jenkins.queue_order()
            ]

        return self._call(read)

    def build_result(self, job: str, number: int) -> str | None:
        """``SUCCESS``/``FAILURE``/``ABORTED``, or None while running; KeyError if unknown."""

        def read() -> str | None:
            return self.jenkins.jobs[job].builds[number].result

        return self._call(read)

    def console(self, job: str, number: int) -> str:
        return self._call(lambda: "".join(self.jenkins.jobs[job].builds[number].console))

    def wait_for_build(self, job: str, number: int, timeout: float = 60.0) -> str:
        """Block until build ``number`` of ``job`` exists and finishes; return its result."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(KeyError):
                result = self.build_result(job, number)
                if result is not None:
                    return result
            time.sleep(0.1)
        raise TimeoutError(f"{job} #{number} did not finish within {timeout} s")
