"""Bring a pool's image to the Docker host that lacks it: pull, copy from another host, or load.

A fleet of engines rarely has the agent image everywhere: it was built on one host, or a new
host joined. Without it every launch there fails. :func:`ensure_image` makes it present on one
host, trying in order: a ``docker pull`` with a short timeout (when a registry is reachable),
a copy from a host that has it (``docker save | docker load`` between the two engines, streamed
chunk by chunk: memory stays bounded whatever the image size), or a ``docker save`` archive on
this machine. Progress (bytes sent so far, and the size expected when known) goes to a callback
so the caller can log it and show it in ``status``. A copied image is checked to arrive with
the source's id. Everything here is blocking I/O: the caller runs it in the background.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agentpool.adapters.docker import DockerHost
from agentpool.errors import DockerError, ErrorKind

# progress(bytes sent so far, bytes expected or None when unknown)
Progress = Callable[[int, int | None], None]
CHUNK = 1 << 20
REPORT_EVERY = 1 << 20
PULL_TIMEOUT = 15.0


@dataclass(frozen=True, slots=True)
class ImageTransfer:
    """How an image came to be present on a host."""

    image: str
    host: str
    how: Literal["present", "pulled", "copied", "loaded"]
    source: str = ""  # the host copied from, or the archive loaded
    bytes: int = 0
    seconds: float = 0.0
    pull_error: str = ""  # why the pull did not do it, when it was tried


def _counted(chunks: Iterable[bytes], expected: int | None, progress: Progress | None) -> Iterator[bytes]:
    """Pass the chunks through, reporting the running total every MiB and at the end."""
    done = reported = 0
    for chunk in chunks:
        done += len(chunk)
        if progress is not None and done - reported >= REPORT_EVERY:
            progress(done, expected)
            reported = done
        yield chunk
    if progress is not None and done != reported:
        progress(done, expected)


class _Meter:
    """The byte count seen by the last progress call (the stream is consumed by the engine)."""

    def __init__(self, progress: Progress | None) -> None:
        self.done = 0
        self._progress = progress

    def __call__(self, done: int, expected: int | None) -> None:
        self.done = done
        if self._progress is not None:
            self._progress(done, expected)


def copy_image(source: DockerHost, target: DockerHost, image: str, progress: Progress | None = None) -> int:
    """Stream ``image`` from ``source``'s engine into ``target``'s; return the bytes sent.

    The target ends up with the source's image id, or :class:`DockerError` says why not.
    """
    wanted = source.image_id(image)
    if wanted is None:
        raise DockerError(ErrorKind.NOT_FOUND, f"{source.name}: image {image} is not present to copy")
    meter = _Meter(progress)
    exported = source.export_image(image, CHUNK)
    try:
        target.load_image(_counted(exported, source.image_size(image), meter))
    finally:
        exported.close()  # a refused load leaves the source's stream open until then
    arrived = target.image_id(image)
    if arrived != wanted:
        raise DockerError(
            ErrorKind.BAD_RESPONSE,
            f"{target.name}: after loading {image} from {source.name}: id {arrived or 'absent'}, "
            f"expected {wanted}",
        )
    return meter.done


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


def load_archive(target: DockerHost, image: str, archive: str, progress: Progress | None = None) -> int:
    """``docker load < archive`` into ``target`` (streamed); ``image`` must then be present."""
    path = Path(archive)
    try:
        expected: int | None = path.stat().st_size
    except OSError as exc:
        raise DockerError(ErrorKind.NOT_FOUND, f"image archive {archive}: {exc.strerror or exc}") from exc
    meter = _Meter(progress)
    try:
        target.load_image(_counted(_file_chunks(path), expected, meter))
    except OSError as exc:
        raise DockerError(ErrorKind.BAD_REQUEST, f"image archive {archive}: {exc.strerror or exc}") from exc
    if target.image_id(image) is None:
        raise DockerError(ErrorKind.NOT_FOUND, f"{target.name}: image archive {archive} holds no {image}")
    return meter.done


def ensure_image(
    target: DockerHost,
    image: str,
    *,
    sources: Sequence[DockerHost] = (),
    archive: str | None = None,
    pull: bool = True,
    pull_timeout: float = PULL_TIMEOUT,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ImageTransfer:
    """Make ``image`` present on ``target``: already there, pulled, copied, or loaded.

    ``sources`` are the other hosts, asked in order whether they have it. Raises
    :class:`DockerError` naming every way that was tried when none worked.
    """
    if target.image_id(image) is not None:
        return ImageTransfer(image, target.name, "present")
    start = clock()
    pull_error = ""
    if pull:
        try:
            target.pull_image(image, pull_timeout)
        except DockerError as exc:
            pull_error = exc.message
        else:
            if target.image_id(image) is not None:
                return ImageTransfer(image, target.name, "pulled", seconds=clock() - start)
            pull_error = "the pull ended without the image"
    tried = [f"pull: {pull_error}"] if pull else []
    for source in sources:
        if source.name == target.name:
            continue
        try:
            if source.image_id(image) is None:
                continue
            sent = copy_image(source, target, image, progress)
        except DockerError as exc:
            tried.append(f"copy from {source.name}: {exc.message}")
            continue
        return ImageTransfer(image, target.name, "copied", source.name, sent, clock() - start, pull_error)
    if archive is not None:
        try:
            sent = load_archive(target, image, archive, progress)
        except DockerError as exc:
            tried.append(f"archive: {exc.message}")
        else:
            return ImageTransfer(image, target.name, "loaded", archive, sent, clock() - start, pull_error)
    if len(tried) == (1 if pull else 0):
        tried.append("no other host has it" + ("" if archive else " and no image archive is configured"))
    raise DockerError(ErrorKind.NOT_FOUND, f"{target.name}: image {image} missing; " + "; ".join(tried))
