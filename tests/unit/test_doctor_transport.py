"""doctor's fix per transport, from the words the SDK, requests, ssl and paramiko use."""

from __future__ import annotations

import pytest

from agentpool.doctor_transport import connection_fix

TLS_URL = "tcp://10.0.0.5:2376"
VERIFY = "Caused by SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {}"


class AuthenticationException(Exception):  # paramiko's name, matched by name
    pass


@pytest.mark.parametrize(
    ("url", "tls", "error", "fix"),
    [
        (
            "unix:///var/run/docker.sock",
            False,
            ConnectionError("('Connection aborted.', PermissionError(13, 'Permission denied'))"),
            "group docker",
        ),
        ("unix:///var/run/docker.sock", False, FileNotFoundError(2, "No such file"), "start the engine"),
        (
            TLS_URL,
            True,
            ConnectionError(VERIFY.format("IP address mismatch, certificate is not valid for '10.0.0.5'")),
            "does not name 10.0.0.5",
        ),
        (
            TLS_URL,
            True,
            ConnectionError(VERIFY.format("unable to get local issuer certificate")),
            "not signed by tls.ca",
        ),
        (TLS_URL, True, ConnectionError(VERIFY.format("certificate has expired")), "has expired"),
        (
            TLS_URL,
            True,
            ConnectionError("[SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert bad certificate"),
            "refused agentpool's client certificate",
        ),
        (
            TLS_URL,
            True,
            ConnectionError("[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required"),
            "refused agentpool's client certificate",
        ),
        (TLS_URL, True, OSError("[SSL] PEM lib (_ssl.c:3900)"), "readable by the user agentpool runs as"),
        (
            TLS_URL,
            True,
            ConnectionError("[SSL: WRONG_VERSION_NUMBER] wrong version number"),
            "does not speak TLS",
        ),
        (
            TLS_URL,
            True,
            ConnectionError("[Errno 111] Connection refused"),
            "listens on port 2376 (-H tcp://0.0.0.0:2376 --tlsverify",
        ),
        (
            "tcp://10.0.0.5:2375",
            False,
            Exception("400 Client Error: Client sent an HTTP request to an HTTPS server."),
            "the engine speaks TLS",
        ),
        (
            "ssh://ci@b:2222",
            False,
            Exception("Server '[b]:2222' not found in known_hosts"),
            "ssh-keyscan -p 2222 b",
        ),
        (
            "ssh://ci@b",
            False,
            AuthenticationException("Authentication failed."),
            "let ci log in to b with a key",
        ),
        ("ssh://ci@b", False, ConnectionRefusedError(111, "Connection refused"), "sshd runs on b:22"),
        (
            "ssh://ci@b",
            False,
            ConnectionError("Connection aborted, RemoteDisconnected"),
            "docker system dial-stdio",
        ),
    ],
)
def test_fix_per_transport(url: str, tls: bool, error: BaseException, fix: str) -> None:
    assert fix in connection_fix(url, tls, error)


def test_the_cause_chain_is_read() -> None:
    try:
        try:
            raise PermissionError(13, "Permission denied")
        except PermissionError as inner:
            raise RuntimeError("Error while fetching server API version") from inner
    except RuntimeError as outer:
        assert "group docker" in connection_fix("unix:///run/docker.sock", False, outer)
