"""What survives a restart: this installation's daemon id and the pools and hosts being drained;
and the run lock, which keeps two processes from deciding for one instance at once.

Everything else agentpool knows is rebuilt from what Jenkins and the backends show. The
daemon id goes into the marker of every node it creates (``agentpool:<instance>:<id>``), so
two daemons left at the same ``instance`` on one controller tell their nodes apart; drain
state must not be lost to a watchdog restart in the middle of maintenance. Files live in
``<state_dir>/<instance>/`` and are written atomically (temporary file, fsync, rename).
When the directory cannot be written, a warning is logged and the daemon goes on: the id
is then derived from the host name and the directory (stable, but not unique if two
daemons share both), and drain state lasts only until the next restart.

Two processes sharing one state directory share the daemon id, so each would take the
other's nodes and containers for leftovers of an earlier run of its own and remove them at
once (a launch in flight included). ``run``, ``once`` and a drain acting without a daemon
therefore hold ``<state_dir>/<instance>/lock`` (``flock``, released by the kernel when the
process ends, even by kill -9) and refuse to start while another process holds it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import secrets
import socket
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger("agentpool")

DEFAULT_STATE_DIR = "/var/lib/agentpool"


def default_state_dir() -> str:
    """systemd's ``StateDirectory=`` (``$STATE_DIRECTORY``), else /var/lib/agentpool."""
    return os.environ.get("STATE_DIRECTORY", "").split(":")[0] or DEFAULT_STATE_DIR


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Drained(NamedTuple):
    pools: frozenset[str]
    hosts: frozenset[str]


def _names(value: object) -> frozenset[str]:
    return frozenset(n for n in value if isinstance(n, str)) if isinstance(value, list) else frozenset()


class State:
    """The state directory of one instance."""

    def __init__(self, state_dir: str, instance: str) -> None:
        self.dir = Path(state_dir) / instance
        self._warned = False
        self._lock_fd: int | None = None

    def lock(self) -> str | None:
        """Hold this instance's run lock until the process ends. None when held (or when the
        directory is unusable: warned, as for the rest of the state); else who holds it."""
        if self._lock_fd is not None:
            return None
        path = self.dir / "lock"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            self._warn("run lock", exc)
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            return f"pid {holder}" if holder.isdigit() else "another process"
        except OSError as exc:  # a file system without locks
            os.close(fd)
            self._warn("run lock", exc)
            return None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        return None

    def _warn(self, what: str, exc: OSError) -> None:
        if not self._warned:
            log.warning(
                "state directory not usable",
                extra={
                    "event": "state directory not usable",
                    "path": str(self.dir),
                    "what": what,
                    "error": f"{type(exc).__name__}: {exc.strerror or exc}",
                },
            )
            self._warned = True

    def daemon_id(self) -> str:
        """This installation's id: created once, then read back on every start."""
        path = self.dir / "daemon-id"
        try:
            text = path.read_text(encoding="utf-8").strip()
            if text:
                return text
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._warn("daemon id", exc)
            return self._derived_id()
        new = secrets.token_hex(4)
        try:
            write_atomically(path, new + "\n")
        except OSError as exc:
            self._warn("daemon id", exc)
            return self._derived_id()
        return new

    def _derived_id(self) -> str:
        seed = f"{socket.gethostname()}\0{self.dir}"
        return "h" + hashlib.sha256(seed.encode()).hexdigest()[:7]

    def drained(self) -> Drained:
        """The pools and docker hosts drained when the daemon last stopped (one read of the file)."""
        try:
            data = json.loads((self.dir / "state.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return Drained(frozenset(), frozenset())
        except (OSError, ValueError) as exc:
            if isinstance(exc, OSError):
                self._warn("drain state", exc)
            else:
                log.warning(
                    "state file unreadable, ignored",
                    extra={"event": "state file unreadable", "path": str(self.dir / "state.json")},
                )
            return Drained(frozenset(), frozenset())
        if not isinstance(data, dict):
            data = {}
        return Drained(_names(data.get("draining")), _names(data.get("draining_hosts")))

    def save_draining(self, pools: Collection[str], hosts: Collection[str] = ()) -> None:
        state: dict[str, list[str]] = {"draining": sorted(pools)}
        if hosts:
            state["draining_hosts"] = sorted(hosts)
        try:
            write_atomically(self.dir / "state.json", json.dumps(state) + "\n")
        except OSError as exc:
            self._warn("drain state", exc)
