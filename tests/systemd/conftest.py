"""A Debian 12 host with systemd as PID 1, in a container, where agentpool is installed as the
README says and driven through systemctl and the journal.

``systemd-analyze verify`` says nothing about whether readiness, the watchdog, reload,
LoadCredential or the hardening work when systemd really runs the unit; this host lets the
tests find out. It is the image ``images/systemd-host`` (built on demand, cached by its
Dockerfile), started as docs/service.md describes, with the machine's Docker socket mounted
in: the agents the service starts run on this machine's engine, beside the host container.
The project's Jenkins-compatible controller runs in the test process, bound to the bridge
gateway, where both the host container and the agents reach it.

Python packages reach the host container as a wheelhouse built once on this machine (cached
under ``build/``): pip inside a container cannot verify the package index's certificate on
these machines, and a local wheelhouse keeps the installation quick anyway.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import jenkins
import pytest

from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]

# The one place the test controller's module is named (it is moving to
# ``agentpool_testing.jenkins``; its CLI is ``python -m <this module>``).
CONTROLLER_MODULE = "agentpool_testing.jenkins"

HOST_IMAGE = os.environ.get("AGENTPOOL_SYSTEMD_HOST", "agentpool/systemd-host:bookworm")
AGENT_IMAGE = os.environ.get("AGENTPOOL_IMAGE", "agentpool/dind-agent:latest")
CHECKOUT = "/home/builder/agentpool"  # where the checkout sits in the host container
WHEELHOUSE = "/wheelhouse"
UNIT = "agentpool.service"
METRICS = "127.0.0.1:9464"  # metrics.listen inside the host container
JOB_TIMEOUT = 90.0

# What docker-on-these-machines.md item 10 says systemd needs in a container; no --privileged.
SYSTEMD_RUN_FLAGS = (
    "--cap-add=ALL",
    "--cap-drop=SYS_RESOURCE",
    "--security-opt=apparmor=unconfined",
    "--security-opt=seccomp=unconfined",
    "--security-opt=systempaths=unconfined",
    "--device-cgroup-rule=a *:* rwm",
    "--tmpfs=/run",
    "--tmpfs=/run/lock",
    "--volume=/sys/fs/cgroup:/sys/fs/cgroup:ro",
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "systemd: needs systemd as PID 1 in a container (tests/systemd)")


def controller_module() -> Any:
    return importlib.import_module(CONTROLLER_MODULE)


_LOGFMT = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def logfmt(line: str) -> dict[str, str]:
    """The fields of one logfmt line (quoted values unquoted)."""
    out: dict[str, str] = {}
    for key, value in _LOGFMT.findall(line):
        out[key] = json.loads(value) if value.startswith('"') else value
    return out


@dataclass
class SystemdHost:
    """The host container: commands run in it with ``docker exec``, as root."""

    name: str
    container_id: str
    gateway: str
    instance: str
    token: str
    controller: Any
    client: docker.DockerClient
    before_install: dict[str, list[Any]] = field(default_factory=dict)

    # -- commands --------------------------------------------------------------------------

    def run(
        self,
        *argv: str,
        check: bool = True,
        input: str | None = None,
        env: dict[str, str] | None = None,
        workdir: str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        cmd = ["docker", "exec", "-i"]
        for key, value in (env or {}).items():
            cmd += ["-e", f"{key}={value}"]
        if workdir:
            cmd += ["-w", workdir]
        cmd += [self.name, *argv]
        done = subprocess.run(
            cmd, input=input or "", capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"`{shlex.join(argv)}` exited {done.returncode}:\n{done.stdout}{done.stderr}"
            )
        return done

    def sh(self, script: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run("bash", "-c", script, **kw)

    def systemctl(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        done = self.run("systemctl", *args, check=check, timeout=timeout)
        return done.stdout + done.stderr

    def show(self, prop: str) -> str:
        return self.run("systemctl", "show", "--property", prop, "--value", UNIT).stdout.strip()

    def main_pid(self) -> int:
        return int(self.show("MainPID"))

    def write(self, path: str, text: str, mode: str = "0644") -> None:
        self.run("install", "-m", mode, "/dev/stdin", path, input=text)

    def install_service(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``scripts/install-service`` from the checkout, as root, pip reading the wheelhouse."""
        return self.run(
            "scripts/install-service",
            *args,
            workdir=CHECKOUT,
            env={"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": WHEELHOUSE},
            timeout=300,
        )

    def http(self, path: str) -> tuple[int, str]:
        """GET on the daemon's HTTP port, from inside the host container."""
        done = self.run(
            "curl", "-s", "-m", "5", "-o", "/dev/stdout", "-w", "\n%{http_code}", f"http://{METRICS}{path}"
        )
        body, _, code = done.stdout.rpartition("\n")
        return int(code), body

    def status(self) -> dict[str, Any]:
        code, body = self.http("/status")
        assert code == 200, body
        result: dict[str, Any] = json.loads(body)
        return result

    # -- the journal -----------------------------------------------------------------------

    def cursor(self) -> str:
        """The journal's position now: ``journal(after=…)`` returns only what comes later."""
        done = self.run("journalctl", "--no-pager", "-n", "1", "-o", "json", check=False)
        lines = done.stdout.strip().splitlines()
        return str(json.loads(lines[-1])["__CURSOR"]) if lines else ""

    def journal(self, after: str = "", unit: str = UNIT) -> list[dict[str, Any]]:
        """The unit's journal entries (systemd's and the daemon's), oldest first."""
        argv = ["journalctl", "--no-pager", "-o", "json", "-u", unit]
        if after:
            argv.append(f"--after-cursor={after}")
        done = self.run(*argv, check=False)
        return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]

    def messages(self, after: str = "") -> list[str]:
        return [message_text(e.get("MESSAGE", "")) for e in self.journal(after)]

    def decisions(self, after: str = "", event: str | None = None) -> list[dict[str, str]]:
        """The daemon's own log lines, parsed; ``event`` keeps only those with that ``msg``."""
        out = []
        for entry in self.journal(after):
            if entry.get("SYSLOG_IDENTIFIER") != "agentpool" or entry.get("_PID") == "1":
                continue
            fields = logfmt(message_text(entry.get("MESSAGE", "")))
            if event is None or fields.get("msg") == event:
                out.append(fields)
        return out

    def wait_journal(self, what: str, pattern: str, after: str, timeout: float = 60) -> str:
        regex = re.compile(pattern)

        def seen() -> str | None:
            return next((m for m in self.messages(after) if regex.search(m)), None)

        found: str = wait_for(f"{what} in the journal", seen, timeout)
        return found

    # -- agents (on this machine's engine) and builds (on the controller) --------------------

    def agent_containers(self) -> dict[str, str]:
        """Running agent containers of this instance: name → container id."""
        found = self.client.containers.list(
            filters={"label": f"agentpool.instance={self.instance}"}, ignore_removed=True
        )
        return {c.name: c.id for c in found if c.labels.get("agentpool.agent")}

    def jenkins(self) -> jenkins.Jenkins:
        return jenkins.Jenkins(
            f"http://{self.gateway}:{self.controller.port}/",
            username="admin",
            password=self.token,
            timeout=30,
        )

    def queue(self, job: str, script: str) -> int:
        """Create (once) and queue a freestyle job on ``docker``, over HTTP; its build number."""
        client = self.jenkins()
        if not client.job_exists(job):
            config = controller_module().freestyle_config("docker", script, quiet_period=0)
            client.create_job(job, config)
        number: int = client.get_job_info(job)["nextBuildNumber"]
        client.build_job(job)
        return number

    def finished(self, job: str, number: int) -> tuple[str, str]:
        """The build's result and console, once it has finished."""
        result: str = self.controller.wait_for_build(job, number, timeout=JOB_TIMEOUT)
        return result, self.controller.console(job, number)

    def idle_agent(self) -> str:
        """The name of an agent of this instance, running one if there is none."""
        if not self.agent_containers():
            result, console = self.finished("warm-up", self.queue("warm-up", "echo warm"))
            assert result == "SUCCESS", console
        return sorted(self.agent_containers())[0]

    # -- the filesystem, for the installer's tests -------------------------------------------

    def snapshot(self, *roots: str, mtimes: bool = False, skip: tuple[str, ...] = ()) -> dict[str, list[Any]]:
        """path → [type, mode, uid, gid, sha256 or link target (, mtime)] for every path below roots."""
        script = r"""
import hashlib, json, os, stat, sys
roots, mtimes, skip = json.loads(sys.argv[1])
out = {}
for root in roots:
    walk = os.walk(root) if os.path.isdir(root) else [(os.path.dirname(root), [], [os.path.basename(root)])]
    for top, dirs, files in walk:
        dirs[:] = sorted(d for d in dirs if os.path.join(top, d) not in skip)
        for name in ([""] if os.path.isdir(root) else []) + sorted(files):
            path = os.path.join(top, name) if name else top
            if path in skip or not os.path.lexists(path):
                continue
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                what = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    what = hashlib.sha256(f.read()).hexdigest()
            else:
                what = ""
            entry = [stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, what]
            if mtimes:
                entry.append(st.st_mtime_ns)
            out[path] = entry
print(json.dumps(out))
"""
        done = self.run("python3", "-c", script, json.dumps([list(roots), mtimes, list(skip)]))
        result: dict[str, list[Any]] = json.loads(done.stdout)
        return result


def message_text(message: Any) -> str:
    """journalctl -o json gives a message that is not valid UTF-8 as a list of bytes."""
    return bytes(message).decode(errors="replace") if isinstance(message, list) else str(message)


# -- building what the host needs ----------------------------------------------------------


def _build_host_image() -> None:
    done = subprocess.run(
        [str(REPO / "images" / "systemd-host" / "build")],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "AGENTPOOL_SYSTEMD_HOST": HOST_IMAGE},
    )
    if done.returncode != 0:
        pytest.fail(f"images/systemd-host/build failed:\n{done.stderr[-3000:]}")


def _wheelhouse(python_version: str) -> Path:
    """Wheels of agentpool's dependencies (and pip/setuptools to build it) for the host's Python,
    cached under build/ by Python version and requirement list."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    requirements = sorted(
        [*pyproject["project"]["dependencies"], *pyproject["build-system"]["requires"], "pip", "wheel"]
    )
    key = f"{python_version}:{json.dumps(requirements)}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    target = REPO / "build" / f"systemd-wheelhouse-{digest}"
    if (target / ".complete").exists():
        return target
    # One partial directory per process: test workers may build the same wheelhouse at once.
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)  # pip wheel copies into it and does not make build/ itself
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if here != python_version:
        pytest.fail(
            f"the wheelhouse is built by this Python ({here}) for the host container's "
            f"({python_version}): run the tests with a Python {python_version}"
        )
    # pip wheel: binary wheels as published, pure-Python sdists (multi_key_dict) built here.
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", f"--wheel-dir={partial}", *requirements],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"building the wheelhouse for the systemd host failed:\n{done.stderr[-3000:]}")
    (partial / ".complete").touch()
    try:
        partial.rename(target)
    except OSError:  # another worker finished first: its wheelhouse is the same
        shutil.rmtree(partial, ignore_errors=True)
    return target


def _checkout_tar() -> bytes:
    """This checkout as an unprivileged user's clone: owned by uid 1000, group/world-writable
    (the worst case the installer must not carry over)."""
    skip_dirs = {".git", ".venv", "build", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for top, dirs, files in os.walk(REPO):
            dirs[:] = sorted(d for d in dirs if d not in skip_dirs and not d.endswith(".egg-info"))
            for name in ["", *sorted(files)]:
                path = Path(top) / name if name else Path(top)
                if path.suffix == ".pyc":
                    continue
                info = tar.gettarinfo(str(path), arcname=str(Path("agentpool") / path.relative_to(REPO)))
                info.uid, info.gid, info.uname, info.gname = 1000, 1000, "builder", "builder"
                info.mode |= 0o022
                if info.isfile():
                    with path.open("rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return buf.getvalue()


def _gateway(client: docker.DockerClient, container: Any) -> str:
    """The bridge gateway: from the network's IPAM config, else as the container sees it."""
    network = client.networks.get("bridge")
    for config in network.attrs.get("IPAM", {}).get("Config") or []:
        if config.get("Gateway"):
            return str(config["Gateway"])
    container.reload()
    gateway = container.attrs["NetworkSettings"].get("Gateway", "")
    assert gateway, "the bridge network has no gateway address"
    return str(gateway)


def _boot(name: str, wheelhouse: Path) -> None:
    subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--name",
            name,
            "--hostname",
            "agentpool-host",
            "--label",
            "agentpool.test=systemd",
            *SYSTEMD_RUN_FLAGS,
            "--volume=/var/run/docker.sock:/run/docker.sock",
            f"--volume={wheelhouse}:{WHEELHOUSE}:ro",
            HOST_IMAGE,
        ],
        capture_output=True,
        text=True,
        check=True,
    )


def _booted(host: SystemdHost, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """``systemctl is-system-running --wait`` once PID 1 answers on its bus at all."""
    deadline = time.monotonic() + timeout
    while True:
        state = host.run("systemctl", "is-system-running", "--wait", check=False, timeout=timeout)
        if "Failed to connect to bus" not in state.stderr or time.monotonic() > deadline:
            return state
        time.sleep(0.5)


def config_yaml(host: SystemdHost, **pool: Any) -> str:
    """The test's /etc/agentpool/agentpool.yaml (what an operator writes with $EDITOR)."""
    settings: dict[str, Any] = {
        "labels": "[docker, linux]",
        "image": AGENT_IMAGE,
        "security": "capabilities",
        "cap_drop": "[SYS_RESOURCE]",
        "max_agents": 2,
        "idle_timeout": "10m",
        "launch_timeout": "90s",
        **pool,
    }
    lines = [
        "jenkins:",
        f"  url: http://{host.gateway}:{host.controller.port}/",
        "  user: admin",
        "  token_file: ${CREDENTIALS_DIRECTORY}/jenkins.token",
        # Above the watchdog test's WatchdogSec, so a stalled request hangs the loop.
        "  timeout: 30s",
        f"instance: {host.instance}",
        "poll_interval: 1s",
        "metrics:",
        f"  listen: {METRICS}",
        "pools:",
        "  - name: dind",
        *(f"    {key}: {value}" for key, value in settings.items()),
    ]
    return "\n".join(lines) + "\n"


INSTALL_SNAPSHOT_ROOTS = ("/etc", "/opt", "/usr/local", "/var/lib", "/home/builder")
# What changes on its own on a running host, or is a backup shadow-utils leaves behind.
INSTALL_SNAPSHOT_SKIP = (
    "/etc/passwd-",
    "/etc/group-",
    "/etc/shadow-",
    "/etc/gshadow-",
    "/etc/.pwd.lock",
    "/etc/ld.so.cache",
    "/var/lib/systemd",
    "/var/lib/apt",
    "/var/lib/dpkg",
)


@pytest.fixture(scope="module")
def systemd_host() -> Iterator[SystemdHost]:
    """The host container with agentpool installed (not yet started) as the README says."""
    client = docker.from_env()
    try:
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"no Docker engine answers ({exc}); scripts/test.sh starts one")
    try:
        client.images.get(AGENT_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"image {AGENT_IMAGE} missing: run images/build (scripts/test.sh does)")
    if not importlib.import_module(CONTROLLER_MODULE + ".stub").BUILT_JAR.exists():
        subprocess.run([str(REPO / "scripts" / "build-agent-jar")], check=True, capture_output=True)
    _build_host_image()
    python_version = client.containers.run(
        HOST_IMAGE,
        ["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        remove=True,
    )
    wheelhouse = _wheelhouse(python_version.decode().strip())

    instance = "sd" + secrets.token_hex(3)
    name = f"agentpool-systemd-{instance}"
    token = secrets.token_hex(16)
    controller = None
    try:
        _boot(name, wheelhouse)
        container = client.containers.get(name)
        host = SystemdHost(name, container.id, _gateway(client, container), instance, token, None, client)
        state = _booted(host)
        if state.stdout.strip() not in ("running", "degraded"):
            logs = host.run("journalctl", "-b", "--no-pager", "-n", "30", check=False).stdout
            pytest.skip(
                "this machine cannot run systemd as PID 1 in a container "
                f"(is-system-running: {state.stdout.strip() or state.stderr.strip()}):\n{logs}"
            )
        host.controller = controller = controller_module().Controller(
            listen=f"{host.gateway}:0",
            user="admin",
            token=token,
            url=f"http://{host.gateway}:{{port}}/",
            quiet_period=0,
        )
        controller.start()

        # The mounted socket belongs to this machine's docker group: make it the host's too,
        # as on a host where the engine runs locally.
        host.sh('groupmod -o -g "$(stat -c %g /run/docker.sock)" docker')
        host.run("mkdir", "-p", "/home/builder")
        container.put_archive("/home/builder", _checkout_tar())
        host.before_install = host.snapshot(*INSTALL_SNAPSHOT_ROOTS, skip=INSTALL_SNAPSHOT_SKIP)

        # The README's "Install as a service", step by step.
        installed = host.install_service()
        assert "creating system user agentpool" in installed.stderr, installed.stderr
        generated = host.run("cat", "/etc/agentpool/agentpool.yaml").stdout
        assert "  token_file: ${CREDENTIALS_DIRECTORY}/jenkins.token\n" in generated
        host.write("/etc/agentpool/agentpool.yaml", config_yaml(host))
        # `install -m 0600 /dev/stdin /etc/agentpool/jenkins.token <<<'TOKEN'`, the token on
        # stdin rather than in a command line.
        host.write("/etc/agentpool/jenkins.token", token + "\n", mode="0600")
        # A team's controller has jobs; doctor proves Job/Read by the jobs the account sees.
        host.jenkins().create_job("doctor-sees-me", controller_module().freestyle_config("docker", "true"))
        doctor = host.run(
            "/opt/agentpool/venv/bin/agentpool",
            "doctor",
            "--config",
            "/etc/agentpool/agentpool.yaml",
            env={"CREDENTIALS_DIRECTORY": "/etc/agentpool"},
            check=False,
        )
        assert (doctor.returncode, "FAIL" in doctor.stdout) == (0, False), doctor.stdout + doctor.stderr
        assert token not in doctor.stdout + doctor.stderr
        yield host
    finally:
        if os.environ.get("AGENTPOOL_SYSTEMD_KEEP"):  # debugging: keep the host container
            print(f"\nkept {name}: docker exec -it {name} bash; docker rm -f {name} when done")
        else:
            subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True, check=False)
        label = f"agentpool.instance={instance}"
        for c in client.containers.list(all=True, filters={"label": label}, ignore_removed=True):
            c.remove(force=True, v=True)
        for v in client.volumes.list(filters={"label": label}):
            v.remove(force=True)
        if controller is not None:
            controller.stop()
        client.close()
