"""Which docker host has which pool image, and bringing an image to a host that lacks it.

The planner places a pool's agent only on a host that has the pool's image
(:attr:`agentpool.model.HostView.images`). :class:`ImageKeeper` tells it: each (host, image)
is checked once (one inspect) and remembered while present; a launch that fails on a host
makes it check again. A missing image is brought there in the background, one thread per
(host, image), with :func:`agentpool.adapters.images.ensure_image` (pull when a registry
answers, else copy from a host that has it, else the pool's ``image_archive``); progress is
logged and shown in ``status``, and the host is skipped for that pool until the image is
there. A transfer that fails is tried again after :data:`RETRY_AFTER`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from agentpool.backend import Backend
from agentpool.config import Config, DockerHostConfig
from agentpool.errors import ExternalError
from agentpool.model import HostView

log = logging.getLogger("agentpool")

RETRY_AFTER = 60.0
LOG_EVERY = 64 << 20  # bytes between two progress lines in the log

Progress = Callable[[int, int | None], None]
# transfer(target, image, sources, archive, progress) -> how: "present", "pulled", "copied", "loaded"
Transfer = Callable[[DockerHostConfig, str, Sequence[DockerHostConfig], str | None, Progress], str]


def docker_transfer(
    target: DockerHostConfig,
    image: str,
    sources: Sequence[DockerHostConfig],
    archive: str | None,
    progress: Progress,
) -> str:
    """Bring ``image`` to ``target`` over connections of its own (the pass keeps using its own)."""
    from agentpool.adapters.docker import DockerHost
    from agentpool.adapters.images import ensure_image

    host = DockerHost.from_config(target, timeout=300)
    others = [DockerHost.from_config(s, timeout=300) for s in sources]
    try:
        result = ensure_image(host, image, sources=others, archive=archive, progress=progress)
    finally:
        for h in (host, *others):
            h.close()
    return result.how + (f" from {result.source}" if result.source else "")


@dataclass(frozen=True, slots=True)
class ImageState:
    """One image on one host, as ``status`` shows it."""

    state: str  # "present", "missing", "transferring", "failed"
    detail: str = ""
    done: int = 0  # bytes sent so far (transferring)
    expected: int | None = None
    since: float = 0.0  # monotonic: when the state was entered


class ImageKeeper:
    def __init__(
        self, transfer: Transfer = docker_transfer, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._transfer = transfer
        self._clock = clock
        self._lock = threading.Lock()
        self._states: dict[tuple[str, str], ImageState] = {}
        self.threads: dict[tuple[str, str], threading.Thread] = {}

    def states(self) -> dict[str, dict[str, ImageState]]:
        """Every image state, by host then image."""
        with self._lock:
            out: dict[str, dict[str, ImageState]] = {}
            for (host, image), state in sorted(self._states.items()):
                out.setdefault(host, {})[image] = state
            return out

    def launch_failed(self, host: str, image: str) -> None:
        """A launch failed there: look at the image again next pass (it may have been removed)."""
        with self._lock:
            state = self._states.get((host, image))
            if state is not None and state.state == "present":
                del self._states[(host, image)]

    def annotate(
        self, config: Config, backends: Mapping[str, Backend], views: Sequence[HostView]
    ) -> list[HostView]:
        """The views with the images present on each reachable host; starts transfers that are due."""
        out: list[HostView] = []
        for view in views:
            host = config.host(view.name)
            backend = backends.get(view.name)
            if not view.reachable or host is None or backend is None:
                out.append(view)
                continue
            images = [p.image for p in config.pools if host.selected_by(p.hosts)]
            present = frozenset(i for i in dict.fromkeys(images) if self._present(backend, host, i, config))
            out.append(replace(view, images=present))
        return out

    def _present(self, backend: Backend, host: DockerHostConfig, image: str, config: Config) -> bool:
        key = (host.name, image)
        with self._lock:
            state = self._states.get(key)
        if state is not None and state.state == "present":
            return True
        if state is not None and state.state == "transferring":
            return False
        try:
            found = backend.image_present(image)
        except ExternalError:
            return False
        if found:
            self._set(key, ImageState("present", since=self._clock()))
            return True
        if not config.image_transfer:
            self._set(key, ImageState("missing", "image_transfer is off", since=self._clock()))
            return False
        if state is not None and state.state == "failed" and self._clock() - state.since < RETRY_AFTER:
            return False
        self._start(config, host, image)
        return False

    def _set(self, key: tuple[str, str], state: ImageState) -> None:
        with self._lock:
            self._states[key] = state

    def _start(self, config: Config, host: DockerHostConfig, image: str) -> None:
        key = (host.name, image)
        with self._lock:
            having = {h for (h, i), s in self._states.items() if i == image and s.state == "present"}
        others = [h for h in config.docker_hosts if h.name != host.name]
        sources = sorted(others, key=lambda h: h.name not in having)  # known holders first
        archive = next((p.image_archive for p in config.pools if p.image == image and p.image_archive), None)
        self._set(key, ImageState("transferring", "starting", since=self._clock()))
        log.info("image transfer", extra={"event": "image transfer", "host": host.name, "image": image})
        thread = threading.Thread(
            target=self._run,
            args=(host, image, sources, archive),
            name=f"agentpool-image-{host.name}",
            daemon=True,
        )
        self.threads[key] = thread
        thread.start()

    def _run(
        self, host: DockerHostConfig, image: str, sources: Sequence[DockerHostConfig], archive: str | None
    ) -> None:
        key = (host.name, image)
        start = self._clock()
        logged = [0]

        def progress(done: int, expected: int | None) -> None:
            total = f"/{expected / 1e6:.0f}" if expected else ""
            self._set(key, ImageState("transferring", f"{done / 1e6:.0f}{total} MB", done, expected, start))
            if done - logged[0] >= LOG_EVERY:
                logged[0] = done
                fields = {"host": host.name, "image": image, "bytes": done, "expected": expected}
                log.info("image progress", extra={"event": "image progress", **fields})

        try:
            how = self._transfer(host, image, sources, archive, progress)
        except (
            Exception
        ) as exc:  # the transfer's own errors name their cause; a bug must not kill it silently
            message = exc.message if isinstance(exc, ExternalError) else f"{type(exc).__name__}: {exc}"
            self._set(key, ImageState("failed", message, since=self._clock()))
            log.warning(
                "image transfer failed",
                extra={"event": "image transfer failed", "host": host.name, "image": image, "error": message},
            )
            return
        seconds = round(self._clock() - start, 1)
        self._set(key, ImageState("present", how, since=self._clock()))
        log.info(
            "image ready",
            extra={"event": "image ready", "host": host.name, "image": image, "how": how, "seconds": seconds},
        )
