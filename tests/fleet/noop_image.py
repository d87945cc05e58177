"""The no-op agent image: a Jenkins agent and nothing else, for fleet tests that need no inner engine.

The dind agent image is 615 MB and starts a dockerd in every agent; the fleet tests only need
agents that connect and run shell steps, on three engines that each need the image copied in.
This image is the stub agent.jar on a ``jlink``-ed Java runtime (java.base and java.net.http,
~35 MB) with the machine's glibc and a static busybox for ``/bin/sh``: about 45 MB, built
offline in seconds with ``docker import`` on the machine's engine and kept under its own tag.
Its entrypoint reads the environment agentpool gives every agent (``JENKINS_URL``,
``JENKINS_SECRET_FILE``, ``JENKINS_AGENT_NAME``, ``JENKINS_AGENT_WORKDIR``).
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import docker
import docker.errors

NOOP_REPOSITORY = "agentpool/noop-agent"
LIBS = (
    "/lib64/ld-linux-x86-64.so.2",
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/lib/x86_64-linux-gnu/libm.so.6",
    "/lib/x86_64-linux-gnu/libgcc_s.so.1",
    "/lib/x86_64-linux-gnu/libstdc++.so.6",
    "/lib/x86_64-linux-gnu/libz.so.1",
    "/lib/x86_64-linux-gnu/libpthread.so.0",
    "/lib/x86_64-linux-gnu/libdl.so.2",
    "/lib/x86_64-linux-gnu/librt.so.1",
)
# agentpool hands the secret over as a file (JENKINS_SECRET_FILE), which agent.jar reads as @FILE.
ENTRYPOINT = """#!/bin/sh
set -e
secret="$JENKINS_SECRET"
[ -z "${JENKINS_SECRET_FILE:-}" ] || secret="@$JENKINS_SECRET_FILE"
unset JENKINS_SECRET
exec /opt/jre/bin/java -jar /opt/agent.jar -url "$JENKINS_URL" -secret "$secret" \\
    -name "$JENKINS_AGENT_NAME" -webSocket -workDir "${JENKINS_AGENT_WORKDIR:-/home/jenkins/agent}"
"""
JLINK: tuple[str, ...] = ("jlink", "--add-modules", "java.base,java.net.http", "--strip-debug")
JLINK += ("--no-header-files", "--no-man-pages", "--compress=2")
APPLETS = ("sh", "ls", "cat", "echo", "sleep", "mkdir", "rm", "env", "true", "false", "test", "[")


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    tar.addfile(info)


def noop_image(agent_jar: Path) -> str:
    """The image's name: tagged by what goes into it, so a changed jar or entrypoint is rebuilt."""
    digest = hashlib.sha256(ENTRYPOINT.encode() + " ".join(JLINK).encode() + agent_jar.read_bytes())
    return f"{NOOP_REPOSITORY}:{digest.hexdigest()[:12]}"


def build_noop_image(client: docker.DockerClient, agent_jar: Path) -> str:
    """Build :func:`noop_image` on ``client``'s engine unless it exists; return its name."""
    name = noop_image(agent_jar)
    try:
        client.images.get(name)
        return name
    except docker.errors.ImageNotFound:
        pass
    busybox = shutil.which("busybox") or "/bin/busybox"
    with tempfile.TemporaryDirectory() as tmp:
        jre = Path(tmp) / "jre"
        subprocess.run(
            [*JLINK, "--output", str(jre)],
            check=True,
            capture_output=True,
        )
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            for d in ("bin", "lib", "lib64", "lib/x86_64-linux-gnu", "opt", "tmp", "home", "home/jenkins"):
                _add_dir(tar, d, 0o1777 if d == "tmp" else 0o755)
            for lib in LIBS:
                tar.add(str(Path(lib).resolve()), arcname=lib.lstrip("/"))
            tar.add(busybox, arcname="bin/busybox")
            for applet in APPLETS:
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(info)
            tar.add(str(jre), arcname="opt/jre")
            tar.add(str(agent_jar), arcname="opt/agent.jar")
            _add_bytes(tar, "entrypoint", ENTRYPOINT.encode(), 0o755)
        repository, tag = name.split(":")
        client.api.import_image_from_data(
            archive.getvalue(),
            repository=repository,
            tag=tag,
            changes=['ENTRYPOINT ["/entrypoint"]', "ENV PATH=/bin:/opt/jre/bin", "WORKDIR /home/jenkins"],
        )
    return name
