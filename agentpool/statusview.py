"""``agentpool status`` in a terminal: the status page's sections as text, coloured on a TTY.

The same dict as ``/status`` and the page (:func:`agentpool.service.overview.overview`), so
what a terminal shows is what a browser shows. Colour only when stdout is a terminal and
``NO_COLOR`` is unset (https://no-color.org); ``--watch`` redraws every few seconds until
Ctrl-C, which ends it with exit 0.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from agentpool.logs import redact
from agentpool.service.page import duration

StatusFn = Callable[[], dict[str, Any]]

RESET = "\033[0m"
STYLES = {
    "head": "\033[1m",
    "muted": "\033[2m",
    "ok": "\033[32m",
    "warn": "\033[33m",
    "bad": "\033[31m",
    "busy": "\033[36m",
}
STATE_STYLE = {"busy": "busy", "online-idle": "ok", "starting": "warn", "draining": "warn"}
CLEAR = "\033[H\033[2J"


def use_colour(stream: TextIO) -> bool:
    return stream.isatty() and not os.environ.get("NO_COLOR")


class _Text:
    def __init__(self, colour: bool) -> None:
        self.colour = colour
        self.lines: list[str] = []

    def paint(self, text: str, style: str) -> str:
        return f"{STYLES[style]}{text}{RESET}" if self.colour and style else text

    def title(self, text: str) -> None:
        if self.lines:
            self.lines.append("")
        self.lines.append(self.paint(text, "head"))

    def table(self, head: list[str], rows: list[list[tuple[str, str]]], empty: str) -> None:
        """Rows of ``(text, style)`` cells; a head starting with ``#`` is right-aligned."""
        if not rows:
            self.lines.append("  " + self.paint(empty, "muted"))
            return
        names = [h.lstrip("#") for h in head]
        widths = [max(len(n), *(len(r[i][0]) for r in rows)) for i, n in enumerate(names)]

        def line(cells: list[tuple[str, str]]) -> str:
            out = []
            for i, (text, style) in enumerate(cells):
                padded = text.rjust(widths[i]) if head[i].startswith("#") else text.ljust(widths[i])
                out.append(self.paint(padded, style))
            return ("  " + "  ".join(out)).rstrip()

        self.lines.append(line([(n, "muted") for n in names]))
        self.lines.extend(line(r) for r in rows)


def _label(label: str | None) -> str:
    return "(label hidden by Jenkins)" if label is None else (label or "(no label)")


def render(status: dict[str, Any], colour: bool = False) -> str:
    t = _Text(colour)
    now = float(status.get("generated") or time.time())
    last = status.get("last_pass")
    t.lines.append(
        t.paint(f"agentpool {status.get('instance')}", "head")
        + t.paint(
            f"  ({status.get('source', 'running daemon')}; last pass "
            f"{duration(now - last) + ' ago' if last else 'not yet'})",
            "muted",
        )
    )
    if status.get("error"):
        t.lines.append(t.paint(f"last pass incomplete: {status['error']}", "bad"))

    t.title("Pools")
    rows = []
    for name, p in (status.get("pools") or {}).items():
        states = p.get("states", {})
        flags: list[tuple[str, str]] = []
        if p.get("draining"):
            flags.append(("draining", "warn"))
        if p.get("backoff_seconds"):
            flags.append(
                (
                    f"backoff {duration(p['backoff_seconds'])} ({p.get('consecutive_failures')} failures)",
                    "bad",
                )
            )
        if p.get("at_cap"):
            flags.append(("at cap", "warn"))
        flag_text = ", ".join(f for f, _ in flags) or "ok"
        flag_style = flags[0][1] if flags else "ok"
        rows.append(
            [
                (name, ""),
                (" ".join(p.get("labels", [])), ""),
                (f"{p.get('agents', 0)}/{p.get('max_agents', '?')}", ""),
                (str(states.get("starting", 0)), ""),
                (str(states.get("online-idle", 0)), ""),
                (str(states.get("busy", 0)), ""),
                (str(states.get("draining", 0)), ""),
                (flag_text, flag_style),
            ]
        )
    t.table(
        ["POOL", "LABELS", "#AGENTS/CAP", "#STARTING", "#IDLE", "#BUSY", "#DRAINING", "STATE"],
        rows,
        "no pools",
    )

    t.title("Waiting builds")
    t.table(
        ["LABEL", "#WAITING", "#NOT SERVED"],
        [
            [
                (_label(w["label"]), ""),
                (str(w["count"]), ""),
                (str(w["unserved"]), "warn" if w["unserved"] else ""),
            ]
            for w in status.get("waiting") or []
        ],
        "no build is waiting",
    )
    unserved = status.get("unserved") or []
    if unserved:
        t.title("Not served, and why")
        t.table(
            ["#ITEM", "TASK", "LABEL", "REASON"],
            [
                [(str(u["item"]), ""), (u["task"], ""), (_label(u["label"]), ""), (u["why"], "warn")]
                for u in unserved
            ],
            "",
        )

    t.title("Queued → online")
    waits = status.get("queued_to_online")
    if not waits:
        t.lines.append("  " + t.paint("known to a running daemon only", "muted"))
    else:
        scopes = [("all pools", waits), *waits.get("pools", {}).items()]
        t.table(
            ["", "#AGENTS", "#P50", "#P95", "#MAX"],
            [
                [
                    (s, ""),
                    (str(w["count"]), ""),
                    (duration(w["p50"]), ""),
                    (duration(w["p95"]), ""),
                    (duration(w["max"]), ""),
                ]
                for s, w in scopes
            ],
            "",
        )
        t.lines.append("  " + t.paint(f"last {duration(waits['window_seconds'])}", "muted"))

    t.title("Agents")
    t.table(
        ["AGENT", "POOL", "HOST", "STATE", "#AGE", "#IDLE", "BUILD"],
        [
            [
                (a["name"], ""),
                (a["pool"], ""),
                (a["host"], ""),
                (a["state"], STATE_STYLE.get(a["state"], "")),
                (duration(a["age"]), ""),
                (duration(a["idle"]), ""),
                (a.get("build") or "-", ""),
            ]
            for a in status.get("agents") or []
        ],
        "no agents",
    )

    t.title("Docker hosts")
    host_rows = []
    for h in status.get("hosts") or []:
        if h.get("reachable") is None:
            engine = ("not read yet", "muted")
        elif h["reachable"]:
            engine = ("reachable", "ok")
        else:
            engine = (f"unreachable: {h.get('error', '')}", "bad")
        host_rows.append([(h["name"], ""), (h["url"], ""), (f"{h['agents']}/{h['max_agents']}", ""), engine])
    t.table(["HOST", "URL", "#AGENTS/CAP", "ENGINE"], host_rows, "no hosts")

    t.title("Last decisions")
    decisions = status.get("decisions") or []
    if not decisions and status.get("queued_to_online") is None:
        t.lines.append("  " + t.paint("known to a running daemon only", "muted"))
    else:
        rows = []
        for d in decisions[:15]:
            where = " ".join(f"{k}={d[k]}" for k in ("agent", "pool", "host", "resource") if d.get(k))
            rows.append(
                [
                    (f"{duration(now - d['time'])} ago", "muted"),
                    (d["event"], "bad" if d.get("error") else ""),
                    (where, ""),
                    (d.get("reason") or "", ""),
                    (d.get("error") or d.get("detail") or "", "bad" if d.get("error") else ""),
                ]
            )
        t.table(["#WHEN", "DECISION", "WHAT", "REASON", "DETAIL"], rows, "none yet")
    return "\n".join(t.lines)


def show(
    status: StatusFn,
    watch: float | None,
    stream: TextIO = sys.stdout,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Print the status once, or (``watch`` seconds) redraw until Ctrl-C; exit code 0 either way."""
    colour = use_colour(stream)
    try:
        while True:
            text = redact(render(status(), colour))
            if watch is None:
                print(text, file=stream)
                return 0
            if stream.isatty():
                stream.write(CLEAR)
            print(text, file=stream)
            print(f"\n(every {watch:g}s; Ctrl-C to stop)", file=stream, flush=True)
            sleep(watch)
    except KeyboardInterrupt:
        print(file=stream)
        return 0
