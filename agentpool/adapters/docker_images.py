"""The image half of one Docker engine: inspect, ``docker save``, ``docker load`` and pull.

These calls exist to bring a pool's image to a host that lacks it
(:mod:`agentpool.adapters.images`); they share nothing with the agent lifecycle of
:class:`~agentpool.adapters.docker.DockerHost` but the engine connection and the translation of
its failures into :class:`DockerError`, both taken from the host. Kept apart so the host class
stays about containers and volumes (issue #8's size rule); the host's ``image_*`` methods
delegate here, so callers and the :class:`agentpool.backend.Backend` protocol see no change.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from typing import Any, Protocol, TypeVar

import docker

from agentpool.errors import DockerError, ErrorKind

T = TypeVar("T")


class _Engine(Protocol):
    """What the image calls take from their :class:`DockerHost` (named, not imported: no cycle)."""

    @property
    def name(self) -> str: ...

    @property
    def client(self) -> docker.DockerClient: ...

    def _call(self, what: str, fn: Callable[[], T]) -> T: ...

    def _connect(self, timeout: float) -> docker.DockerClient: ...


def _split_tag(image: str) -> tuple[str, str | None]:
    """``registry:5000/a/b:tag`` → (``registry:5000/a/b``, ``tag``); digests stay whole."""
    if "@" in image:
        return image, None
    name, sep, tag = image.rpartition(":")
    if sep and "/" not in tag:
        return name, tag
    return image, "latest"


class EngineImages:
    """The images of one engine, reached through its :class:`DockerHost`."""

    def __init__(self, host: _Engine) -> None:
        self._host = host

    def _inspect(self, image: str) -> Any:
        """The engine's record of the image; None when it is absent."""
        host = self._host
        try:
            return host._call(f"inspect image {image}", lambda: host.client.api.inspect_image(image))
        except DockerError as exc:
            if exc.kind is ErrorKind.NOT_FOUND:
                return None
            raise

    def present(self, image: str) -> bool:
        return self._inspect(image) is not None

    def id_of(self, image: str) -> str | None:
        """The image's id (``sha256:…``) on this engine; None when it is absent."""
        info = self._inspect(image)
        return None if info is None else str(info["Id"])

    def size_of(self, image: str) -> int | None:
        """The image's size in bytes as the engine reports it (about what ``save`` sends)."""
        host = self._host
        try:
            info = host._call(f"inspect image {image}", lambda: host.client.api.inspect_image(image))
        except DockerError:
            return None
        size = info.get("Size")
        return size if isinstance(size, int) else None

    def export(self, image: str, chunk_size: int = 1 << 20) -> Generator[bytes, None, None]:
        """``docker save IMAGE`` as a stream of chunks (never the whole archive in memory)."""
        host = self._host
        chunks = host._call(f"save image {image}", lambda: host.client.api.get_image(image, chunk_size))
        iterator = iter(chunks)
        while True:
            chunk = host._call(f"save image {image}", lambda: next(iterator, None))
            if chunk is None:
                return
            yield chunk

    def load(self, chunks: Iterable[bytes]) -> list[str]:
        """``docker load`` from a stream of chunks (sent as they come); the names loaded."""
        host = self._host
        answer = host._call("load image", lambda: list(host.client.api.load_image(chunks)))
        loaded: list[str] = []
        for line in answer:
            if not isinstance(line, dict):
                continue
            if line.get("error"):
                detail = line.get("errorDetail") or {}
                raise DockerError(
                    ErrorKind.BAD_REQUEST,
                    f"{host.name}: load image: {detail.get('message') or line['error']}",
                )
            stream = str(line.get("stream") or "")
            for prefix in ("Loaded image: ", "Loaded image ID: "):
                if stream.startswith(prefix):
                    loaded.append(stream[len(prefix) :].strip())
        return loaded

    def pull(self, image: str, timeout: float) -> None:
        """``docker pull IMAGE`` with its own short timeout (no registry: fail fast, not in 30 s)."""
        host = self._host
        repository, tag = _split_tag(image)
        client = host._connect(timeout)
        try:
            answer = host._call(
                f"pull {image}",
                lambda: list(client.api.pull(repository, tag=tag, stream=True, decode=True)),
            )
        finally:
            client.close()
        for line in answer:
            if isinstance(line, dict) and line.get("error"):
                raise DockerError(ErrorKind.NOT_FOUND, f"{host.name}: pull {image}: {line['error']}")
