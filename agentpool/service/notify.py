"""Tell systemd (``Type=notify``) when the daemon is ready, alive, busy with what, and stopping.

With ``Type=notify`` systemd considers the service started only at ``READY=1`` (sent after
the first successful pass), restarts it when ``WATCHDOG=1`` stops arriving within
``WatchdogSec``, shows ``STATUS=`` in ``systemctl status`` and knows a stop is under way at
``STOPPING=1``. Outside systemd (``NOTIFY_SOCKET`` unset) every call does nothing.
``systemctl status`` shows ``STATUS=`` to every local user: messages go through the log's
redaction first.

Why not the ``sdnotify`` package: it handles ``@`` abstract socket names, but it encodes
messages as Latin-1 (a ``STATUS=`` with any other character is dropped), it silences every
failure with a bare ``except`` (including ``KeyboardInterrupt``), and it connects once at
construction. The protocol is one datagram per message to an ``AF_UNIX`` address; the dozen
lines below send UTF-8, address the socket on every send, and log a failure once.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

from agentpool.logs import redact

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages to ``$NOTIFY_SOCKET``; a no-op when it is unset."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._name = address
        # "@name" is a Linux abstract socket: its real address starts with a NUL byte.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._warned = False
        self.watchdog_interval = _watchdog_interval(env)

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    @property
    def watchdog_ping_interval(self) -> float | None:
        """How often to send ``WATCHDOG=1``: half of ``WatchdogSec``, as sd_watchdog_enabled(3) advises."""
        return None if self.watchdog_interval is None else self.watchdog_interval / 2

    def ready(self) -> None:
        self.send("READY=1")

    def watchdog(self) -> None:
        if self.watchdog_interval is not None:
            self.send("WATCHDOG=1")

    def status(self, text: str) -> None:
        self.send("STATUS=" + " ".join(text.split()))

    def reloading(self) -> None:
        self.send("RELOADING=1")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def send(self, message: str) -> bool:
        """Send one message; False when it could not be delivered (logged once, never raised)."""
        if not self._address:
            return False
        message = redact(message)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # A reader that stops reading fills the socket's queue (10 datagrams by default);
                # the daemon's pass must not wait on it: the message is dropped instead.
                sock.setblocking(False)
                sock.sendto(message.encode(), self._address)
        except OSError as exc:
            if not self._warned:
                log.warning("cannot notify systemd at %r: %s", self._name, exc)
                self._warned = True
            return False
        return True


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """``WatchdogSec`` in seconds when systemd expects pings from this process, else None."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1_000_000 if value > 0 else None
