"""The YAML configuration: its schema, its defaults, and errors that name file, line and key.

A daemon that misreads its config starts agents nobody asked for, so the config is checked
in two stages before anything runs: the schema (types, unknown keys, ranges) by pydantic,
then cross-checks (min_idle ≤ max_agents, unique names, the Jenkins token readable). Every
problem is reported as ``FILE:LINE: key.path: message``, the line taken from the YAML node
of the offending key (or of its parent mapping when the key is missing). Config objects
compare equal when their content is equal, so a reload can tell what changed.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

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

from agentpool.env import expand_env
from agentpool.errors import AgentpoolError
from agentpool.labels import quote_atom

log = logging.getLogger(__name__)

# Docker container names and Jenkins node names both accept this; agent names are built from it.
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_NAME_MAX = 40
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_BYTES_RE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_BYTES_UNIT = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_CAP_RE = re.compile(r"^(CAP_)?[A-Z][A-Z0-9_]*$")
# Set by agentpool on every agent container: a pool's `env` must not override them.
RESERVED_ENV = frozenset(
    {"JENKINS_URL", "JENKINS_AGENT_NAME", "JENKINS_SECRET", "JENKINS_WEB_SOCKET", "JENKINS_AGENT_WORKDIR"}
)
DEFAULT_DOCKER_URL = "unix:///var/run/docker.sock"


class ConfigError(AgentpoolError):
    """The config is invalid; ``errors`` holds one ``FILE:LINE: key.path: message`` per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors

    def __str__(self) -> str:
        return "\n".join(self.errors)


def parse_duration(value: object) -> float:
    """``30s``, ``5m``, ``1h``, ``250ms``, ``1d`` or a number of seconds → seconds (> 0)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 5m, 1h or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNIT[m.group(2)]
    else:
        raise ValueError(f"expected a duration like 30s, 5m, 1h or a number of seconds, got {value!r}")
    if not seconds > 0:
        raise ValueError(f"a duration must be greater than 0, got {value!r}")
    return seconds


def parse_bytes(value: object) -> int:
    """``4g``, ``512m``, ``1024k`` (binary units, as docker reads them) or a number → bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size like 512m or 4g")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _BYTES_RE.match(value)):
        size = int(float(m.group(1)) * _BYTES_UNIT[m.group(2).lower()])
    else:
        raise ValueError(f"expected a size like 512m or 4g, got {value!r}")
    if size <= 0:
        raise ValueError(f"a size must be greater than 0, got {value!r}")
    return size


def _check_name(value: str, what: str) -> str:
    if not _NAME_RE.match(value) or len(value) > _NAME_MAX:
        raise ValueError(
            f"{what} {value!r} must be 1-{_NAME_MAX} lowercase letters, digits or '-', "
            "starting and ending with a letter or digit (it is part of container and node names)"
        )
    return value


Duration = Annotated[float, BeforeValidator(parse_duration)]
Bytes = Annotated[int, BeforeValidator(parse_bytes)]
Count = Annotated[int, Field(ge=0)]


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
    timeout: Duration = 10.0

    @field_validator("url", "agent_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value if value.endswith("/") else value + "/"

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
    tls: Annotated[DockerTLSConfig | None, BeforeValidator(_tls_shorthand)] = None
    cert_path: str | None = None  # a directory with ca.pem, cert.pem, key.pem (DOCKER_CERT_PATH)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value, "docker host name")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        scheme, sep, rest = value.partition("://")
        if not sep or scheme not in ("unix", "tcp", "ssh", "npipe") or not rest:
            raise ValueError(f"expected unix:///path, tcp://host:port or ssh://user@host, got {value!r}")
        return value

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
    labels: list[str] = Field(min_length=1)
    image: str = Field(min_length=1)
    executors: int = Field(default=1, ge=1)
    min_idle: Count = 0
    max_agents: Count = 10
    idle_timeout: Duration = 300.0
    launch_timeout: Duration = 180.0
    one_shot: bool = False
    exclusive: bool = True
    security: Literal["privileged", "capabilities", "sysbox"] = "privileged"
    cap_drop: list[str] = Field(default_factory=list)
    docker_volume: Literal["per-agent", "reuse"] = "per-agent"
    remote_fs: str = "/home/jenkins/agent"
    cpus: float | None = Field(default=None, gt=0)
    memory: Bytes | None = None
    env: dict[str, str] = Field(default_factory=dict)
    image_archive: str | None = None  # a `docker save` tar of `image`, loaded on hosts without it

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value, "pool name")

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: list[str]) -> list[str]:
        for label in value:
            if not label or quote_atom(label) != label:
                raise ValueError(
                    f"{label!r} is not a plain Jenkins label (no spaces, quotes, parentheses or &|!<>=->)"
                )
        if len(set(value)) != len(value):
            raise ValueError("labels are listed twice")
        return value

    @field_validator("cap_drop")
    @classmethod
    def _caps(cls, value: list[str]) -> list[str]:
        for cap in value:
            if not _CAP_RE.match(cap):
                raise ValueError(f"{cap!r} is not a Linux capability name like SYS_ADMIN")
        return value

    @field_validator("remote_fs")
    @classmethod
    def _remote_fs(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"expected an absolute path, got {value!r}")
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, value: object) -> object:
        if not isinstance(value, Mapping):
            return value
        out: dict[object, object] = {}
        for key, item in value.items():
            if isinstance(key, str) and (not key or "=" in key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
            if key in RESERVED_ENV:
                raise ValueError(f"{key} is set by agentpool and cannot be overridden")
            # YAML reads `X: 1` as a number; the environment only knows strings.
            out[key] = str(item).lower() if isinstance(item, bool) else str(item)
        return out

    @property
    def label_set(self) -> frozenset[str]:
        return frozenset(self.labels)


class MetricsConfig(_Model):
    listen: str | None = "127.0.0.1:9464"

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"expected HOST:PORT, got {value!r}")
        return value


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
    poll_interval: Duration = 5.0
    docker_hosts: list[DockerHostConfig] = Field(default_factory=_default_hosts, min_length=1)
    pools: list[PoolConfig] = Field(min_length=1)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)

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


# --- loading ---------------------------------------------------------------------------------

Loc = tuple[str | int, ...]


class _Lines:
    """Line numbers (1-based) of every key and list item of a YAML document, by key path."""

    def __init__(self) -> None:
        self.key_line: dict[Loc, int] = {}  # the line of the key (or list item) itself
        self.node_line: dict[Loc, int] = {}  # the line where the value node starts
        self.duplicates: list[tuple[Loc, int]] = []

    def walk(self, node: yaml.Node, loc: Loc, stack: frozenset[int] = frozenset()) -> None:
        if id(node) in stack:
            return  # a recursive alias
        stack = stack | {id(node)}
        self.node_line[loc] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
                child = (*loc, key)
                if child in self.key_line:
                    self.duplicates.append((child, key_node.start_mark.line + 1))
                self.key_line[child] = key_node.start_mark.line + 1
                self.walk(value_node, child, stack)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self.key_line[(*loc, index)] = item.start_mark.line + 1
                self.walk(item, (*loc, index), stack)

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


def _message(err: Mapping[str, Any], loc: Loc) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    secret = (bool(loc) and loc[-1] == "token") or (len(loc) >= 2 and loc[-2] == "env")
    value = err.get("input")
    if (
        not secret
        and kind not in ("value_error",)
        and isinstance(value, str | int | float | bool)
        and not (isinstance(value, str) and len(value) > 80)
    ):
        msg += f", got {value!r}"
    return msg


_inline_token_warned = False


def load_config_text(text: str, name: str = "<config>") -> Config:
    """Parse and check a config given as text; ``name`` (the file) prefixes every error."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError([f"{name}:{line}: (yaml): {exc.problem or exc}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{name}:1: (yaml): {exc}"]) from None
    if root is None:
        raise ConfigError([f"{name}:1: (top level): the config is empty (jenkins and pools are required)"])
    lines = _Lines()
    lines.walk(root, ())
    data = yaml.constructor.SafeConstructor().construct_document(root)
    if not isinstance(data, dict):
        raise ConfigError([f"{name}:1: (top level): expected a mapping of keys, got {type(data).__name__}"])
    found: list[tuple[int, str]] = [
        (line, f"{name}:{line}: {format_loc(loc)}: key is given twice (YAML keeps only the last)")
        for loc, line in lines.duplicates
    ]

    def err(loc: Loc, message: str) -> None:
        line = lines.line(loc)
        found.append((line, f"{name}:{line}: {format_loc(loc)}: {message}"))

    def errors() -> list[str]:
        return [text for _, text in sorted(found, key=lambda pair: pair[0])]

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
    if found:
        raise ConfigError(errors())
    return config


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
    hosts: dict[str, int] = {}
    for i, host in enumerate(config.docker_hosts):
        if host.name in hosts:
            err(("docker_hosts", i, "name"), f"duplicate docker host name {host.name!r}")
        hosts.setdefault(host.name, i)


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
            path = Path(expand_env(jenkins.token_file))
        except ValueError as exc:
            err(("jenkins", "token_file"), str(exc))
            return config
        if not path.is_absolute() and name not in ("", "<config>"):
            path = Path(name).parent / path
        try:
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            err(("jenkins", "token_file"), f"cannot read token file {str(path)!r}: {reason}")
            return config
        if not token:
            err(("jenkins", "token_file"), f"token file {str(path)!r} is empty")
            return config
    elif jenkins.token_env is not None:
        token = os.environ.get(jenkins.token_env, "").strip()
        if not token:
            err(("jenkins", "token_env"), f"environment variable {jenkins.token_env} is not set or empty")
            return config
    else:
        assert jenkins.token is not None
        token = jenkins.token.get_secret_value()
        if not token:
            err(("jenkins", "token"), "the token is empty")
            return config
        global _inline_token_warned
        if not _inline_token_warned:
            _inline_token_warned = True
            log.warning("%s: jenkins.token is inline in the config; prefer token_file or token_env", name)
    return config.model_copy(update={"jenkins": jenkins.model_copy(update={"token": SecretStr(token)})})


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and check the config file at ``path``; raise :class:`ConfigError` when invalid."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([f"{name}:1: (file): cannot read the config: {reason}"]) from None
    return load_config_text(text, name)
