"""The project's own exceptions, so that callers never depend on a client library's types.

Every error agentpool raises on purpose derives from :class:`AgentpoolError`. Adapters
translate python-jenkins, requests and docker SDK errors into :class:`ExternalError` at the
boundary, with the system and the kind of failure as enums (never strings compared by
hand); messages name the cause and never carry a secret.
"""

from __future__ import annotations

from enum import StrEnum


class System(StrEnum):
    """The external system a call went to; also the metrics' ``system`` label."""

    JENKINS = "jenkins"
    DOCKER = "docker"


class ErrorKind(StrEnum):
    """Why a call failed; also the metrics' ``kind`` label and what retry decisions read."""

    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    AUTH = "auth"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not-found"
    CONFLICT = "conflict"
    SERVER_ERROR = "server-error"
    BAD_REQUEST = "bad-request"
    BAD_RESPONSE = "bad-response"
    OTHER = "error"  # an HTTP status no other kind names
    # not a remote failure: an exception agentpool did not expect while performing an action
    UNEXPECTED = "unexpected"


class AgentpoolError(Exception):
    """Base of every error agentpool raises on purpose."""


class ExternalError(AgentpoolError):
    """A call to Jenkins or a Docker engine failed."""

    def __init__(self, system: System, kind: ErrorKind, message: str) -> None:
        super().__init__(f"{system} {kind}: {message}")
        self.system = system
        self.kind = kind
        self.message = message


class JenkinsError(ExternalError):
    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(System.JENKINS, kind, message)


class DockerError(ExternalError):
    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(System.DOCKER, kind, message)
