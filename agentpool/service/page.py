"""The status page at ``/``: the ``/status`` dict as one HTML page an operator can open anywhere.

When builds wait, the questions are which pool, why, which agents exist and what was decided;
JSON answers them for scripts, this page for people, on a laptop or a phone. It is rendered
server-side from the same dict as ``/status`` (:func:`agentpool.service.overview.overview`),
refreshes itself with a meta refresh (no script at all), and loads nothing: the CSS is inline
and allowed by its hash in a ``Content-Security-Policy`` whose ``default-src 'none'`` forbids
every other request, so the page works offline and cannot leak to another origin. Every value
(node names, labels, reasons, build URLs) comes from Jenkins or the config and is escaped.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import time
from http import HTTPStatus
from importlib import resources
from string import Template
from typing import Any
from urllib.parse import urlsplit

_TEMPLATE_TEXT = resources.files("agentpool.service").joinpath("page.html").read_text(encoding="utf-8")
TEMPLATE = Template(_TEMPLATE_TEXT)


def _style_hash(text: str) -> str:
    match = re.search(r"<style>(.*?)</style>", text, re.DOTALL)
    body = match.group(1) if match else ""
    return "sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()


CSP = (
    f"default-src 'none'; style-src '{_style_hash(_TEMPLATE_TEXT)}'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def duration(seconds: float | None) -> str:
    """``42s``, ``3m 05s``, ``2h 07m``, ``3d 04h``; ``-`` for None."""
    if seconds is None:
        return "-"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def _label(label: str | None) -> str:
    if label is None:
        return '<span class="muted">(label hidden by Jenkins)</span>'
    return e(label) if label else '<span class="muted">(no label)</span>'


def _table(head: list[str], rows: list[str], table_id: str, empty: str) -> str:
    if not rows:
        return f'<p class="muted" id="{table_id}-empty">{e(empty)}</p>'
    cells = "".join(
        f'<th class="n">{e(h[1:])}</th>' if h.startswith("#") else f"<th>{e(h)}</th>" for h in head
    )
    return (
        f'<div class="scroll"><table id="{table_id}"><thead><tr>{cells}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _section(title: str, section_id: str, body: str, wide: bool = False) -> str:
    cls = ' class="wide"' if wide else ""
    return f'<section id="{section_id}"{cls}><h2>{e(title)}</h2>{body}</section>'


OK = '<span class="ok">ok</span>'


def _pools(status: dict[str, Any]) -> str:
    rows = []
    for name, p in status.get("pools", {}).items():
        states = p.get("states", {})
        flags = []
        if p.get("draining"):
            flags.append('<span class="warn">draining</span>')
        if p.get("backoff_seconds"):
            flags.append(
                f'<span class="bad">backoff {e(duration(p["backoff_seconds"]))} '
                f"({e(p.get('consecutive_failures'))} failures)</span>"
            )
        if p.get("at_cap"):
            flags.append('<span class="warn">at cap</span>')
        # data-th: the column's name, shown before the value where the table is stacked (phones).
        rows.append(
            f'<tr data-pool="{e(name)}"><td class="name">{e(name)}</td>'
            f'<td data-field="labels" data-th="labels">{e(" ".join(p.get("labels", [])))}</td>'
            f'<td class="n" data-field="agents" data-th="agents / cap">'
            f"{e(p.get('agents'))} / {e(p.get('max_agents'))}</td>"
            f'<td class="n" data-field="starting" data-th="starting">{e(states.get("starting", 0))}</td>'
            f'<td class="n" data-field="online-idle" data-th="idle">{e(states.get("online-idle", 0))}</td>'
            f'<td class="n" data-field="busy" data-th="busy">{e(states.get("busy", 0))}</td>'
            f'<td class="n" data-field="draining" data-th="draining">{e(states.get("draining", 0))}</td>'
            f'<td data-field="flags">{" ".join(flags) or OK}</td></tr>'
        )
    head = ["pool", "labels", "#agents / cap", "#starting", "#idle", "#busy", "#draining", "state"]
    return _section("Pools", "pools", _table(head, rows, "pools-table", "no pools configured"), wide=True)


def _waiting(status: dict[str, Any]) -> str:
    rows = [
        f'<tr data-label="{e(w["label"])}"><td>{_label(w["label"])}</td>'
        f'<td class="n">{e(w["count"])}</td><td class="n">{e(w["unserved"])}</td></tr>'
        for w in status.get("waiting", [])
    ]
    body = _table(["label", "#waiting", "#not served"], rows, "waiting-table", "no build is waiting")
    unserved = [
        f'<tr data-item="{e(u["item"])}"><td class="n">{e(u["item"])}</td><td class="name">{e(u["task"])}</td>'
        f'<td>{_label(u["label"])}</td><td class="why">{e(u["why"])}</td></tr>'
        for u in status.get("unserved", [])
    ]
    if unserved:
        body += "<h2>Not served, and why</h2>" + _table(
            ["#item", "task", "label", "reason"], unserved, "unserved-table", ""
        )
    return _section("Waiting builds", "waiting", body)


def _build_link(url: str | None) -> str:
    if not url:
        return '<span class="muted">-</span>'
    if urlsplit(url).scheme not in ("http", "https"):
        return e(url)
    text = url.rstrip("/").rsplit("/job/", 1)[-1].replace("/", " #", 1)
    return f'<a href="{e(url)}" rel="noreferrer">{e(text)}</a>'


def _agents(status: dict[str, Any]) -> str:
    rows = [
        f'<tr data-agent="{e(a["name"])}"><td class="name">{e(a["name"])}</td><td>{e(a["pool"])}</td>'
        f'<td>{e(a["host"])}</td><td class="state state-{e(a["state"])}">{e(a["state"])}</td>'
        f'<td class="n">{e(duration(a["age"]))}</td><td class="n">{e(duration(a["idle"]))}</td>'
        f"<td>{_build_link(a.get('build'))}</td></tr>"
        for a in status.get("agents", [])
    ]
    head = ["agent", "pool", "host", "state", "#age", "#idle", "build"]
    return _section("Agents", "agents", _table(head, rows, "agents-table", "no agents"), wide=True)


def _hosts(status: dict[str, Any]) -> str:
    rows = []
    for h in status.get("hosts", []):
        if h.get("reachable") is None:
            state = '<span class="muted">not read yet</span>'
        elif h["reachable"]:
            state = '<span class="ok">reachable</span>'
        else:
            state = f'<span class="bad">unreachable: {e(h.get("error"))}</span>'
        rows.append(
            f'<tr data-host="{e(h["name"])}"><td>{e(h["name"])}</td><td class="name">{e(h["url"])}</td>'
            f'<td class="n">{e(h["agents"])} / {e(h["max_agents"])}</td><td>{state}</td></tr>'
        )
    return _section(
        "Docker hosts",
        "hosts",
        _table(["host", "url", "#agents / cap", "engine"], rows, "hosts-table", "no hosts"),
    )


def _waits(status: dict[str, Any]) -> str:
    waits = status.get("queued_to_online")
    if not waits:
        body = '<p class="muted">known to a running daemon only</p>'
    else:
        rows = [
            f'<tr data-scope="{e(scope)}"><td>{e(scope)}</td><td class="n">{e(w["count"])}</td>'
            f'<td class="n">{e(duration(w["p50"]))}</td><td class="n">{e(duration(w["p95"]))}</td>'
            f'<td class="n">{e(duration(w["max"]))}</td></tr>'
            for scope, w in [("all pools", waits), *waits.get("pools", {}).items()]
        ]
        body = _table(["", "#agents", "#p50", "#p95", "#max"], rows, "waits-table", "")
        body += f'<p class="muted">queued → online, last {e(duration(waits["window_seconds"]))}</p>'
    return _section("Queued → online", "waits", body)


def _decisions(status: dict[str, Any], now: float) -> str:
    rows = []
    for d in status.get("decisions", []):
        where = " ".join(
            f"{k}={d[k]}" for k in ("agent", "pool", "host", "resource") if d.get(k) not in (None, "")
        )
        text = d.get("error") or d.get("detail") or ""
        cls = "bad" if d.get("error") else ""
        rows.append(
            f'<tr data-event="{e(d["event"])}"><td class="n">{e(duration(now - d["time"]))} ago</td>'
            f'<td>{e(d["event"])}</td><td class="name">{e(where)}</td><td>{e(d.get("reason"))}</td>'
            f'<td class="{cls}">{e(text)}</td></tr>'
        )
    if status.get("queued_to_online") is None and not rows:
        body = '<p class="muted">known to a running daemon only</p>'
    else:
        body = _table(["#when", "decision", "what", "reason", "detail"], rows, "decisions-table", "none yet")
    return _section("Last decisions", "decisions", body, wide=True)


def render(status: dict[str, Any]) -> str:
    now = float(status.get("generated") or time.time())
    last = status.get("last_pass")
    summary = f"{status.get('source', 'running daemon')}; last pass {duration(now - last) + ' ago' if last else 'not yet'}"
    refresh = max(2, min(60, round(float(status.get("poll_interval") or 5))))
    error = status.get("error")
    banner = f'<p class="banner" id="error">last pass incomplete: {e(error)}</p>' if error else ""
    sections = "\n".join(
        [
            _pools(status),
            _waiting(status),
            _waits(status),
            _agents(status),
            _hosts(status),
            _decisions(status, now),
        ]
    )
    return TEMPLATE.substitute(
        refresh=refresh,
        instance=e(status.get("instance")),
        summary=e(summary),
        banner=banner,
        sections=sections,
    )


def response(status: dict[str, Any]) -> tuple[HTTPStatus, bytes, str, dict[str, str]]:
    """The arguments of the HTTP handler's ``_send`` for ``GET /``."""
    return HTTPStatus.OK, render(status).encode(), "text/html; charset=utf-8", HEADERS
