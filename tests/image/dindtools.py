"""Helpers for testing the dind agent image against the real Docker engine of this machine.

They drive the docker CLI exactly as a user would (the commands in docs/dind-image.md). Every
container and volume gets a random name and is removed after the tests.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("AGENTPOOL_IMAGE", "agentpool/dind-agent:latest")
BUSYBOX = "agentpool/busybox:latest"

# The `capabilities` security profile, minus CAP_SYS_RESOURCE which this host's capability
# bounding set lacks (see docs/dind-image.md).
CAPABILITIES = (
    "--cap-add=ALL",
    "--cap-drop=SYS_RESOURCE",
    "--security-opt=apparmor=unconfined",
    "--security-opt=seccomp=unconfined",
    "--security-opt=systempaths=unconfined",
    "--device-cgroup-rule=a *:* rwm",
)


def docker(
    *args: str, input: bytes | None = None, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI; on failure the error names the command and its stderr."""
    proc = subprocess.run(
        ["docker", *args],
        input=input.decode() if input is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


@dataclass
class Agent:
    """One running dind agent container."""

    name: str
    volume: str

    def exec(self, *cmd: str, input: bytes | None = None, timeout: float = 120) -> str:
        args = ["exec", "-i", self.name, *cmd] if input is not None else ["exec", self.name, *cmd]
        return docker(*args, input=input, timeout=timeout).stdout

    def logs(self) -> str:
        proc = docker("logs", self.name, check=False)
        return proc.stdout + proc.stderr

    def ip(self) -> str:
        return docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", self.name).stdout.strip()

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until the inner engine answers `docker info`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if docker("exec", self.name, "docker", "info", check=False, timeout=20).returncode == 0:
                return
            state = docker("inspect", "-f", "{{.State.Running}}", self.name, check=False).stdout.strip()
            if state == "false":
                raise AssertionError(f"{self.name} exited before its engine was ready:\n{self.logs()}")
            time.sleep(0.2)
        raise AssertionError(f"inner engine of {self.name} not ready within {timeout} s:\n{self.logs()}")

    def load_busybox(self) -> None:
        """Copy agentpool/busybox into the inner engine (it reaches no registry)."""
        saved = subprocess.run(["docker", "save", BUSYBOX], capture_output=True, check=True, timeout=60)
        proc = subprocess.run(
            ["docker", "exec", "-i", self.name, "docker", "load"],
            input=saved.stdout,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr.decode()


@dataclass
class Agents:
    """Starts agent containers and removes every container and volume it created."""

    suffix: str
    containers: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)

    def volume(self, role: str) -> str:
        name = f"agentpool-test-{role}-{self.suffix}"
        if name not in self.volumes:
            docker("volume", "create", name)
            self.volumes.append(name)
        return name

    def start(
        self,
        role: str,
        *,
        volume: str | None = None,
        env: dict[str, str] | None = None,
        mounts: Sequence[str] = (),
        args: Sequence[str] = (),
        data_root_volume: bool = True,
        systempaths_unconfined: bool = True,
    ) -> Agent:
        """`docker run -d` the image under the capabilities profile (not waiting for readiness).

        systempaths_unconfined=False leaves out what the engine API (and so the docker SDK)
        cannot express as a security option.
        """
        name = f"agentpool-test-{role}-{self.suffix}-{secrets.token_hex(2)}"
        vol = volume or self.volume(role)
        opts = self._options(name, vol if data_root_volume else None, env, mounts)
        if not systempaths_unconfined:
            opts.remove("--security-opt=systempaths=unconfined")
        docker("run", "-d", *opts, IMAGE, *args)
        return Agent(name=name, volume=vol)

    def run_to_end(
        self,
        role: str,
        *,
        env: dict[str, str] | None = None,
        data_root_volume: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """`docker run` the image in the foreground until it exits; output and status returned."""
        name = f"agentpool-test-{role}-{self.suffix}-{secrets.token_hex(2)}"
        vol = self.volume(role) if data_root_volume else None
        return docker("run", *self._options(name, vol, env, ()), IMAGE, check=False, timeout=timeout)

    def _options(
        self, name: str, volume: str | None, env: dict[str, str] | None, mounts: Sequence[str]
    ) -> list[str]:
        self.containers.append(name)
        opts = ["--name", name, *CAPABILITIES]
        if volume is not None:
            opts += ["-v", f"{volume}:/var/lib/docker"]
        for m in mounts:
            opts += ["-v", m]
        for key, value in (env or {}).items():
            opts += ["-e", f"{key}={value}"]
        return opts

    def remove(self, agent: Agent) -> None:
        docker("rm", "-f", agent.name, check=False)
        if agent.name in self.containers:
            self.containers.remove(agent.name)

    def cleanup(self) -> None:
        for name in self.containers:
            docker("rm", "-f", name, check=False)
        for vol in self.volumes:
            docker("volume", "rm", "-f", vol, check=False)
