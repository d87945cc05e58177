"""How fast a dind agent container becomes useful, and how big the image is.

Measures, on the local Docker engine, the time from `docker run` of agentpool/dind-agent
(capabilities profile) to its inner engine answering (the entrypoint's "inner docker engine
ready" line, printed right after `docker info` succeeds), for a fresh /var/lib/docker volume
(first start) and a reused one; with --controller, also the time from `docker run` to the
Jenkins agent being connected to the project's Jenkins-compatible controller. Median of N.

    python3 bench/image_start.py [--runs 5] [--controller] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGE = "agentpool/dind-agent:latest"
READY_LINE = "inner docker engine ready"
CAPABILITIES = [
    "--cap-add=ALL",
    "--cap-drop=SYS_RESOURCE",
    "--security-opt=apparmor=unconfined",
    "--security-opt=seccomp=unconfined",
    "--security-opt=systempaths=unconfined",
    "--device-cgroup-rule=a *:* rwm",
]
SECTION = "## dind agent image"


def docker(*args: str) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"docker {args[0]} failed: {proc.stderr.strip()}")
    return proc.stdout


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


def logs(name: str) -> str:
    proc = subprocess.run(["docker", "logs", name], capture_output=True, text=True, check=False)
    return proc.stdout + proc.stderr


def start_to_ready(volume: str, env: dict[str, str] | None = None) -> tuple[float, str]:
    """Seconds from `docker run -d` to the inner engine answering; returns the container too."""
    name = f"agentpool-bench-{secrets.token_hex(4)}"
    run = ["run", "-d", "--name", name, *CAPABILITIES, "-v", f"{volume}:/var/lib/docker"]
    for key, value in (env or {}).items():
        run += ["-e", f"{key}={value}"]
    start = time.monotonic()
    docker(*run, IMAGE)
    wait_for(lambda: READY_LINE in logs(name), f"{name}: {READY_LINE}")
    return time.monotonic() - start, name


def median_ms(samples: list[float]) -> str:
    lo, mid, hi = (round(x * 1000) for x in (min(samples), statistics.median(samples), max(samples)))
    return f"{mid} ms (min {lo}, max {hi})"


def bench_engine(runs: int) -> dict[str, str]:
    cold: list[float] = []
    warm: list[float] = []
    for _ in range(runs):
        volume = f"agentpool-bench-{secrets.token_hex(4)}"
        docker("volume", "create", volume)
        try:
            for samples in (cold, warm):
                seconds, name = start_to_ready(volume)
                samples.append(seconds)
                docker("rm", "-f", name)
        finally:
            docker("volume", "rm", "-f", volume)
    return {
        "start → inner engine ready, new volume": median_ms(cold),
        "start → inner engine ready, reused volume": median_ms(warm),
    }


def bench_agent(runs: int) -> dict[str, str]:
    """Start → agent connected (WebSocket), against the project's controller on the host."""
    import jenkins

    sys.path.insert(0, str(REPO))
    from agentpool_testing.jenkins import Controller
    from agentpool_testing.jenkins.stub import BUILT_JAR
    from agentpool_testing.network import bridge_gateway

    if not BUILT_JAR.exists():
        subprocess.run([str(REPO / "scripts" / "build-agent-jar")], check=True, capture_output=True)
    samples: list[float] = []
    user, token = "bench", secrets.token_hex(16)
    gateway = bridge_gateway()  # the host, seen from a container on the default bridge
    with Controller(listen=f"{gateway}:0", user=user, token=token) as ctl:
        server = jenkins.Jenkins(ctl.url, username=user, password=token, timeout=10)
        for i in range(runs):
            node = f"bench-{i}-{secrets.token_hex(3)}"
            server.create_node(
                node,
                numExecutors=1,
                remoteFS="/home/jenkins/agent",
                labels="docker",
                launcher=jenkins.LAUNCHER_JNLP,
                launcher_params={"webSocket": True},
            )
            volume = f"agentpool-bench-{secrets.token_hex(4)}"
            docker("volume", "create", volume)
            name = f"agentpool-bench-{secrets.token_hex(4)}"
            env = {
                "JENKINS_URL": ctl.url,
                "JENKINS_SECRET": ctl.secret(node),
                "JENKINS_AGENT_NAME": node,
                "JENKINS_WEB_SOCKET": "true",
            }
            run = ["run", "-d", "--name", name, *CAPABILITIES, "-v", f"{volume}:/var/lib/docker"]
            for key, value in env.items():
                run += ["-e", f"{key}={value}"]
            try:
                start = time.monotonic()
                docker(*run, IMAGE)
                wait_for(lambda n=node: not server.get_node_info(n)["offline"], f"{node} connected")
                samples.append(time.monotonic() - start)
            finally:
                docker("rm", "-f", name)
                docker("volume", "rm", "-f", volume)
                server.delete_node(node)
    return {"start → Jenkins agent connected (WebSocket, new volume)": median_ms(samples)}


def write_section(path: Path, body: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if SECTION in text:
        head, rest = text.split(SECTION, 1)
        nxt = rest.find("\n## ")
        tail = rest[nxt + 1 :] if nxt >= 0 else ""
        text = head + body + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + body
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--controller", action="store_true", help="also measure start → agent connected")
    parser.add_argument("--write", type=Path, help="replace the section in this markdown file")
    args = parser.parse_args()

    size = int(docker("image", "inspect", "--format", "{{.Size}}", IMAGE))
    base_label = '{{index .Config.Labels "org.agentpool.base"}}'
    base = docker("image", "inspect", "--format", base_label, IMAGE).strip()
    results = {"image size": f"{size / 1e6:.0f} MB ({IMAGE}, FROM {base or 'unknown'})"}
    results.update(bench_engine(args.runs))
    if args.controller:
        results.update(bench_agent(args.runs))

    command = "python3 bench/image_start.py " + " ".join(sys.argv[1:])
    cpus = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    lines = [
        SECTION,
        "",
        f"Command: `{command.strip()}` (median of {args.runs}; {cpus} CPUs; "
        f"capabilities profile; measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).",
        "Start = just before `docker run -d`; engine ready = the entrypoint's `docker info` answered.",
        "",
        "| measure | result |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in results.items()),
        "",
    ]
    body = "\n".join(lines)
    print(body)
    if args.write:
        write_section(args.write, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
