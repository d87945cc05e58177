"""A tiny HTTP server that hands images to agents' inner engines, for tests and the demo.

No registry is reachable from these machines, nor from inside an agent, so a build that wants
to `docker run` something first loads it: the host saves an image to a tarball and serves
it here; the build does ``curl -fsS URL | docker load``. Agents reach the host at the Docker
bridge gateway, which is where it listens (read from the engine unless given).
"""

from __future__ import annotations

import functools
import http.server
import tempfile
import threading
from pathlib import Path
from typing import Any

import docker

from .network import bridge_gateway


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class ArtifactServer:
    """Serves saved images as ``/<name>.tar`` on the bridge gateway (or ``listen``), any free port."""

    def __init__(self, client: docker.DockerClient, images: dict[str, str], listen: str | None = None):
        host = listen or bridge_gateway(client)
        self._dir = tempfile.TemporaryDirectory(prefix="agentpool-artifacts-")
        handler = functools.partial(_QuietHandler, directory=self._dir.name)
        try:
            self._server = http.server.ThreadingHTTPServer((host, 0), handler)
        except BaseException:
            self._dir.cleanup()
            raise
        try:
            for name, image in images.items():
                with (Path(self._dir.name) / f"{name}.tar").open("wb") as out:
                    for chunk in client.images.get(image).save(named=True):
                        out.write(chunk)
        except BaseException:
            self._server.server_close()
            self._dir.cleanup()
            raise
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="artifacts")
        self.url = f"http://{host}:{self._server.server_address[1]}"

    def __enter__(self) -> ArtifactServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._dir.cleanup()

    def docker_run_script(self, name: str, image: str, command: str) -> str:
        """A build script that loads ``name``'s tarball into the agent's engine and runs ``command``."""
        return f"curl -fsS {self.url}/{name}.tar | docker load\ndocker run --rm {image} {command}\n"
