"""What fixes an engine doctor cannot reach, by transport: unix socket, TCP with TLS, SSH.

"Cannot connect" has a different fix on each: the docker group for a socket, the CA, the
client certificate or the certificate's names for TLS, keys and known_hosts for SSH. Doctor
names the one that applies, read from the error's own words (the SDK, requests, ssl and
paramiko each say it differently). Pure: tested with the texts those libraries produce.
"""

from __future__ import annotations

import urllib.parse


def _chain_text(exc: BaseException) -> str:
    """Every message and exception type name in the chain, lower case, for matching."""
    parts: list[str] = []
    cursor: BaseException | None = exc
    while cursor is not None and len(parts) < 16:
        parts += [type(cursor).__name__, str(cursor)]
        cursor = cursor.__cause__ or cursor.__context__
    return " ".join(parts).lower()


def connection_fix(url: str, tls: bool, exc: BaseException) -> str:
    """The fix for failing to reach the engine at ``url`` (``tls``: TLS is configured)."""
    text = _chain_text(exc)
    parts = urllib.parse.urlparse(url)
    where = parts.hostname or ""
    if parts.scheme == "unix":
        if "permission denied" in text:
            return (
                f"add the user agentpool runs as to group docker (usermod -aG docker USER, then restart "
                f"agentpool), or run it as root: it may not open {parts.path}"
            )
        return f"start the engine (systemctl start docker), or fix docker_hosts[].url: nothing answers on {parts.path}"
    if parts.scheme == "ssh":
        port = parts.port or 22
        user = parts.username or "the user in the URL"
        if "install paramiko" in text:
            return "install paramiko (pip install paramiko; agentpool's own dependencies include it)"
        if "known_hosts" in text or "not found in known" in text:
            return (
                f"add {where}'s host key to ~/.ssh/known_hosts of the user agentpool runs as "
                f"(ssh-keyscan -p {port} {where} >> ~/.ssh/known_hosts, then check the fingerprint)"
            )
        if "badhostkey" in text or "host key for server" in text:
            return (
                f"{where}'s host key changed: check the machine, then replace its line in ~/.ssh/known_hosts"
            )
        if "authentication" in text or "no authentication methods" in text:
            return (
                f"let {user} log in to {where} with a key of the user agentpool runs as (ssh-copy-id; "
                "~/.ssh/id_*, IdentityFile in ~/.ssh/config, or an ssh-agent)"
            )
        if "refused" in text or "timed out" in text or "no route" in text or "unreachable" in text:
            return f"check that sshd runs on {where}:{port} and that this machine can reach it"
        return (
            f"on {where}, {user} must be able to run `docker system dial-stdio` "
            "(the docker CLI installed, the user in group docker)"
        )
    if tls:
        if "mismatch" in text or "doesn't match" in text or "not valid for" in text:
            return (
                f"the engine's certificate does not name {where}: re-issue it with {where} in its "
                "subjectAltName (IP:… or DNS:…), or use a URL with a name the certificate has"
            )
        if "certificate has expired" in text or "expired" in text:
            return "the engine's certificate (or its CA) has expired: re-issue it"
        if "certificate_verify_failed" in text or "self-signed" in text or "local issuer" in text:
            return (
                "the engine's certificate is not signed by tls.ca: give the CA that issued it (the "
                "engine's --tlscacert), or re-issue the engine's certificate from your CA"
            )
        if (
            "tlsparametererror" in text
            or "pem lib" in text
            or "key_values_mismatch" in text
            or "no such file" in text
            or "permission denied" in text
            or "could not find the tls" in text
            or "invalid ca certificate" in text
        ):
            return (
                "make tls.ca, tls.cert and tls.key (cert_path: ca.pem, cert.pem, key.pem) readable by the "
                "user agentpool runs as; cert and key must be one pair, in PEM"
            )
        if (
            "certificate required" in text
            or "bad certificate" in text
            or "unknown ca" in text
            or "handshake failure" in text
            or "eof occurred in violation" in text
            or "connection reset" in text
        ):
            return (
                "the engine refused agentpool's client certificate: give tls.cert and tls.key issued by the "
                "CA the engine trusts (its --tlscacert)"
            )
        if "wrong version number" in text or "record layer" in text:
            return "the engine does not speak TLS on this port: check the port, or tls: false for plain TCP"
    elif "https server" in text or "400 client error" in text:
        return "the engine speaks TLS: configure docker_hosts[].tls (ca, cert, key) or cert_path"
    listen = "-H tcp://0.0.0.0:2376 --tlsverify --tlscacert … --tlscert … --tlskey …" if tls else "-H tcp://…"
    return f"check that dockerd on {where} listens on port {parts.port} ({listen}) and no firewall blocks it"
