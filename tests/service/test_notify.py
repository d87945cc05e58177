"""sd_notify messages arrive on a real AF_UNIX datagram socket, in order."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentpool.service.notify import Notifier


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield sock, path
    sock.close()


def _received(sock: socket.socket, count: int) -> list[str]:
    return [sock.recv(4096).decode() for _ in range(count)]


def test_messages_arrive_in_order(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"})
    assert notifier.enabled
    notifier.ready()
    notifier.watchdog()
    notifier.status("agents: 1 busy, 2 idle, 0 starting\nwaiting: 3 → ok")
    notifier.stopping()
    assert _received(sock, 4) == [
        "READY=1",
        "WATCHDOG=1",
        "STATUS=agents: 1 busy, 2 idle, 0 starting waiting: 3 → ok",
        "STOPPING=1",
    ]


def test_abstract_socket_name(receiver: tuple[socket.socket, str]) -> None:
    name = f"agentpool-test-{secrets.token_hex(4)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(4096) == b"READY=1"


def test_watchdog_interval_from_environment() -> None:
    notifier = Notifier({"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "180000000"})
    assert notifier.watchdog_interval == 180.0
    assert notifier.watchdog_ping_interval == 90.0
    other = Notifier({"WATCHDOG_USEC": "180000000", "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.watchdog_interval is None
    assert Notifier({"WATCHDOG_USEC": "x"}).watchdog_interval is None


def test_no_watchdog_ping_without_watchdog(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    notifier = Notifier({"NOTIFY_SOCKET": path})
    notifier.watchdog()
    notifier.stopping()
    assert _received(sock, 1) == ["STOPPING=1"]


def test_noop_without_notify_socket() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.send("READY=1") is False
    notifier.ready()
    notifier.watchdog()
    notifier.status("x")
    notifier.stopping()


def test_unreachable_socket_is_reported_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert notifier.send("READY=1") is False
    assert notifier.send("WATCHDOG=1") is False
    assert len([r for r in caplog.records if "cannot notify systemd" in r.getMessage()]) == 1


def test_a_reader_that_stops_reading_does_not_block_the_daemon(tmp_path: Path) -> None:
    import time

    path = tmp_path / "full.sock"
    reader = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    reader.bind(str(path))
    try:
        notifier = Notifier({"NOTIFY_SOCKET": str(path)})
        started = time.monotonic()
        for i in range(40):  # far more than the queue holds
            notifier.status(f"pass {i}")
        assert time.monotonic() - started < 5
        assert reader.recv(100) == b"STATUS=pass 0"
    finally:
        reader.close()


def test_status_masks_registered_secrets(receiver: tuple[socket.socket, str]) -> None:
    from agentpool.logs import register_secret

    sock, path = receiver
    token = secrets.token_hex(12)
    register_secret(token)
    Notifier({"NOTIFY_SOCKET": path}).status(f"last error: GET http://jenkins/?t={token} failed")
    assert _received(sock, 1) == ["STATUS=last error: GET http://jenkins/?t=*** failed"]
