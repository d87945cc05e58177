"""``python -m agentpool_testing.jenkins``: serve the test controller until interrupted."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from .controller import Controller


def parse_account(spec: str) -> tuple[str, str, list[str]]:
    """``NAME:TOKEN:PERM,PERM`` (``Overall/Read``, ``Agent/Create``, …; empty: none)."""
    name, sep, rest = spec.partition(":")
    token, _, perms = rest.partition(":")
    if not sep or not name or not token:
        fields = len(spec.split(":"))  # never the text itself: it may hold the token
        raise ValueError(f"--account must be NAME:TOKEN:PERMISSION,… (got {fields} field(s))")
    return name, token, [p for p in perms.split(",") if p.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agentpool_testing.jenkins", description="Jenkins-compatible test controller"
    )
    parser.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT to bind (port 0: any free)")
    parser.add_argument("--user", default="admin", help="the one user (default admin)")
    parser.add_argument("--token", required=True, help="that user's API token")
    parser.add_argument(
        "--url", default=None, help="root URL the controller calls itself ({port}: the bound port)"
    )
    parser.add_argument("--builtin-executors", type=int, default=0, help="executors on the built-in node")
    parser.add_argument("--quiet-period", type=int, default=5, help="global quiet period in seconds")
    parser.add_argument(
        "--agent-jar",
        type=Path,
        default=None,
        help="jar served at /jnlpJars/agent.jar (default: the built stub)",
    )
    parser.add_argument(
        "--account",
        action="append",
        default=[],
        metavar="NAME:TOKEN:PERMISSION,…",
        help="another user with only these permissions (e.g. svc:t0k:Overall/Read,Job/Read,Agent/Create)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        controller = Controller(
            args.listen,
            args.user,
            args.token,
            args.url,
            builtin_executors=args.builtin_executors,
            quiet_period=args.quiet_period,
            agent_jar=args.agent_jar,
        )
        for spec in args.account:
            name, token, perms = parse_account(spec)
            controller.add_user(name, token, perms)
        controller.start()
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(controller.url, flush=True)
    stop.wait()
    controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
