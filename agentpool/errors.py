"""The project's own exceptions, so that callers never depend on a client library's types.

Adapters translate python-jenkins, requests and docker SDK errors into these at the
boundary; messages name the cause and never carry a secret.
"""

from __future__ import annotations


class AgentpoolError(Exception):
    """Base of every error agentpool raises on purpose."""


class ExternalError(AgentpoolError):
    """A call to Jenkins or a Docker engine failed.

    ``system`` is ``"jenkins"`` or ``"docker"``; ``kind`` is a short machine-readable cause
    (``unreachable``, ``timeout``, ``auth``, ``forbidden``, ``not-found``, ``conflict``,
    ``server-error``, ``bad-request``, ``bad-response``) used for metrics and retry decisions.
    """

    def __init__(self, system: str, kind: str, message: str) -> None:
        super().__init__(f"{system} {kind}: {message}")
        self.system = system
        self.kind = kind
        self.message = message


class JenkinsError(ExternalError):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__("jenkins", kind, message)


class DockerError(ExternalError):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__("docker", kind, message)
