"""The `agentpool` command: validate, run, once, status, doctor, drain, resume.

Exit codes: 0 success, 1 a failed check or operation, 2 bad usage or an invalid config
(one ``FILE:LINE: key.path: message`` line per error on stderr). Everything the commands
print goes through :func:`say`, which masks the registered secrets as the log does (the
config loader registers the Jenkins token and every secret file it reads).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

from agentpool.config import Config, ConfigError, load_config
from agentpool.daemon import Daemon
from agentpool.engine import Engine
from agentpool.logs import redact, setup_logging
from agentpool.report import Hooks
from agentpool.service.client import DaemonClient, DaemonError, DaemonUnavailable

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

log = logging.getLogger("agentpool.cli")


def say(text: str, err: bool = False) -> None:
    """Print ``text`` (on stderr when ``err``) with every registered secret masked."""
    print(redact(text), file=sys.stderr if err else sys.stdout)


def _load(path: str) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        for line in exc.errors:
            say(line, err=True)
        raise SystemExit(EXIT_USAGE) from None


def _daemon(config: Config) -> DaemonClient | None:
    if not config.metrics.listen:
        return None
    token = config.metrics.admin_token
    return DaemonClient(config.metrics.listen, admin_token=token.get_secret_value() if token else None)


def _ask_daemon(
    config: Config, call: str, pool: str | None = None, host: str | None = None
) -> dict[str, Any] | None:
    """The running daemon's answer to ``call``, or None when no daemon listens on metrics.listen."""
    client = _daemon(config)
    if client is None:
        return None
    try:
        if call == "status":
            return client.status()
        return dict(getattr(client, call)(pool, host) if host is not None else getattr(client, call)(pool))
    except DaemonUnavailable:
        return None
    except DaemonError as exc:
        raise SystemExit(redact(f"the running daemon refused {call}: {exc}")) from None


def cmd_validate(args: argparse.Namespace) -> int:
    config = _load(args.config)
    say(f"{args.config}: valid ({len(config.pools)} pools, {len(config.docker_hosts)} docker hosts)")
    return EXIT_OK


def _engine(config: Config) -> Engine:
    return Engine(config)


def _locked_engine(config: Config, what: str, hooks: Hooks | None = None) -> Engine:
    """An engine that decides for the instance: none while another process does."""
    engine = Engine(config, hooks=hooks)
    holder = engine.state.lock()
    if holder is not None:
        engine.close()
        say(
            f"agentpool {what}: another agentpool process runs for instance {config.instance!r} "
            f"({holder}; lock {engine.state.dir / 'lock'}): two would take each other's agents for "
            "leftovers and remove them. Stop it first, or give this one its own `instance` or "
            "`state_dir`.",
            err=True,
        )
        raise SystemExit(EXIT_FAIL)
    return engine


def cmd_run(args: argparse.Namespace) -> int:
    from agentpool.service.layer import ServiceLayer

    config = _load(args.config)
    service = ServiceLayer(config)
    engine = _locked_engine(config, "run", service)
    return Daemon(args.config, engine, service).run()


def cmd_once(args: argparse.Namespace) -> int:
    config = _load(args.config)
    engine = _locked_engine(config, "once")
    try:
        report = engine.run_pass()
    finally:
        engine.close()
    failed = [o for o in report.outcomes if not o.ok]
    if not report.ok:
        say(f"pass incomplete: {report.error}", err=True)
    return EXIT_FAIL if (failed or not report.ok) else EXIT_OK


def _observed_status(config: Config) -> dict[str, Any]:
    from agentpool.service.overview import overview

    engine = _engine(config)
    try:
        engine.run_pass(execute=False)
        return overview(engine)
    finally:
        engine.close()


def cmd_status(args: argparse.Namespace) -> int:
    from agentpool import statusview

    config = _load(args.config)
    if args.watch is not None and args.watch <= 0:
        say(f"--watch {args.watch:g}: give a number of seconds above 0", err=True)
        return EXIT_USAGE

    def fetch() -> dict[str, Any]:
        status = _ask_daemon(config, "status")
        if status is None:
            status = _observed_status(config)
            status["source"] = "observed now (no daemon running)"
        else:
            status["source"] = "running daemon"
        return status

    if args.json:
        say(json.dumps(fetch(), indent=2))
        return EXIT_OK
    return statusview.show(fetch, args.watch)


def cmd_doctor(args: argparse.Namespace) -> int:
    from agentpool.doctor import exit_code, format_report, load_for_doctor, run_doctor

    try:
        config, token_problem = load_for_doctor(args.config)
    except ConfigError as exc:
        for line in exc.errors:
            say(line, err=True)
        return EXIT_USAGE
    checks = run_doctor(config, token_problem)
    say(format_report(checks))
    return exit_code(checks)


def _wait_for_daemon(config: Config, key: str, values: Collection[str]) -> None:
    """Until the running daemon shows no agent whose ``key`` (pool or host) is in ``values``."""
    while True:
        status = _ask_daemon(config, "status")
        left = [a for a in (status or {}).get("agents", []) if a[key] in values]
        if status is None or not left:
            return
        time.sleep(max(1.0, config.poll_interval))


def _drain_here(engine: Engine, config: Config, remaining: Callable[[], int]) -> None:
    """No daemon runs: pass after pass until ``remaining()`` agents are left, then close."""
    try:
        while True:
            engine.run_pass()
            if remaining() == 0:
                return
            time.sleep(config.poll_interval)
    finally:
        engine.close()


def _drain_host(config: Config, host: str, draining: bool) -> int:
    answer = _ask_daemon(config, "drain" if draining else "resume", None, host)
    if not draining:
        if answer is None:
            engine = _locked_engine(config, "resume")
            engine.set_host_draining(host, False)
            engine.close()
            say(f"resumed docker host {host} (no daemon running: its next start places agents there)")
        else:
            say(f"resumed docker host {host}")
        return EXIT_OK
    if answer is not None:
        say(f"draining docker host {host} (running daemon); waiting for its agents to go")
        _wait_for_daemon(config, "host", {host})
    else:
        engine = _locked_engine(config, "drain")
        engine.set_host_draining(host, True)
        say(f"draining docker host {host} (no daemon running: acting myself)")
        _drain_here(engine, config, lambda: engine.agents_on(host))
    say("drained")
    return EXIT_OK


def _drain(args: argparse.Namespace, draining: bool) -> int:
    config = _load(args.config)
    if args.host is not None:
        if args.pool is not None:
            say("give --pool or --host, not both", err=True)
            return EXIT_USAGE
        if config.host(args.host) is None:
            say(f"no docker host named {args.host!r} in {args.config}", err=True)
            return EXIT_USAGE
        return _drain_host(config, args.host, draining)
    pool = args.pool
    if pool is not None and pool not in {p.name for p in config.pools}:
        say(f"no pool named {pool!r} in {args.config}", err=True)
        return EXIT_USAGE
    answer = _ask_daemon(config, "drain" if draining else "resume", pool)
    if not draining:
        if answer is None:
            engine = _locked_engine(config, "resume")
            pools = engine.set_draining(pool, False)
            engine.close()
            say(f"resumed: {', '.join(pools)} (no daemon running: saved for its next start)")
        else:
            say(f"resumed: {', '.join(answer.get('pools', []))}")
        return EXIT_OK
    if answer is not None:
        pools = answer.get("pools", [])
        say(f"draining {', '.join(pools)} (running daemon); waiting for their agents to go")
        _wait_for_daemon(config, "pool", pools)
    else:
        engine = _locked_engine(config, "drain")
        pools = engine.set_draining(pool, True)
        say(f"draining {', '.join(pools)} (no daemon running: acting myself)")
        _drain_here(engine, config, lambda: engine.agents_of(pools))
    say("drained")
    return EXIT_OK


def cmd_drain(args: argparse.Namespace) -> int:
    return _drain(args, True)


def cmd_resume(args: argparse.Namespace) -> int:
    return _drain(args, False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentpool", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--log-format", choices=["kv", "json"], default="kv")
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, func: Any, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", required=True, help="the YAML config file")
        p.set_defaults(func=func)
        return p

    command("validate", cmd_validate, "check a config file")
    command("run", cmd_run, "run the daemon in the foreground")
    command("once", cmd_once, "one reconcile pass, then exit")
    status = command("status", cmd_status, "pools, waiting builds and why, agents, hosts, decisions")
    status.add_argument("--json", action="store_true")
    status.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=2.0,
        metavar="SECONDS",
        help="redraw every SECONDS (2) until Ctrl-C",
    )
    command("doctor", cmd_doctor, "preflight checks, each with its fix")
    for name, func, text in (
        (
            "drain",
            cmd_drain,
            "stop provisioning for a pool (or a docker host) and reap its agents as they go idle",
        ),
        ("resume", cmd_resume, "undo drain"),
    ):
        p = command(name, func, text)
        p.add_argument("--pool")
        p.add_argument("--host", help="a docker host's name: drain that host instead of a pool")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_format, args.log_level)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # A bug or an unforeseen failure: one line of the log (traceback in its exc field,
        # secrets masked), not a raw traceback.
        log.error("%s failed: %s: %s", args.command, type(exc).__name__, exc, exc_info=exc)
        return EXIT_FAIL


if __name__ == "__main__":
    raise SystemExit(main())
