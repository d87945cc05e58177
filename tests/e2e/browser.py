"""Headless Chromium (Debian's ``chromium``) for the status page tests, behind a recording proxy.

Every request the browser makes goes through :class:`RecordingProxy`, loopback included
(``--proxy-bypass-list=<-loopback>`` removes Chromium's implicit bypass): the proxy forwards
those to allowed origins and refuses and records the others, so a test can prove which
origins a page contacted, not just that its HTML looks clean.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
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
