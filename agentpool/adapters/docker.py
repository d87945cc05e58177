"""The Docker adapter: one engine (a "docker host"), reached over the docker SDK.

It lists what this agentpool instance owns (by label, never by name alone), creates and
removes agent containers and their ``/var/lib/docker`` volumes, and reads a container's log
tail for the record. Reads use the low-level API in one call per kind (no per-container
inspect), so a pass costs two requests per host whatever the number of agents. "Not found"
on removal counts as done: every call is safe to repeat. Failures leave as
:class:`DockerError`.
"""

from __future__ import annotations

import contextlib
import io
import posixpath
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import docker
import docker.errors
import requests

from agentpool.errors import DockerError
from agentpool.model import (
    LABEL_AGENT,
    LABEL_INSTANCE,
    LABEL_POOL,
    Container,
    ContainerState,
    HostView,
    Volume,
)

T = TypeVar("T")
DOCKER_DIR = "/var/lib/docker"
# The agent's secret reaches the container as this file (mode 0400), not as an environment
# variable that `docker inspect` shows; the entrypoint hands it to the agent as `-secret @FILE`.
SECRET_FILE = "/run/agentpool/jenkins-secret"  # noqa: S105 - a path, not a password


@dataclass(frozen=True)
class AgentSpec:
    """Everything needed to start one agent container (the secret travels only in ``env``)."""

    name: str
    pool: str
    image: str
    volume: str
    env: Mapping[str, str]
    host_config: Mapping[str, Any]  # docker SDK kwargs of the security profile
    host_fields: Mapping[str, Any] = field(default_factory=dict)  # raw HostConfig fields (no SDK kwarg)
    nano_cpus: int | None = None
    mem_limit: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


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


class DockerHost:
    """One Docker engine agentpool may start agents on."""

    def __init__(self, name: str, url: str, timeout: float = 30.0) -> None:
        self.name = name
        self.url = url
        self._timeout = timeout
        self._client: docker.DockerClient | None = None

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = self._call(
                "connect", lambda: docker.DockerClient(base_url=self.url, timeout=int(self._timeout))
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except docker.errors.NotFound as exc:
            raise DockerError("not-found", f"{self.name}: {what}: not found") from exc
        except docker.errors.APIError as exc:
            status = exc.status_code or 0
            kind = "conflict" if status == 409 else ("server-error" if status >= 500 else "bad-request")
            explanation = str(exc.explanation or exc)
            raise DockerError(kind, f"{self.name}: {what}: {explanation}") from exc
        except (requests.ConnectionError, docker.errors.DockerException) as exc:
            raise DockerError(
                "unreachable", f"{self.name}: {what}: engine at {self.url} unreachable"
            ) from exc
        except requests.Timeout as exc:
            raise DockerError("timeout", f"{self.name}: {what}: timed out") from exc

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
                    host=self.name,
                    id=raw["Id"],
                    name=names[0].lstrip("/"),
                    agent=labels.get(LABEL_AGENT, ""),
                    pool=labels.get(LABEL_POOL, ""),
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
                    host=self.name,
                    name=raw["Name"],
                    pool=labels.get(LABEL_POOL, ""),
                    agent=labels.get(LABEL_AGENT, ""),
                    free=raw["Name"] not in mounted,
                    created=created,
                    last_used=created,
                )
            )
        return HostView(name=self.name, reachable=True, containers=tuple(containers), volumes=tuple(volumes))

    def image_present(self, image: str) -> bool:
        try:
            self._call(f"inspect image {image}", lambda: self.client.api.inspect_image(image))
        except DockerError as exc:
            if exc.kind == "not-found":
                return False
            raise
        return True

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
            if exc.kind != "not-found":
                raise

    def agent_volume(self, container: str) -> str | None:
        """The name of the volume mounted at the container's /var/lib/docker, if it still exists."""
        try:
            info = self._call(f"inspect {container}", lambda: self.client.api.inspect_container(container))
        except DockerError as exc:
            if exc.kind == "not-found":
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
        host_config = api.create_host_config(
            binds={spec.volume: {"bind": DOCKER_DIR, "mode": "rw"}},
            nano_cpus=spec.nano_cpus,
            mem_limit=spec.mem_limit,
            restart_policy={"Name": "no"},
            **dict(spec.host_config),
        )
        host_config.update(spec.host_fields)
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
            if secret is not None:
                archive = _secret_archive(SECRET_FILE, secret)
                self._call(
                    f"copy the secret into {spec.name}", lambda: api.put_archive(container_id, "/", archive)
                )
            self._call(f"start container {spec.name}", lambda: api.start(container_id))
        except DockerError:
            # Removed by id: the container created just now, never another one of that name.
            with contextlib.suppress(DockerError):
                self.remove_container(container_id, stop_timeout=2)
            raise
        return container_id

    def remove_container(self, container: str, stop_timeout: int = 10) -> None:
        """Stop (SIGTERM, then SIGKILL after ``stop_timeout``) and remove with anonymous volumes."""
        try:
            self._call(f"stop {container}", lambda: self.client.api.stop(container, timeout=stop_timeout))
        except DockerError as exc:
            if exc.kind == "not-found":
                return
            raise
        try:
            self._call(
                f"remove {container}", lambda: self.client.api.remove_container(container, v=True, force=True)
            )
        except DockerError as exc:
            if exc.kind != "not-found":
                raise


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
