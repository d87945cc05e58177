"""The status page in a real headless Chromium, served by a running daemon with agents and waiting
builds: what it shows matches ``/status``, it requests nothing from any other origin, nothing on
it scrolls sideways on a phone, and phone-sized and desktop screenshots are kept under
``tmp/artefacts/``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jenkins
import pytest
import requests

from agentpool.engine import Engine
from agentpool.service.layer import ServiceLayer
from agentpool.service.page import duration
from agentpool_testing.jenkins import Controller
from agentpool_testing.jobs import freestyle_xml

from .browser import chromium, chromium_path, layout_at, recording_proxy
from .conftest import REPO, ConfigFactory, drive, free_port

pytestmark = [
    pytest.mark.docker,
    pytest.mark.usefixtures("cleanup"),
    pytest.mark.skipif(
        chromium_path() is None, reason="chromium is not installed (scripts/lib.sh installs it)"
    ),
]

ARTEFACTS = Path(os.environ.get("AGENTPOOL_ARTEFACTS", REPO / "tmp" / "artefacts"))
PHONE_WIDTH = 390


class Rows(HTMLParser):
    """The page's table rows keyed by their ``data-*`` attribute: ``{("agent", name): [cell texts]}``."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[tuple[str, str], list[str]] = {}
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            keys = [(k[5:], v or "") for k, v in attrs if k.startswith("data-")]
            if keys:
                self._row = self.rows.setdefault(keys[0], [])
        elif tag == "td" and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse(dom: str) -> Rows:
    rows = Rows()
    rows.feed(dom)
    return rows


class _Control(BaseHTTPRequestHandler):
    """A page that does load from elsewhere: proves the proxy's record can fail the check."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = b'<html><body><p>control</p><img src="http://198.51.100.7/logo.png"></body></html>'
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_status_page_in_chromium_matches_status_and_loads_nothing_from_elsewhere(
    controller: Controller,
    jenkins_client: jenkins.Jenkins,
    make_config: ConfigFactory,
    instance: str,
    tmp_path: Path,
) -> None:
    port = free_port()
    config = make_config(metrics_listen=f"127.0.0.1:{port}", max_agents=1, idle_timeout="10m")
    service = ServiceLayer(config)
    engine = Engine(config, hooks=service)
    service.start(engine)
    base = f"http://127.0.0.1:{port}"
    try:
        jenkins_client.create_job("hold", freestyle_xml("docker", "sleep 300"))
        jenkins_client.create_job("second", freestyle_xml("docker && linux", "true"))
        jenkins_client.create_job("win", freestyle_xml("windows", "true"))
        for job in ("hold", "second", "win"):
            jenkins_client.build_job(job)

        def settled() -> dict[str, Any] | None:
            status: dict[str, Any] = requests.get(base + "/status", timeout=5).json()
            busy = [a for a in status["agents"] if a["state"] == "busy" and a["build"]]
            whys = {u["task"]: u["why"] for u in status["unserved"]}
            return status if busy and {"second", "win"} <= set(whys) else None

        drive(engine, settled, "one busy agent, one build at the cap, one no pool serves", timeout=150)
        status = requests.get(base + "/status", timeout=5).json()

        with recording_proxy(base) as proxy:
            profile = tmp_path / "chromium"
            profile.mkdir()
            shown = chromium(base + "/", profile, proxy, "--dump-dom")
            assert shown.returncode == 0, shown.stderr[-2000:]
            ARTEFACTS.mkdir(parents=True, exist_ok=True)
            shots = {"phone": "412,915", "desktop": "1280,1000"}
            for name, size in shots.items():
                shot = chromium(
                    base + "/",
                    profile,
                    proxy,
                    f"--screenshot={ARTEFACTS / f'status-page-{name}.png'}",
                    f"--window-size={size}",
                )
                assert shot.returncode == 0, shot.stderr[-2000:]
                png = ARTEFACTS / f"status-page-{name}.png"
                assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
            # On a phone (390 CSS px, mobile emulation) nothing scrolls sideways: not the document,
            # and not the pools table in its overflow box (which would keep the document narrow).
            phone = layout_at(
                base + "/",
                profile,
                proxy,
                PHONE_WIDTH,
                844,
                "({viewport: window.innerWidth, document: document.documentElement.scrollWidth,"
                " pools: document.getElementById('pools-table').scrollWidth,"
                " poolsBox: document.getElementById('pools-table').parentElement.clientWidth})",
                screenshot=ARTEFACTS / f"status-page-phone-{PHONE_WIDTH}.png",
            )
            page_requests = proxy.page_requests()
        # Every request the page made was to the daemon itself (the page, maybe a favicon).
        assert page_requests and all(u.startswith(base + "/") for u in page_requests), page_requests
        assert base + "/" in page_requests

        assert phone["viewport"] == PHONE_WIDTH, phone
        assert phone["document"] <= phone["viewport"], f"the page scrolls sideways on a phone: {phone}"
        assert phone["pools"] <= phone["poolsBox"], f"the pools table scrolls sideways on a phone: {phone}"
        png = ARTEFACTS / f"status-page-phone-{PHONE_WIDTH}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000

        assert '<meta http-equiv="refresh" content="2">' in shown.stdout  # poll_interval 1s: 2 at least
        rows = parse(shown.stdout).rows
        pool = status["pools"]["dind"]
        cells = rows[("pool", "dind")]
        assert cells[2] == f"{pool['agents']} / {pool['max_agents']}" == "1 / 1"
        assert cells[5] == str(pool["states"]["busy"]) == "1"
        assert "at cap" in cells[7]
        assert status["agents"]
        for agent in status["agents"]:
            cells = rows[("agent", agent["name"])]
            assert cells[1:4] == [agent["pool"], agent["host"], agent["state"]]
            assert cells[6].startswith("hold #1"), cells  # the link to the build it runs
        assert status["unserved"]
        for item in status["unserved"]:
            cells = rows[("item", str(item["item"]))]
            assert cells[1] == item["task"] and cells[3] == item["why"]
        whys = {u["task"]: u["why"] for u in status["unserved"]}
        assert "no pool" in whys["win"] and "cap" in whys["second"], whys
        assert {w["label"] for w in status["waiting"]} == {"docker&&linux", "windows"}
        for waiting in status["waiting"]:
            assert rows[("label", waiting["label"])][1:] == [str(waiting["count"]), str(waiting["unserved"])]
        waits = status["queued_to_online"]
        assert waits["count"] == 1
        assert rows[("scope", "all pools")][2] == duration(waits["p50"])
        events = [d["event"] for d in status["decisions"]]
        assert "provisioned" in events and "online" in events
        assert [cells[1] for key, cells in rows.items() if key[0] == "event"] == list(dict.fromkeys(events))
        assert ("host", "local") in rows

        # The metrics the dashboard and alerts read say the same (docs/alerts.yaml: at cap, waiting).
        metrics = requests.get(base + "/metrics", timeout=5).text
        for line in (
            'agentpool_unserved_items{pool="dind",reason="cap"} 1.0',
            'agentpool_unserved_items{pool="",reason="no-pool"} 1.0',
            'agentpool_pool_max_agents{pool="dind"} 1.0',
            'agentpool_agent_lifecycle_seconds_count{phase="launching",pool="dind"} 1.0',
            'agentpool_agent_lifecycle_seconds_count{phase="online-to-first-build",pool="dind"} 1.0',
        ):
            assert line in metrics.splitlines(), line

        # The same sections in the terminal, from the same /status (no TTY here: no colour).
        cli = subprocess.run(
            [sys.executable, "-m", "agentpool", "status", "--config", str(tmp_path / "agentpool.yaml")],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert cli.returncode == 0, cli.stderr
        assert "\033[" not in cli.stdout
        for item in status["unserved"]:
            assert item["why"] in cli.stdout
        for agent in status["agents"]:
            assert agent["name"] in cli.stdout

        # The control: a page that loads an image from another origin is caught by the same check.
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Control)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        control = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            with recording_proxy(control) as proxy:
                chromium(control + "/", profile, proxy, "--dump-dom")
                assert "http://198.51.100.7/logo.png" in proxy.page_requests()
        finally:
            server.shutdown()
            server.server_close()
    finally:
        service.stop()
        engine.close()
    shutil.rmtree(tmp_path / "chromium", ignore_errors=True)
