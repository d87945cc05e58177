"""The YAML configuration: its schema, its defaults, and errors that name file, line and key.

A daemon that misreads its config starts agents nobody asked for, so the config is checked
in two stages before anything runs: the schema (types, unknown keys, ranges) by pydantic,
then cross-checks (min_idle ≤ max_agents, unique names, the Jenkins token readable). Every
problem is reported as ``FILE:LINE: key.path: message`` on one line, the line taken from the
YAML node of the offending key (or of its parent mapping when the key is missing), control
characters escaped so that no key or value can forge a second line. Config objects compare
equal when their content is equal, so a reload can tell what changed.

The file may be wrong in any way a typo or a hostile neighbour makes it: reading is bounded
(a regular file, at most :data:`MAX_FILE_BYTES`, nesting at most :data:`MAX_DEPTH`, aliases
at most :data:`MAX_ALIASES` and :data:`MAX_NODES` nodes once expanded), and any failure of
the YAML library becomes a located error, never a traceback.
"""

from __future__ import annotations

import base64
import errno
import ipaddress
import logging
import math
import os
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

from agentpool.capabilities import CAPABILITIES
from agentpool.env import expand_env
from agentpool.errors import AgentpoolError
from agentpool.labels import quote_atom
from agentpool.logs import register_secret

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 1024 * 1024  # the config file
MAX_SECRET_BYTES = 64 * 1024  # a token file, an env_files file
MAX_DEPTH = 32  # nested mappings and lists
MAX_ALIASES = 100  # `*name` references
MAX_NODES = 20_000  # YAML nodes, every alias counted with everything it stands for
MAX_MESSAGE = 300  # characters of a message quoted from the YAML library

# Docker container names and Jenkins node names both accept this; agent names are built from it.
_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
_NAME_MAX = 40
_DURATION_RE = re.compile(r"\s*(\d{1,12}(?:\.\d{0,9})?|\.\d{1,9})\s*(ms|s|m|h|d)?\s*")
_DURATION_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_BYTES_RE = re.compile(r"\s*(\d{1,15}(?:\.\d{0,9})?)\s*([kmgt]?)(i?b)?\s*", re.IGNORECASE)
_BYTES_UNIT = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
# The Docker reference grammar (distribution/reference): [domain/]path[:tag][@digest].
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = (
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?"
)
_IMAGE_RE = re.compile(
    rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
)
_HOSTNAME_RE = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*"
)

# Set by agentpool on every agent container, or read by the agent image's entrypoint
# (images/dind-agent/entrypoint.sh) as a switch: a pool's `env` must not set them. PORT,
# DIND_INSECURE_TCP and DOCKERD_OPTS would serve the inner Docker engine on the network.
RESERVED_ENV = frozenset(
    {
        "PORT",
        "DOCKERD_OPTS",
        "DOCKER_HOST",
        "DOCKER_CONTEXT",
        "DOCKER_CERT_PATH",
        "DOCKER_TLS_VERIFY",
        "AGENT_JAR",
        "REMOTING_OPTS",
    }
)
RESERVED_ENV_PREFIXES = ("JENKINS_", "DIND_", "DOCKER_TLS")
DEFAULT_DOCKER_URL = "unix:///var/run/docker.sock"
DOCKER_URL_SCHEMES = ("unix", "tcp", "ssh")  # plain http:// would skip the TLS rule of tcp://

# Bounds (documented in the README's configuration section).
MIN_MEMORY = 6 * 1024 * 1024  # the Docker engine refuses a smaller memory limit
MAX_MEMORY = 1024**5
MAX_CPUS = 1024.0
MAX_COUNT = 1000


class ConfigError(AgentpoolError):
    """The config is invalid; ``errors`` holds one ``FILE:LINE: key.path: message`` per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors

    def __str__(self) -> str:
        return "\n".join(self.errors)


def escape(text: str) -> str:
    """``text`` with every non-printable character (newline, NUL, ESC, …) as a backslash escape."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    return "".join(out)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_duration(value: object) -> float:
    """``30s``, ``5m``, ``1h``, ``250ms``, ``1d`` or a number of seconds → seconds (> 0)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 5m, 1h or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value) if abs(value) < 1e15 else math.inf
    elif isinstance(value, str) and (m := _DURATION_RE.fullmatch(value)):
        seconds = float(m.group(1)) * _DURATION_UNIT[m.group(2)]
    else:
        raise ValueError(f"expected a duration like 30s, 5m, 1h or a number of seconds, got {_short(value)}")
    if not math.isfinite(seconds):
        raise ValueError(f"a duration must be a finite number, got {_short(value)}")
    if not seconds > 0:
        raise ValueError(f"a duration must be greater than 0, got {_short(value)}")
    return seconds


def parse_bytes(value: object) -> int:
    """``4g``, ``512m``, ``1024k`` (binary units, as docker reads them) or a number → bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size like 512m or 4g")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _BYTES_RE.fullmatch(value)):
        size = int(float(m.group(1)) * _BYTES_UNIT[m.group(2).lower()])
    else:
        raise ValueError(f"expected a size like 512m or 4g, got {_short(value)}")
    if size <= 0:
        raise ValueError(f"a size must be greater than 0, got {_short(value)}")
    return size


def _within(low: float, high: float) -> Callable[[object], float]:
    def check(value: object) -> float:
        seconds = parse_duration(value)
        if not low <= seconds <= high:
            raise ValueError(f"must be between {_human(low)} and {_human(high)}, got {_short(value)}")
        return seconds

    return check


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _check_name(value: str, what: str) -> str:
    if not _NAME_RE.fullmatch(value) or len(value) > _NAME_MAX:
        raise ValueError(
            f"{what} {_short(value)} must be 1-{_NAME_MAX} lowercase letters, digits or '-', "
            "starting and ending with a letter or digit (it is part of container and node names)"
        )
    return value


def _check_text(value: str, what: str, max_len: int = 1024) -> str:
    if not value or not value.isprintable() or len(value) > max_len:
        raise ValueError(f"{what} must be 1-{max_len} printable characters")
    return value


def check_http_url(value: str, key: str) -> str:
    """An ``http(s)://host[:port][/path]`` URL without credentials; a clear error otherwise."""
    if not value.isprintable() or " " in value or len(value) > 2048:
        raise ValueError("expected an http:// or https:// URL without spaces or control characters")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"expected an http:// or https:// URL, got {_short(value)}")
    if "@" in parts.netloc:
        # Never echo it: the part before @ is a password or a token.
        raise ValueError(
            f"credentials in {key} are refused (they would show in logs, status and process lists): "
            "give jenkins.user and the token in jenkins.token_file (or token_env)"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ValueError(f"the port of {_short(value)} is not a number in 0-65535") from None
    if not parts.hostname or not _valid_host(parts.hostname):
        raise ValueError(f"{_short(value)} does not name a valid host")
    if parts.query or parts.fragment:
        raise ValueError(f"expected a URL without ?query or #fragment, got {_short(value)}")
    return value if value.endswith("/") else value + "/"


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return len(host) <= 253 and _HOSTNAME_RE.fullmatch(host) is not None


def check_docker_url(value: str) -> str:
    """``unix:///path``, ``tcp://host:port`` or ``ssh://[user@]host[:port]``."""
    if not value.isprintable() or " " in value or len(value) > 1024:
        raise ValueError("expected a Docker engine URL without spaces or control characters")
    parts = urlsplit(value)
    if parts.scheme not in DOCKER_URL_SCHEMES:
        raise ValueError(
            f"expected a Docker engine URL ({', '.join(s + '://' for s in DOCKER_URL_SCHEMES)}), got {_short(value)}"
        )
    if parts.scheme == "unix":
        if parts.netloc or not parts.path.startswith("/"):
            raise ValueError(f"expected unix:///absolute/path/to/docker.sock, got {_short(value)}")
        return value
    if ":" in parts.netloc.rpartition("@")[0] or (parts.scheme != "ssh" and "@" in parts.netloc):
        raise ValueError("credentials in a Docker engine URL are refused (use TLS certificates or ssh keys)")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ValueError(f"the port of {_short(value)} is not a number in 0-65535") from None
    if not parts.hostname or not _valid_host(parts.hostname):
        raise ValueError(f"{_short(value)} does not name a valid host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"expected a Docker engine URL without a path, got {_short(value)}")
    return value


def check_listen(value: str) -> str:
    """``HOST:PORT`` / ``[v6]:PORT`` with HOST an IP address, ``localhost`` or a host name."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or len(port) > 5 or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT (port 0-65535), got {_short(value)}")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{_short(host)} is not an IPv6 address") from None
        return value
    if not host or not _valid_host(host) or ":" in host:
        raise ValueError(f"expected HOST:PORT with an IP address or host name, got {_short(value)}")
    return value


def _check_env_name(key: object) -> str:
    if not isinstance(key, str) or not _ENV_NAME_RE.fullmatch(key):
        raise ValueError(f"{_short(key)} is not a valid environment variable name (letters, digits, _)")
    if key in RESERVED_ENV or key.startswith(RESERVED_ENV_PREFIXES):
        raise ValueError(
            f"{key} is set by agentpool or read by the agent image's entrypoint as a switch: "
            "it cannot be set in a pool's env"
        )
    return key


def env_value(value: object) -> str:
    """A YAML scalar as an environment string; numbers and booleans converted, the rest refused."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if abs(value) > 10**18:
            raise ValueError("numbers in env must be below 10^18 (quote long values)")
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a finite number (quote it if you mean the text)")
        return repr(value)
    if isinstance(value, str):
        if "\0" in value or len(value) > 32 * 1024:
            raise ValueError("env values must be at most 32 KiB with no NUL character")
        return value
    kind = "null" if value is None else type(value).__name__
    raise ValueError(f"env values must be strings, numbers or booleans, got {kind} (quote it: '...')")


Duration = Annotated[float, BeforeValidator(parse_duration)]
# The bounds: a pass at most twice a second; a request, a launch, an idle agent not forever.
PollInterval = Annotated[float, BeforeValidator(_within(0.5, 3600))]
RequestTimeout = Annotated[float, BeforeValidator(_within(1, 600))]
IdleTimeout = Annotated[float, BeforeValidator(_within(1, 30 * 86400))]
LaunchTimeout = Annotated[float, BeforeValidator(_within(1, 86400))]
StopTimeout = Annotated[float, BeforeValidator(_within(0, 3600))]
Bytes = Annotated[int, BeforeValidator(parse_bytes)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class JenkinsConfig(_Model):
    url: str
    user: str
    token_file: str | None = None
    token_env: str | None = None
    # Inline in the YAML (discouraged); after loading: the resolved token, whatever its source.
    token: SecretStr | None = None
    agent_url: str | None = None
    websocket: bool = True
    timeout: RequestTimeout = 10.0

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_http_url(value, "jenkins.url")

    @field_validator("agent_url")
    @classmethod
    def _agent_url(cls, value: str | None) -> str | None:
        return None if value is None else check_http_url(value, "jenkins.agent_url")

    @field_validator("user")
    @classmethod
    def _user(cls, value: str) -> str:
        return _check_text(value, "jenkins.user", 256)

    @field_validator("token_file")
    @classmethod
    def _token_file(cls, value: str | None) -> str | None:
        return None if value is None else _check_text(value, "jenkins.token_file", 4096)

    @field_validator("token_env")
    @classmethod
    def _token_env(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME_RE.fullmatch(value):
            raise ValueError("expected the name of an environment variable (letters, digits, _)")
        return value

    @property
    def effective_agent_url(self) -> str:
        """The URL agents use to reach Jenkins: ``agent_url``, else ``url``."""
        return self.agent_url or self.url


class DockerTLSConfig(_Model):
    """TLS to a ``tcp://`` engine; ``tls: false`` in the YAML is ``enabled: false`` (plain TCP)."""

    enabled: bool = True
    ca: str | None = None  # verifies the engine's certificate; needed with verify
    cert: str | None = None  # the client certificate and its key: engines with --tlsverify need them
    key: str | None = None
    verify: bool = True

    def files(self) -> dict[str, str]:
        return {k: v for k, v in (("ca", self.ca), ("cert", self.cert), ("key", self.key)) if v is not None}


def _tls_shorthand(value: object) -> object:
    if value is False:
        return {"enabled": False}
    if value is True:
        raise ValueError(
            "give the files (tls: {ca: …, cert: …, key: …}) or cert_path: DIR; tls: false is plain TCP"
        )
    return value


# Docker's DOCKER_CERT_PATH convention: the directory holds these three files.
CERT_PATH_FILES = {"ca": "ca.pem", "cert": "cert.pem", "key": "key.pem"}


class DockerHostConfig(_Model):
    name: str
    url: str
    max_agents: Count = 20
    # launches started at once on this engine (each is node, secret, volume, container)
    max_parallel_launches: int = Field(default=4, ge=1, le=64)
    tls: Annotated[DockerTLSConfig | None, BeforeValidator(_tls_shorthand)] = None
    cert_path: str | None = None  # a directory with ca.pem, cert.pem, key.pem (DOCKER_CERT_PATH)
    # budgets for the agents of pools that set cpus/memory (agents of pools that do not count 0)
    cpus: float | None = Field(default=None, gt=0)
    memory: Bytes | None = None
    tags: list[str] = Field(default_factory=list)  # matched by a pool's `hosts:`

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value, "docker host name")

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        for tag in value:
            _check_name(tag, "host tag")
        return value

    def selected_by(self, selector: Sequence[str]) -> bool:
        """Whether a pool's ``hosts:`` (host names or tags; empty: every host) picks this host."""
        return not selector or self.name in selector or any(t in selector for t in self.tags)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_docker_url(value)

    @property
    def scheme(self) -> str:
        return self.url.partition("://")[0]

    @property
    def effective_tls(self) -> DockerTLSConfig | None:
        """The TLS settings in force (cert_path expanded into files); None: no TLS."""
        if self.cert_path is not None:
            files = {k: str(Path(self.cert_path) / f) for k, f in CERT_PATH_FILES.items()}
            return DockerTLSConfig(ca=files["ca"], cert=files["cert"], key=files["key"])
        if self.tls is None or not self.tls.enabled:
            return None
        return self.tls


class PoolConfig(_Model):
    name: str
    labels: list[str] = Field(min_length=1, max_length=100)
    image: str = Field(min_length=1)
    executors: int = Field(default=1, ge=1, le=100)
    min_idle: Count = 0
    max_agents: Count = 10
    idle_timeout: IdleTimeout = 300.0
    launch_timeout: LaunchTimeout = 180.0
    stop_timeout: StopTimeout = 10.0  # SIGTERM grace of a removed agent's container, then SIGKILL
    one_shot: bool = False
    exclusive: bool = True
    security: Literal["privileged", "capabilities", "sysbox"] = "privileged"
    cap_drop: list[str] = Field(default_factory=list)
    docker_volume: Literal["per-agent", "reuse"] = "per-agent"
    remote_fs: str = "/home/jenkins/agent"
    cpus: float | None = Field(default=None, gt=0, le=MAX_CPUS, allow_inf_nan=False)
    memory: Bytes | None = Field(default=None, ge=MIN_MEMORY, le=MAX_MEMORY)
    env: dict[str, str] = Field(default_factory=dict)
    image_archive: str | None = None  # a `docker save` tar of `image`, loaded on hosts without it
    # NAME: file whose content (without its final newline) becomes the value of NAME: a secret
    # need not be written in the config. Read at load time; merged into `env`.
    env_files: dict[str, str] = Field(default_factory=dict)
    hosts: list[str] = Field(default_factory=list)  # docker host names or tags; empty: any host

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value, "pool name")

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if len(value) > 512 or not _IMAGE_RE.fullmatch(value):
            raise ValueError(f"{_short(value)} is not a Docker image reference like registry/name:tag")
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: list[str]) -> list[str]:
        for label in value:
            if not label or len(label) > 128 or not label.isprintable() or quote_atom(label) != label:
                raise ValueError(
                    f"{_short(label)} is not a plain Jenkins label "
                    "(no spaces, quotes, parentheses, &|!<>=->, control characters; at most 128)"
                )
        if len(set(value)) != len(value):
            raise ValueError("labels are listed twice")
        return value

    @field_validator("cap_drop")
    @classmethod
    def _caps(cls, value: list[str]) -> list[str]:
        for cap in value:
            if cap.upper().removeprefix("CAP_") not in CAPABILITIES:
                raise ValueError(f"{_short(cap)} is not a Linux capability name like SYS_ADMIN")
        return value

    @field_validator("remote_fs")
    @classmethod
    def _remote_fs(cls, value: str) -> str:
        _check_text(value, "remote_fs", 1024)
        if not value.startswith("/") or ":" in value:
            raise ValueError(f"expected an absolute path without ':', got {_short(value)}")
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, value: object) -> object:
        if not isinstance(value, Mapping):
            return value
        return {_check_env_name(key): env_value(item) for key, item in value.items()}

    @field_validator("env_files", mode="before")
    @classmethod
    def _env_files(cls, value: object) -> object:
        if not isinstance(value, Mapping):
            return value
        out: dict[str, object] = {}
        for key, path in value.items():
            if isinstance(path, str):
                _check_text(path, f"the file of {_check_env_name(key)}", 4096)
            out[_check_env_name(key)] = path
        return out

    @property
    def label_set(self) -> frozenset[str]:
        return frozenset(self.labels)


class MetricsConfig(_Model):
    listen: str | None = "127.0.0.1:9464"
    # Host header values accepted besides the listen address itself (a name a proxy uses).
    allowed_hosts: list[str] = Field(default_factory=list, max_length=100)
    # File holding the bearer token POST /drain and /resume require; without one they are refused.
    admin_token_file: str | None = None
    # Resolved from admin_token_file at load time.
    admin_token: SecretStr | None = None

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        return None if value is None else check_listen(value)

    @field_validator("allowed_hosts")
    @classmethod
    def _allowed_hosts(cls, value: list[str]) -> list[str]:
        for host in value:
            name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
            if not _valid_host(name.rsplit(":", 1)[0] if name.count(":") == 1 else name):
                raise ValueError(f"{_short(host)} is not a host name or address")
        return value

    @field_validator("admin_token_file")
    @classmethod
    def _admin_token_file(cls, value: str | None) -> str | None:
        return None if value is None else _check_text(value, "metrics.admin_token_file", 4096)


def _default_hosts() -> list[DockerHostConfig]:
    url = os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_URL
    if not url.startswith("tcp://"):
        return [DockerHostConfig(name="local", url=url, max_agents=20)]
    # As the docker CLI reads them: DOCKER_TLS_VERIFY on → certificates in DOCKER_CERT_PATH.
    if os.environ.get("DOCKER_TLS_VERIFY", "") not in ("", "0"):
        cert_path = os.environ.get("DOCKER_CERT_PATH") or str(Path("~/.docker").expanduser())
        return [DockerHostConfig(name="local", url=url, max_agents=20, cert_path=cert_path)]
    return [DockerHostConfig(name="local", url=url, max_agents=20, tls=DockerTLSConfig(enabled=False))]


class Config(_Model):
    jenkins: JenkinsConfig
    instance: str = "agentpool"
    # Daemon id and drain state (agentpool.state); default $STATE_DIRECTORY or /var/lib/agentpool.
    state_dir: str | None = None
    poll_interval: PollInterval = 5.0
    docker_hosts: list[DockerHostConfig] = Field(default_factory=_default_hosts, min_length=1, max_length=100)
    pools: list[PoolConfig] = Field(min_length=1, max_length=200)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    # A docker host unreachable this long is lost: its agents' disconnected nodes are deleted.
    host_lost_after: Duration = 120.0
    # Bring a pool's image to a host that lacks it (pull, else copy from a host, else image_archive).
    image_transfer: bool = True

    @field_validator("instance")
    @classmethod
    def _instance(cls, value: str) -> str:
        return _check_name(value, "instance name")

    def pool(self, name: str) -> PoolConfig | None:
        for pool in self.pools:
            if pool.name == name:
                return pool
        return None

    def host(self, name: str) -> DockerHostConfig | None:
        for host in self.docker_hosts:
            if host.name == name:
                return host
        return None


# --- reading files ---------------------------------------------------------------------------


class FileRefused(Exception):
    """A file that is not a readable regular file within the size limit; the text says why."""


def read_regular_file(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes.

    Opened non-blocking and checked with fstat before any read, so a FIFO, a device such as
    /dev/zero or a directory is refused at once instead of blocking or filling memory.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise FileRefused(exc.strerror or errno.errorcode.get(exc.errno or 0, "cannot open")) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise FileRefused(kind)
        if info.st_size > limit:
            raise FileRefused(f"larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(65536, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise FileRefused(f"larger than {limit} bytes")
        return b"".join(chunks)
    except OSError as exc:
        raise FileRefused(exc.strerror or "cannot read") from None
    finally:
        os.close(fd)


# --- parsing YAML, bounded -------------------------------------------------------------------


class _Located(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader's composer with limits on depth, aliases and the expanded node count."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0
        self._sizes: dict[int, int] = {}
        self._keep: list[yaml.Node] = []  # ids in _sizes stay unique while the nodes live

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
        line = mark.line + 1
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Located(line, f"more than {MAX_ALIASES} aliases (*name)")
            node = super().compose_node(parent, index)  # type: ignore[arg-type]
            if node is None or id(node) not in self._sizes:
                raise _Located(line, "an alias refers to the node that contains it")
            return node
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Located(line, f"nested deeper than {MAX_DEPTH} levels")
        node = super().compose_node(parent, index)  # type: ignore[arg-type]
        self._depth -= 1
        if node is None:
            return None
        size = 1
        if isinstance(node, yaml.MappingNode):
            size += sum(self._sizes.get(id(k), 1) + self._sizes.get(id(v), 1) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            size += sum(self._sizes.get(id(item), 1) for item in node.value)
        if size > MAX_NODES:
            raise _Located(line, f"more than {MAX_NODES} values once aliases are expanded")
        self._sizes[id(node)] = size
        self._keep.append(node)
        return node


class _Constructor(yaml.constructor.SafeConstructor):
    """SafeConstructor that names the line of the value it could not build."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=True)
        except _Located:
            raise
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark or node.start_mark
            raise _Located(mark.line + 1, _yaml_problem(exc)) from None
        except (ValueError, TypeError, ArithmeticError, LookupError) as exc:
            tag = node.tag.rsplit(":", 1)[-1]
            detail = str(exc)
            # The reason, unless it quotes the value (which may be a token, not yet masked).
            if isinstance(node.value, str) and node.value and node.value[:40] in detail:
                detail = type(exc).__name__
            raise _Located(node.start_mark.line + 1, f"cannot read this {tag} value: {detail}") from None


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    parts = [p for p in (exc.context, exc.problem) if p]
    return "; ".join(parts) or type(exc).__name__


def _compose(text: str) -> yaml.Node | None:
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text)
        return loader.get_single_node()
    except _Located:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise _Located(mark.line + 1 if mark is not None else 1, _yaml_problem(exc)) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, max(exc.position, 0)) + 1
        raise _Located(line, f"character #x{exc.character:04x} is not allowed in YAML") from None
    except yaml.YAMLError as exc:
        raise _Located(1, str(exc)) from None
    finally:
        if loader is not None:
            loader.dispose()


# --- loading ---------------------------------------------------------------------------------

Loc = tuple[str | int, ...]


class _Lines:
    """Line numbers (1-based) of every key and list item of a YAML document, by key path."""

    def __init__(self) -> None:
        self.key_line: dict[Loc, int] = {}  # the line of the key (or list item) itself
        self.node_line: dict[Loc, int] = {}  # the line where the value node starts
        self.duplicates: list[tuple[Loc, int]] = []

    def walk(self, node: yaml.Node, loc: Loc) -> None:
        # The composer bounded depth and expanded size: this walk is bounded too.
        self.node_line[loc] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
                child = (*loc, key)
                if child in self.key_line and key != "<<":
                    self.duplicates.append((child, key_node.start_mark.line + 1))
                self.key_line[child] = key_node.start_mark.line + 1
                self.walk(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self.key_line[(*loc, index)] = item.start_mark.line + 1
                self.walk(item, (*loc, index))

    def line(self, loc: Loc) -> int:
        """The line of ``loc``'s key, else of the nearest enclosing key that exists."""
        for end in range(len(loc), 0, -1):
            prefix = loc[:end]
            if prefix in self.key_line:
                if end == len(loc):
                    return self.key_line[prefix]
                # a missing key: the line where its parent mapping starts
                return self.node_line.get(prefix, self.key_line[prefix])
        return self.node_line.get((), 1)


def format_loc(loc: Loc) -> str:
    """``('pools', 0, 'min_idle')`` → ``pools[0].min_idle``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _data_loc(loc: Sequence[str | int], data: object) -> Loc:
    """Keep the part of a pydantic error location that names keys (drops union/validator tags)."""
    out: list[str | int] = []
    cursor: object = data
    for i, part in enumerate(loc):
        in_mapping = isinstance(cursor, Mapping) and part in cursor
        in_list = isinstance(cursor, list) and isinstance(part, int) and 0 <= part < len(cursor)
        if in_mapping or in_list:
            cursor = cursor[part]  # type: ignore[index]
        elif isinstance(cursor, Mapping) and i == len(loc) - 1 and isinstance(part, str):
            out.append(part)  # a missing key
            break
        else:
            break
        out.append(part)
    return tuple(out)


_SECRET_KEYS = frozenset({"token", "admin_token", "env", "env_files", "url", "agent_url"})


def _message(err: Mapping[str, Any], loc: Loc) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    secret = any(part in _SECRET_KEYS for part in loc if isinstance(part, str))
    value = err.get("input")
    if (
        not secret
        and kind not in ("value_error",)
        and isinstance(value, str | int | float | bool)
        and not (isinstance(value, str) and len(value) > 80)
        and not (isinstance(value, int) and abs(value) > 10**30)
    ):
        msg += f", got {value!r}"
    return msg


_inline_token_warned = False


def _line(name: str, line: int, loc: str, message: str) -> str:
    return f"{escape(name)}:{line}: {escape(loc)}: {escape(message[: MAX_MESSAGE * 2])}"


def load_config_text(text: str, name: str = "<config>") -> Config:
    """Parse and check a config given as text; ``name`` (the file) prefixes every error."""
    try:
        return _load(text, name)
    except _Located as exc:
        raise ConfigError([_line(name, exc.line, "(yaml)", exc.message[:MAX_MESSAGE])]) from None
    except RecursionError:
        raise ConfigError([_line(name, 1, "(yaml)", f"nested too deeply (more than {MAX_DEPTH})")]) from None


def _load(text: str, name: str) -> Config:
    if len(text) > MAX_FILE_BYTES:
        raise _Located(1, f"the config is larger than {MAX_FILE_BYTES} bytes")
    root = _compose(text)
    if root is None:
        raise ConfigError(
            [_line(name, 1, "(top level)", "the config is empty (jenkins and pools are required)")]
        )
    lines = _Lines()
    lines.walk(root, ())
    constructor = _Constructor()
    data = constructor.construct_object(root, deep=True)
    if not isinstance(data, dict):
        kind = "null" if data is None else type(data).__name__
        raise ConfigError([_line(name, 1, "(top level)", f"expected a mapping of keys, got {kind}")])
    found: list[tuple[int, str]] = [
        (line, _line(name, line, format_loc(loc), "key is given twice (YAML keeps only the last)"))
        for loc, line in lines.duplicates
    ]

    def err(loc: Loc, message: str) -> None:
        line = lines.line(loc)
        found.append((line, _line(name, line, format_loc(loc), message)))

    def errors() -> list[str]:
        return [text for _, text in sorted(found, key=lambda pair: pair[0])]

    bad_keys = _non_string_keys(data, ())
    for key in bad_keys:
        err(key, "keys must be strings")
    if bad_keys:
        raise ConfigError(errors())
    _check_envs(data, err)
    if "docker_hosts" not in data and os.environ.get("DOCKER_HOST"):
        try:
            check_docker_url(os.environ["DOCKER_HOST"])
        except ValueError as exc:
            err(("docker_hosts",), f"not given, and the default from DOCKER_HOST is wrong: {exc}")
            raise ConfigError(errors()) from None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        for e in exc.errors():
            loc = _data_loc(e["loc"], data)
            err(loc, _message(e, loc))
        raise ConfigError(errors()) from None
    _cross_check(config, err)
    config = _resolve_docker_tls(config, name, err)
    config = _resolve_token(config, name, err)
    config = _resolve_files(config, name, err)
    if found:
        raise ConfigError(errors())
    return config


def _check_envs(data: dict[str, Any], err: Callable[[Loc, str], None]) -> None:
    """Check every pool's env and env_files entry by entry, so each error names its variable.

    Bad entries are reported and dropped; good values are converted to strings in place.
    """
    pools = data.get("pools")
    if not isinstance(pools, list):
        return
    for i, pool in enumerate(pools):
        if not isinstance(pool, dict):
            continue
        for section in ("env", "env_files"):
            entries = pool.get(section)
            if not isinstance(entries, dict):
                continue
            for key in list(entries):
                try:
                    _check_env_name(key)
                    if section == "env":
                        entries[key] = env_value(entries[key])
                    elif not isinstance(entries[key], str):
                        raise ValueError("expected the path of a file")
                except ValueError as exc:
                    err(("pools", i, section, key), str(exc))
                    del entries[key]


def _non_string_keys(data: object, loc: Loc) -> list[Loc]:
    out: list[Loc] = []
    if isinstance(data, dict):
        for key, value in data.items():
            if not isinstance(key, str):
                out.append((*loc, repr(key)[:40]))
            else:
                out.extend(_non_string_keys(value, (*loc, key)))
    elif isinstance(data, list):
        for index, item in enumerate(data):
            out.extend(_non_string_keys(item, (*loc, index)))
    return out


def _cross_check(config: Config, err: Callable[[Loc, str], None]) -> None:
    seen: dict[str, int] = {}
    for i, pool in enumerate(config.pools):
        if pool.name in seen:
            err(("pools", i, "name"), f"duplicate pool name {pool.name!r} (also pools[{seen[pool.name]}])")
        seen.setdefault(pool.name, i)
        if pool.min_idle > pool.max_agents:
            err(
                ("pools", i, "min_idle"),
                f"min_idle ({pool.min_idle}) is greater than max_agents ({pool.max_agents})",
            )
        if pool.cap_drop and pool.security != "capabilities":
            err(
                ("pools", i, "cap_drop"),
                f"cap_drop applies only with security: capabilities, not {pool.security}",
            )
        for key in sorted(set(pool.env) & set(pool.env_files)):
            err(("pools", i, "env_files", key), f"{key} is also given in env")
    hosts: dict[str, int] = {}
    for i, host in enumerate(config.docker_hosts):
        if host.name in hosts:
            err(("docker_hosts", i, "name"), f"duplicate docker host name {host.name!r}")
        hosts.setdefault(host.name, i)
    for i, pool in enumerate(config.pools):
        for j, wanted in enumerate(pool.hosts):
            if not any(h.selected_by([wanted]) for h in config.docker_hosts):
                err(("pools", i, "hosts", j), f"no docker host is named or tagged {wanted!r}")
        picked = [h for h in config.docker_hosts if h.selected_by(pool.hosts)]
        for key in ("cpus", "memory"):
            need = getattr(pool, key)
            budgets = [getattr(h, key) for h in picked]
            if need is not None and picked and all(b is not None and b < need for b in budgets):
                err(
                    ("pools", i, key),
                    f"{key} ({need}) exceeds the {key} budget of every docker host the pool may use",
                )
    if config.metrics.admin_token is not None:
        err(("metrics", "admin_token"), "unknown key (give admin_token_file)")


def _config_path(value: str, name: str) -> Path:
    path = Path(expand_env(value))
    if not path.is_absolute() and name not in ("", "<config>"):
        path = Path(name).parent / path
    return path


def _read_secret(value: str, name: str, what: str) -> str:
    """The stripped, single-line text of the file ``value`` names; ValueError saying why not."""
    path = _config_path(value, name)
    try:
        text = read_regular_file(path, MAX_SECRET_BYTES).decode("utf-8")
    except FileRefused as exc:
        raise ValueError(f"cannot read {what} {str(path)!r}: {exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{what} {str(path)!r} is not UTF-8 text") from None
    secret = text.strip()
    if not secret:
        raise ValueError(f"{what} {str(path)!r} is empty")
    if not secret.isprintable():
        raise ValueError(f"{what} {str(path)!r} holds more than one line or control characters")
    return secret


def _resolve_docker_tls(config: Config, name: str, err: Callable[[Loc, str], None]) -> Config:
    """TLS settings fit the URL; certificate files and image archives exist (paths made absolute).

    Files are opened to prove they are readable, never read: no key material reaches a message.
    """
    hosts = list(config.docker_hosts)
    for i, host in enumerate(hosts):
        tls, loc = host.tls, ("docker_hosts", i)
        if host.scheme != "tcp":
            for key in ("tls", "cert_path"):
                if getattr(host, key) is not None:
                    err((*loc, key), f"applies only to tcp:// engines, not {host.scheme}://")
            continue
        if tls is not None and host.cert_path is not None:
            err((*loc, "cert_path"), "give either tls or cert_path, not both")
            continue
        if tls is None and host.cert_path is None:
            err(
                (*loc, "url"),
                "a tcp:// engine needs TLS: tls: {ca, cert, key} or cert_path: DIR (ca.pem, cert.pem, "
                "key.pem); tls: false for plain TCP (anyone who reaches the port owns the engine)",
            )
            continue
        if tls is not None and not tls.enabled:
            log.warning(
                "%s: docker host %s: plain TCP without TLS (tls: false): anyone who reaches %s controls "
                "that engine",
                name,
                host.name,
                host.url,
            )
            continue
        if tls is not None:
            if (tls.cert is None) != (tls.key is None):
                err((*loc, "tls", "key" if tls.key is None else "cert"), "give cert and key together")
            if tls.verify and tls.ca is None:
                err((*loc, "tls", "ca"), "verify: true needs the CA certificate (ca: FILE)")
            if not tls.verify:
                log.warning(
                    "%s: docker host %s: tls.verify is false: the engine's certificate is not checked, "
                    "anyone between here and %s can pose as it",
                    name,
                    host.name,
                    host.url,
                )
        resolved: dict[str, str] = {}
        for key, path in (host.effective_tls or DockerTLSConfig()).files().items():
            where: Loc = (*loc, "cert_path") if host.cert_path is not None else (*loc, "tls", key)
            found = _check_file(path, name, where, err, f"TLS {key} file")
            if found is not None:
                resolved[key] = found
        if host.cert_path is not None:
            resolved_dir = Path(resolved.get("ca", host.cert_path)).parent
            hosts[i] = host.model_copy(update={"cert_path": str(resolved_dir)})
        elif tls is not None:
            hosts[i] = host.model_copy(update={"tls": tls.model_copy(update=resolved)})
    pools = list(config.pools)
    for i, pool in enumerate(pools):
        if pool.image_archive is not None:
            found = _check_file(pool.image_archive, name, ("pools", i, "image_archive"), err, "image archive")
            if found is not None:
                pools[i] = pool.model_copy(update={"image_archive": found})
    return config.model_copy(update={"docker_hosts": hosts, "pools": pools})


def _check_file(path: str, name: str, loc: Loc, err: Callable[[Loc, str], None], what: str) -> str | None:
    """``path`` (``${VAR}`` expanded, relative to the config's directory) if a readable regular file."""
    try:
        found = Path(expand_env(path))
    except ValueError as exc:
        err(loc, str(exc))
        return None
    if not found.is_absolute() and name not in ("", "<config>"):
        found = Path(name).parent / found
    found = found.absolute()
    try:
        if not found.is_file():
            reason = "no such file" if not found.exists() else "not a regular file"
            err(loc, f"{what} {str(found)!r}: {reason}")
            return None
        with found.open("rb"):
            pass
    except OSError as exc:
        err(loc, f"{what} {str(found)!r}: {exc.strerror or type(exc).__name__}")
        return None
    return str(found)


def _resolve_token(config: Config, name: str, err: Callable[[Loc, str], None]) -> Config:
    jenkins = config.jenkins
    given = [key for key in ("token_file", "token_env", "token") if getattr(jenkins, key) is not None]
    if len(given) != 1:
        loc: Loc = ("jenkins", given[1]) if len(given) > 1 else ("jenkins", "token_file")
        err(loc, f"give exactly one of token_file, token_env, token (got {len(given) or 'none'})")
        return config
    token: str
    if jenkins.token_file is not None:
        try:
            token = _read_secret(jenkins.token_file, name, "token file")
        except ValueError as exc:
            err(("jenkins", "token_file"), str(exc))
            return config
    elif jenkins.token_env is not None:
        token = os.environ.get(jenkins.token_env, "").strip()
        if not token:
            err(("jenkins", "token_env"), f"environment variable {jenkins.token_env} is not set or empty")
            return config
        if not token.isprintable():
            err(
                ("jenkins", "token_env"), f"environment variable {jenkins.token_env} holds control characters"
            )
            return config
    else:
        assert jenkins.token is not None
        token = jenkins.token.get_secret_value().strip()
        if not token or not token.isprintable():
            err(("jenkins", "token"), "the token is empty or holds control characters")
            return config
        global _inline_token_warned
        if not _inline_token_warned:
            _inline_token_warned = True
            log.warning("%s: jenkins.token is inline in the config; prefer token_file or token_env", name)
    register_secret(token)
    # As python-jenkins sends it (Authorization: Basic), should a debug log ever show a header.
    register_secret(base64.b64encode(f"{jenkins.user}:{token}".encode()).decode())
    return config.model_copy(update={"jenkins": jenkins.model_copy(update={"token": SecretStr(token)})})


def _resolve_files(config: Config, name: str, err: Callable[[Loc, str], None]) -> Config:
    """Read ``metrics.admin_token_file`` and every pool's ``env_files``; mask what they hold."""
    update: dict[str, Any] = {}
    metrics = config.metrics
    if metrics.admin_token_file is not None:
        try:
            admin = _read_secret(metrics.admin_token_file, name, "admin token file")
        except ValueError as exc:
            err(("metrics", "admin_token_file"), str(exc))
        else:
            register_secret(admin)
            update["metrics"] = metrics.model_copy(update={"admin_token": SecretStr(admin)})
    pools = []
    for i, pool in enumerate(config.pools):
        if not pool.env_files:
            pools.append(pool)
            continue
        env = dict(pool.env)
        for key, value in pool.env_files.items():
            try:
                env[key] = _read_secret(value, name, f"the file of {key}")
            except ValueError as exc:
                err(("pools", i, "env_files", key), str(exc))
                continue
            register_secret(env[key])
        pools.append(pool.model_copy(update={"env": env}))
    update["pools"] = pools
    return config.model_copy(update=update)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and check the config file at ``path``; raise :class:`ConfigError` when invalid."""
    name = str(path)
    try:
        data = read_regular_file(path, MAX_FILE_BYTES)
    except FileRefused as exc:
        raise ConfigError([_line(name, 1, "(file)", f"cannot read the config: {exc}")]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError([_line(name, line, "(file)", "the config is not UTF-8 text")]) from None
    return load_config_text(text, name)
