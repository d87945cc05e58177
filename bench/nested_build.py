"""A nested `docker build` in a fresh agent: cold, and on a reused volume (the warm layer cache).

Each run starts a fresh dind agent container (the agent image in command mode, capabilities
profile) on a /var/lib/docker volume and times, inside it, ``docker build`` of a multi-layer
Dockerfile: FROM busybox (loaded into the inner engine first: no registry here), then six RUN
layers that write and checksum 8-48 MB each, as compiling and installing steps do. Cold: a new
volume every time. Warm: the same volume again after the first agent was removed — what a
``docker_volume: reuse`` pool leases to its next agent. The ratio is cold / warm.

Run: python3 bench/nested_build.py [--runs 3] [--image agentpool/dind-agent:latest]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import subprocess
import sys
import time

BUSYBOX = "agentpool/busybox:latest"
CAPABILITIES = [
    "--cap-add=ALL",
    "--cap-drop=SYS_RESOURCE",
    "--security-opt=apparmor=unconfined",
    "--security-opt=seccomp=unconfined",
    "--security-opt=systempaths=unconfined",
    "--device-cgroup-rule=a *:* rwm",
]
LAYERS = [8, 16, 24, 32, 40, 48]  # MB written by each RUN
DOCKERFILE = "FROM busybox:bench\n" + "".join(
    f"RUN dd if=/dev/urandom of=/layer{i} bs=1M count={mb} 2>/dev/null && md5sum /layer{i} > /layer{i}.md5\n"
    for i, mb in enumerate(LAYERS)
)
# Inside the agent: the base image, then the timed build (seconds on the last line).
SCRIPT = f"""set -e
docker image inspect busybox:bench >/dev/null 2>&1 || docker load -q < /busybox.tar >/dev/null
docker image inspect busybox:bench >/dev/null 2>&1 || docker tag {BUSYBOX} busybox:bench
mkdir -p /tmp/ctx && cat > /tmp/ctx/Dockerfile <<'EOF'
{DOCKERFILE}EOF
start=$(date +%s.%N)
docker build -q -t bench:nested /tmp/ctx >/dev/null
end=$(date +%s.%N)
echo "$start $end" | awk '{{printf "%.3f\\n", $2 - $1}}'
"""


def docker(*args: str, stdin: bytes | None = None, timeout: float = 600) -> str:
    proc = subprocess.run(["docker", *args], input=stdin, capture_output=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"docker {' '.join(args[:3])} failed: {proc.stderr.decode(errors='replace')[-800:]}")
    return proc.stdout.decode()


def logs(name: str) -> str:
    proc = subprocess.run(["docker", "logs", name], capture_output=True, check=False)
    return (proc.stdout + proc.stderr).decode(errors="replace")


def build_in_agent(image: str, volume: str, busybox_tar: bytes) -> float:
    name = f"agentpool-nested-{secrets.token_hex(4)}"
    docker(
        "run", "-d", "--name", name, *CAPABILITIES, "-v", f"{volume}:/var/lib/docker", image, "sleep", "3600"
    )
    try:
        deadline = time.monotonic() + 120
        while "inner docker engine ready" not in logs(name):
            if time.monotonic() > deadline:
                raise SystemExit(f"{name}: the inner engine did not start:\n{logs(name)[-800:]}")
            time.sleep(0.1)
        docker("exec", "-i", name, "sh", "-c", "cat > /busybox.tar", stdin=busybox_tar)
        out = docker("exec", name, "bash", "-c", SCRIPT)
        return float(out.strip().splitlines()[-1])
    finally:
        docker("rm", "-f", name)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--image", default="agentpool/dind-agent:latest")
    args = parser.parse_args()
    busybox_tar = subprocess.run(["docker", "save", BUSYBOX], capture_output=True, check=True).stdout
    cold: list[float] = []
    warm: list[float] = []
    for run in range(args.runs):
        volume = f"agentpool-nested-{secrets.token_hex(4)}"
        docker("volume", "create", volume)
        try:
            cold.append(build_in_agent(args.image, volume, busybox_tar))
            warm.append(build_in_agent(args.image, volume, busybox_tar))  # a new agent, the same volume
        finally:
            docker("volume", "rm", "-f", volume)
        print(f"run {run + 1}: cold {cold[-1]:.2f} s, warm {warm[-1]:.2f} s", flush=True)
    c, w = statistics.median(cold), statistics.median(warm)
    print(
        f"nested docker build of {len(LAYERS)} RUN layers ({sum(LAYERS)} MB) in a fresh agent, median of "
        f"{args.runs}: cold {c:.2f} s, reused volume {w:.2f} s, ratio {c / w:.1f}x"
    )


if __name__ == "__main__":
    sys.exit(main())
