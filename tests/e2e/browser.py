"""Headless Chromium (Debian's ``chromium``) for the status page tests, behind a recording proxy.

Every request the browser makes goes through :class:`RecordingProxy`, loopback included
(``--proxy-bypass-list=<-loopback>`` removes Chromium's implicit bypass): the proxy forwards
those to allowed origins and refuses and records the others, so a test can prove which
origins a page contacted, not just that its HTML looks clean.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

# Chromium's own background traffic (time queries, updates…) is turned off, so that every
# request the proxy sees comes from the page; what cannot be turned off (the component
# updater, the sign-in account list) is sent to a host of ours that no page uses, and
# ``page_requests`` leaves exactly that host out.
OWN = "chromium-own.invalid"
QUIET = [
    "--headless",
    "--no-sandbox",  # tests run as root
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    f"--component-updater=url-source=http://{OWN}/",
    "--disable-sync",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-component-extensions-with-background-pages",
    "--disable-breakpad",
    "--no-pings",
    "--metrics-recording-only",
    "--disable-field-trial-config",
    f"--google-base-url=http://{OWN}/",
    f"--gaia-url=http://{OWN}/",
    "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,MediaRouter,Translate,"
    "AutofillServerCommunication,CertificateTransparencyComponentUpdater,AccountConsistency,"
    "SigninInterception,ChromeSignin",
    "--hide-scrollbars",
]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class _Proxy(ThreadingHTTPServer):
    daemon_threads = True
    allowed: set[str]
    seen: list[str]
    lock: threading.Lock


class _ProxyHandler(BaseHTTPRequestHandler):
    server: _Proxy

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _record(self, what: str) -> None:
        with self.server.lock:
            self.server.seen.append(what)

    def do_CONNECT(self) -> None:
        self._record(f"CONNECT {self.path}")
        self.send_error(502, "refused by the test proxy")

    def do_GET(self) -> None:
        url = self.path
        self._record(url if self.command == "GET" else f"{self.command} {url}")
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self.server.allowed or self.command != "GET":
            self.send_error(502, "refused by the test proxy")
            return
        answer = requests.get(
            url, headers={"User-Agent": self.headers.get("User-Agent", "")}, timeout=10, allow_redirects=False
        )
        body, status, headers = answer.content, answer.status_code, answer.headers
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in ("connection", "transfer-encoding", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_GET


class RecordingProxy:
    """An HTTP proxy on 127.0.0.1 that forwards to ``allowed`` origins and records every URL."""

    def __init__(self, *allowed: str) -> None:
        self.server = _Proxy(("127.0.0.1", 0), _ProxyHandler)
        self.server.allowed = set(allowed)
        self.server.seen = []
        self.server.lock = threading.Lock()
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.1,), daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def seen(self) -> list[str]:
        with self.server.lock:
            return list(self.server.seen)

    def page_requests(self) -> list[str]:
        """What the page asked for: everything but Chromium's own requests, sent to :data:`OWN`."""
        return [u for u in self.seen if urlsplit(u.split()[-1]).hostname != OWN]

    def clear(self) -> None:
        with self.server.lock:
            self.server.seen.clear()

    def start(self) -> RecordingProxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def recording_proxy(*allowed: str) -> Iterator[RecordingProxy]:
    proxy = RecordingProxy(*allowed).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def chromium(
    url: str, profile: Path, proxy: RecordingProxy, *args: str, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium on ``url`` through ``proxy`` with extra ``args`` (e.g. ``--dump-dom``)."""
    binary = chromium_path()
    assert binary is not None, "chromium is not installed (scripts/lib.sh installs it)"
    return subprocess.run(
        [
            binary,
            *QUIET,
            f"--user-data-dir={profile}",
            f"--proxy-server=http://127.0.0.1:{proxy.port}",
            "--proxy-bypass-list=<-loopback>",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=profile,
    )


class DevTools:
    """Chromium's DevTools protocol over ``--remote-debugging-pipe`` (NUL-terminated JSON on fds 3
    and 4): no WebSocket client needed, and evaluation is not subject to the page's CSP."""

    def __init__(self, process: subprocess.Popen[bytes], to_browser: int, from_browser: int) -> None:
        self.process = process
        self.to_browser = to_browser
        self.from_browser = from_browser
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            if not select.select([self.from_browser], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError("Chromium's DevTools pipe said nothing in time")
            chunk = os.read(self.from_browser, 65536)
            if not chunk:
                raise EOFError(f"Chromium closed its DevTools pipe (exit {self.process.poll()})")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        parsed: dict[str, Any] = json.loads(message)
        return parsed

    def call(self, method: str, session: str | None = None, timeout: float = 30, **params: Any) -> Any:
        self.next_id += 1
        request: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session:
            request["sessionId"] = session
        os.write(self.to_browser, json.dumps(request).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            message = self._read(deadline)
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_event(self, method: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for i, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(i)
        while True:
            message = self._read(deadline)
            if message.get("method") == method:
                return message
            self.events.append(message)


@contextmanager
def devtools(profile: Path, proxy: RecordingProxy) -> Iterator[DevTools]:
    """Headless Chromium on ``about:blank`` driven over the DevTools pipe, through ``proxy``."""
    binary = chromium_path()
    assert binary is not None, "chromium is not installed (scripts/lib.sh installs it)"
    to_read, to_browser = os.pipe()  # Chromium reads commands on its fd 3
    from_browser, to_write = os.pipe()  # and writes answers on its fd 4

    def fds() -> None:  # in the child, before it closes all but pass_fds: ours onto 3 and 4
        read, write = fcntl.fcntl(to_read, fcntl.F_DUPFD, 100), fcntl.fcntl(to_write, fcntl.F_DUPFD, 100)
        os.dup2(read, 3)
        os.dup2(write, 4)

    process = subprocess.Popen(
        [
            binary,
            *QUIET,
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            f"--proxy-server=http://127.0.0.1:{proxy.port}",
            "--proxy-bypass-list=<-loopback>",
            "about:blank",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        pass_fds=(3, 4),
        preexec_fn=fds,
        cwd=profile,
    )
    os.close(to_read)
    os.close(to_write)
    try:
        yield DevTools(process, to_browser, from_browser)
    finally:
        os.close(to_browser)
        os.close(from_browser)
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def layout_at(
    url: str,
    profile: Path,
    proxy: RecordingProxy,
    width: int,
    height: int,
    script: str,
    screenshot: Path | None = None,
) -> Any:
    """``script``'s value (a JSON-able expression) on ``url`` laid out on a phone ``width`` x ``height``
    CSS pixels (mobile emulation: the page's viewport meta applies, as on a phone); the whole
    page saved as a PNG at ``screenshot`` when given."""
    with devtools(profile, proxy) as tools:
        targets = tools.call("Target.getTargets")["targetInfos"]
        page = next(t["targetId"] for t in targets if t["type"] == "page")
        session = tools.call("Target.attachToTarget", targetId=page, flatten=True)["sessionId"]
        tools.call(
            "Emulation.setDeviceMetricsOverride",
            session,
            width=width,
            height=height,
            deviceScaleFactor=2,
            mobile=True,
        )
        tools.call("Page.enable", session)
        tools.call("Page.navigate", session, url=url)
        tools.wait_event("Page.loadEventFired")
        result = tools.call("Runtime.evaluate", session, expression=script, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{script}: {result['exceptionDetails']}")
        if screenshot is not None:
            shot = tools.call("Page.captureScreenshot", session, format="png", captureBeyondViewport=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        return result["result"]["value"]
