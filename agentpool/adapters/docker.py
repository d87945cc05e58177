"""The Docker adapter: one engine (a "docker host"), reached over the docker SDK.

:class:`DockerHost` is the first implementation of :class:`agentpool.backend.Backend`.

It lists what this agentpool instance owns (by label, never by name alone), creates and
removes agent containers and their ``/var/lib/docker`` volumes, and reads a container's log
tail for the record. Reads use the low-level API in one call per kind (no per-container
inspect), so a pass costs two requests per host whatever the number of agents. "Not found"
on removal counts as done: every call is safe to repeat. Failures leave as
:class:`DockerError`. Its image calls (inspect, save, load, pull) live in
:mod:`agentpool.adapters.docker_images`; the host delegates to them.

Engines are reached over ``unix://``, ``tcp://`` with TLS (the host's CA, client certificate
and key; :func:`docker_client` builds the SDK client for every transport, doctor included) or
``ssh://`` (the SDK's paramiko transport: keys, ``~/.ssh/config`` and ``known_hosts`` of the
user agentpool runs as; unknown host keys are refused).
"""

from __future__ import annotations

import contextlib
import io
import math
import posixpath
import socket
import tarfile
import urllib.parse
from collections.abc import Callable, Generator, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import docker
import docker.errors
import docker.tls
import paramiko
import requests

from agentpool.adapters.docker_images import EngineImages
from agentpool.adapters.docker_images import _split_tag as _split_tag  # re-exported: tests import it here
from agentpool.backend import AgentSpec
from agentpool.errors import DockerError, ErrorKind
from agentpool.model import (
    LABEL_AGENT,
    LABEL_BOOT,
    LABEL_INSTANCE,
    LABEL_POOL,
    Container,
    ContainerState,
    HostView,
    Volume,
)
from agentpool.security import host_config as security_host_config

if TYPE_CHECKING:
    from agentpool.config import DockerHostConfig, DockerTLSConfig

T = TypeVar("T")
DOCKER_DIR = "/var/lib/docker"
SSH_CONNECT_TIMEOUT = 10.0
# The agent's secret reaches the container as this file (mode 0400), not as an environment
# variable that `docker inspect` shows; the entrypoint hands it to the agent as `-secret @FILE`.
SECRET_FILE = "/run/agentpool/jenkins-secret"  # noqa: S105 - a path, not a password


def _parse_time(value: str | int | float | None) -> float:
    if value is None or value == "":
        return 0.0
    if isinstance(value, int | float):
        return float(value)
    text = value.rstrip("Z")
    if "." in text:  # docker prints nanoseconds; datetime takes microseconds
        head, frac = text.split(".", 1)
        digits = "".join(c for c in frac if c.isdigit())
        rest = frac[len(digits) :]
        text = f"{head}.{digits[:6]}{rest}"
    if not value.endswith("Z") and ("+" in text[10:] or "-" in text[10:]):
        return datetime.fromisoformat(text).timestamp()
    return datetime.fromisoformat(text + "+00:00").timestamp()


def tls_config(tls: DockerTLSConfig | None) -> docker.tls.TLSConfig | None:
    """The SDK's TLS settings from the host's (file paths, already checked by the config)."""
    if tls is None:
        return None
    cert = (tls.cert, tls.key) if tls.cert is not None and tls.key is not None else None
    return docker.tls.TLSConfig(client_cert=cert, ca_cert=tls.ca, verify=tls.verify)


def docker_client(url: str, tls: DockerTLSConfig | None = None, timeout: float = 30.0) -> docker.DockerClient:
    """An SDK client for one engine: unix://, tcp:// (with ``tls``, or plain) or ssh://.

    Raises the SDK's, requests' or paramiko's own errors: :meth:`DockerHost._call` and
    doctor turn them into causes with fixes.
    """
    if url.startswith("ssh://"):
        # paramiko connects inside the constructor, with no timeout of its own: an unreachable
        # host would hold the pass for the OS's TCP timeout. Try the TCP connection first.
        target = ssh_target(url, Path("~/.ssh/config").expanduser())
        if target is not None:
            with socket.create_connection(target, timeout=SSH_CONNECT_TIMEOUT):
                pass
        return docker.DockerClient(base_url=url, timeout=int(timeout), use_ssh_client=False)
    if tls is None:
        return docker.DockerClient(base_url=url, tls=False, timeout=int(timeout))
    return _TLSClient(base_url=url, tls=tls_config(tls), timeout=int(timeout))


class _PinnedTLSAPIClient(docker.APIClient):  # type: ignore[misc]
    """Keeps the engine's CA (or ``verify: false``) whatever REQUESTS_CA_BUNDLE says.

    requests lets ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` replace a session's ``verify``
    (psf/requests#3829): a daemon started with them set (common where a proxy re-signs TLS)
    would check the engine against the wrong CAs, or verify where ``verify: false`` says not to.
    Pinned from the first request on (the API version is asked in the constructor).
    """

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        settings["verify"] = self.verify
        return settings


class _TLSClient(docker.DockerClient):  # type: ignore[misc]
    def __init__(self, **kwargs: Any) -> None:
        self.api = _PinnedTLSAPIClient(**kwargs)


def ssh_target(url: str, ssh_config: Path) -> tuple[str, int] | None:
    """Where paramiko will open its TCP connection for ``url``, as the SDK reads ``~/.ssh/config``
    (HostName, Port); None behind a ProxyCommand (no direct connection to try)."""
    parts = urllib.parse.urlparse(url)
    host, port = parts.hostname or "", parts.port
    if ssh_config.is_file():
        conf = paramiko.SSHConfig.from_path(str(ssh_config)).lookup(host)
        if "proxycommand" in conf:
            return None
        host = conf.get("hostname", host)
        if port is None and "port" in conf:
            port = int(conf["port"])
    return host, port or 22


def _connect_reason(exc: BaseException) -> str:
    """The cause in a connection error's words: the TLS alert, "refused", the auth failure."""
    text = (str(exc).strip() or type(exc).__name__).splitlines()[0]
    _, caused, cause = text.partition("(Caused by ")
    if caused:
        text = cause.removesuffix(")")
    return text if len(text) <= 300 else text[:299] + "…"


class DockerHost:
    """One Docker engine agentpool may start agents on (a :class:`agentpool.backend.Backend`)."""

    def __init__(
        self, name: str, url: str, timeout: float = 30.0, tls: DockerTLSConfig | None = None
    ) -> None:
        self.name = name
        self.url = url
        self.tls = tls
        self._timeout = timeout
        self._client: docker.DockerClient | None = None
        self._images = EngineImages(self)

    @classmethod
    def from_config(cls, host: DockerHostConfig, timeout: float = 30.0) -> DockerHost:
        return cls(host.name, host.url, timeout=timeout, tls=host.effective_tls)

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = self._connect(self._timeout)
        return self._client

    def _connect(self, timeout: float) -> docker.DockerClient:
        return self._call("connect", lambda: docker_client(self.url, self.tls, timeout))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except docker.errors.NotFound as exc:
            raise DockerError(ErrorKind.NOT_FOUND, f"{self.name}: {what}: not found") from exc
        except docker.errors.APIError as exc:
            status = exc.status_code or 0
            kind = (
                ErrorKind.CONFLICT
                if status == 409
                else (ErrorKind.SERVER_ERROR if status >= 500 else ErrorKind.BAD_REQUEST)
            )
            explanation = str(exc.explanation or exc)
            raise DockerError(kind, f"{self.name}: {what}: {explanation}") from exc
        except (requests.ConnectionError, docker.errors.DockerException, OSError) as exc:
            raise DockerError(
                ErrorKind.UNREACHABLE,
                f"{self.name}: {what}: engine at {self.url} unreachable: {_connect_reason(exc)}",
            ) from exc
        except requests.Timeout as exc:
            raise DockerError(ErrorKind.TIMEOUT, f"{self.name}: {what}: timed out") from exc
        except Exception as exc:  # paramiko's SSHException family (auth, host key) is no OSError
            if type(exc).__module__.startswith("paramiko"):
                raise DockerError(
                    ErrorKind.UNREACHABLE,
                    f"{self.name}: {what}: engine at {self.url} unreachable: {_connect_reason(exc)}",
                ) from exc
            raise

    # -- reads -----------------------------------------------------------------------------

    def ping(self) -> None:
        self._call("ping", lambda: self.client.ping())

    def observe(self, instance: str) -> HostView:
        """This instance's containers and volumes on the host; unreachable → reachable=False."""
        label = f"{LABEL_INSTANCE}={instance}"
        try:
            raw_containers = self._call(
                "list containers",
                lambda: self.client.api.containers(all=True, filters={"label": label}),
            )
            raw_volumes = self._call(
                "list volumes", lambda: self.client.api.volumes(filters={"label": label})
            )
        except DockerError as exc:
            self.close()
            return HostView(name=self.name, reachable=False, error=str(exc))
        return _host_view(self.name, raw_containers, raw_volumes)

    def logs_tail(self, container: str, lines: int = 20) -> str:
        """The last lines a container printed; "" when it is gone."""
        try:
            raw = self._call(
                f"logs of {container}",
                lambda: self.client.api.logs(container, stdout=True, stderr=True, tail=lines),
            )
        except DockerError:
            return ""
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)

    # -- images (delegated: see agentpool.adapters.docker_images) ---------------------------

    def image_present(self, image: str) -> bool:
        return self._images.present(image)

    def image_id(self, image: str) -> str | None:
        return self._images.id_of(image)

    def image_size(self, image: str) -> int | None:
        return self._images.size_of(image)

    def export_image(self, image: str, chunk_size: int = 1 << 20) -> Generator[bytes, None, None]:
        return self._images.export(image, chunk_size)

    def load_image(self, chunks: Iterable[bytes]) -> list[str]:
        return self._images.load(chunks)

    def pull_image(self, image: str, timeout: float) -> None:
        self._images.pull(image, timeout)

    # -- writes ----------------------------------------------------------------------------

    def create_volume(self, name: str, labels: Mapping[str, str]) -> None:
        self._call(
            f"create volume {name}",
            lambda: self.client.api.create_volume(name=name, driver="local", labels=dict(labels)),
        )

    def remove_volume(self, name: str) -> None:
        """Remove a volume; one already gone counts as removed."""
        try:
            self._call(f"remove volume {name}", lambda: self.client.api.remove_volume(name, force=True))
        except DockerError as exc:
            if exc.kind is not ErrorKind.NOT_FOUND:
                raise

    def agent_volume(self, container: str) -> str | None:
        """The name of the volume mounted at the container's /var/lib/docker, if it still exists."""
        try:
            info = self._call(f"inspect {container}", lambda: self.client.api.inspect_container(container))
        except DockerError as exc:
            if exc.kind is ErrorKind.NOT_FOUND:
                return None
            raise
        for mount in info.get("Mounts") or ():
            if mount.get("Destination") == DOCKER_DIR and mount.get("Name"):
                return str(mount["Name"])
        return None

    def volume_in_use(self, name: str) -> bool:
        found = self._call(
            f"containers using {name}",
            lambda: self.client.api.containers(all=True, filters={"volume": name}),
        )
        return bool(found)

    def start_agent(self, spec: AgentSpec) -> str:
        """Create and start the agent container; return its id. One that fails to start is removed."""
        api = self.client.api
        host_config = security_host_config(
            api,
            spec.security,
            spec.cap_drop,
            binds={spec.volume: {"bind": DOCKER_DIR, "mode": "rw"}},
            nano_cpus=int(spec.cpus * 1e9) if spec.cpus else None,
            mem_limit=spec.memory,
            restart_policy={"Name": "no"},
        )
        env = dict(spec.env)
        secret = env.pop("JENKINS_SECRET", None)
        if secret is not None:
            env["JENKINS_SECRET_FILE"] = SECRET_FILE
        created = self._call(
            f"create container {spec.name}",
            lambda: api.create_container(
                image=spec.image,
                name=spec.name,
                environment=env,
                labels=dict(spec.labels),
                host_config=host_config,
                detach=True,
            ),
        )
        container_id = str(created["Id"])
        try:
            self._secret_and_start(container_id, spec.name, secret)
        except DockerError:
            # Removed by id: the container created just now, never another one of that name.
            with contextlib.suppress(DockerError):
                self.remove_container(container_id, stop_timeout=2)
            raise
        return container_id

    def _secret_and_start(self, container: str, name: str, secret: str | None) -> None:
        api = self.client.api
        if secret is not None:
            archive = _secret_archive(SECRET_FILE, secret)
            self._call(f"copy the secret into {name}", lambda: api.put_archive(container, "/", archive))
        self._call(f"start container {name}", lambda: api.start(container))

    def complete_agent(self, container: str, secret: str) -> None:
        """Start a created agent container whose launch was interrupted (its secret copied again)."""
        self._secret_and_start(container, container, secret)

    def remove_container(self, container: str, stop_timeout: float = 10.0) -> None:
        """Stop (SIGTERM, then SIGKILL after ``stop_timeout``) and remove with anonymous volumes."""
        try:
            self._call(
                f"stop {container}", lambda: self.client.api.stop(container, timeout=math.ceil(stop_timeout))
            )
        except DockerError as exc:
            if exc.kind is ErrorKind.NOT_FOUND:
                return
            raise
        try:
            self._call(
                f"remove {container}", lambda: self.client.api.remove_container(container, v=True, force=True)
            )
        except DockerError as exc:
            if exc.kind is not ErrorKind.NOT_FOUND:
                raise

    def remove_agent(self, agent: str, stop_timeout: float = 10.0, /) -> None:
        """The backend's name for :meth:`remove_container`: the agent's container and anonymous volumes."""
        self.remove_container(agent, stop_timeout)


def _host_view(name: str, raw_containers: Any, raw_volumes: Any) -> HostView:
    """The host's view from the engine's two list answers (containers, then volumes)."""
    containers = []
    mounted: set[str] = set()
    for raw in raw_containers:
        labels = raw.get("Labels") or {}
        docker_volume = ""
        for mount in raw.get("Mounts") or ():
            if mount.get("Type") == "volume" and mount.get("Name"):
                mounted.add(mount["Name"])
                if mount.get("Destination") == DOCKER_DIR:
                    docker_volume = str(mount["Name"])
        names = raw.get("Names") or ["/" + labels.get(LABEL_AGENT, raw["Id"][:12])]
        try:
            state = ContainerState(raw.get("State", "dead"))
        except ValueError:
            state = ContainerState.DEAD
        containers.append(
            Container(
                host=name,
                id=raw["Id"],
                name=names[0].lstrip("/"),
                agent=labels.get(LABEL_AGENT, ""),
                pool=labels.get(LABEL_POOL, ""),
                boot=labels.get(LABEL_BOOT, ""),
                state=state,
                created=float(raw.get("Created", 0)),
                volume=docker_volume,
            )
        )
    volumes = []
    for raw in (raw_volumes or {}).get("Volumes") or ():
        labels = raw.get("Labels") or {}
        created = _parse_time(raw.get("CreatedAt"))
        volumes.append(
            Volume(
                host=name,
                name=raw["Name"],
                pool=labels.get(LABEL_POOL, ""),
                agent=labels.get(LABEL_AGENT, ""),
                free=raw["Name"] not in mounted,
                created=created,
                last_used=created,
                boot=labels.get(LABEL_BOOT, ""),
            )
        )
    return HostView(name=name, reachable=True, containers=tuple(containers), volumes=tuple(volumes))


def _secret_archive(path: str, secret: str) -> bytes:
    """A tar archive holding ``path`` (mode 0400, root) with ``secret``, and its directory (0700)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        directory = tarfile.TarInfo(posixpath.dirname(path).lstrip("/"))
        directory.type, directory.mode = tarfile.DIRTYPE, 0o700
        tar.addfile(directory)
        data = secret.encode()
        info = tarfile.TarInfo(path.lstrip("/"))
        info.size, info.mode = len(data), 0o400
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
