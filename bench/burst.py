"""Burst: N builds queued at once; queued → agent online for each, with the real daemon.

The project's controller runs in this process; ``agentpool run`` (poll 1 s) runs as a child
process, as under systemd. N freestyle builds for one pool are queued back to back; the k-th
agent to come online is matched to the k-th build queued (every agent serves one of them),
and the time between is its queued → online. Nodes are read from the controller every 20 ms.
Afterwards the daemon gets SIGTERM and the run's containers and volumes are removed.

``--reap-during N`` instead measures a new build for another pool queued while N agents whose
containers ignore SIGTERM are being reaped (each stop takes its 10 s grace).

``--floor`` measures what the engine alone needs: N containers of the same image, security
profile and a fresh volume each, created and started from N threads at once with the Docker
SDK — no Jenkins, no agentpool. Its "→ started" is the floor under agentpool's
"queued → container started" on this engine.

Run: python3 bench/burst.py --items 12 --image noop --runs 3
     python3 bench/burst.py --items 12 --image agentpool/dind-agent:latest
     python3 bench/burst.py --reap-during 12
     python3 bench/burst.py --floor --items 12 --runs 3 [--secret] [--bounded --parallel 4]
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import docker
import jenkins

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agentpool.adapters.docker import _parse_time, _secret_archive  # noqa: E402
from agentpool.security import host_config as security_host_config  # noqa: E402
from agentpool_testing.jenkins import Controller  # noqa: E402
from agentpool_testing.jobs import freestyle_xml  # noqa: E402
from agentpool_testing.network import bridge_gateway  # noqa: E402
from agentpool_testing.noop_image import build_noop_image  # noqa: E402


def config_text(url: str, instance: str, pools: list[str], parallel: int, volume: str = "per-agent") -> str:
    lines = [
        f'jenkins: {{url: "{url}", agent_url: "{url}", user: admin, token_env: AGENTPOOL_BENCH_TOKEN}}',
        f"instance: {instance}",
        "poll_interval: 1s",
        "metrics: {listen: null}",
        "docker_hosts:",
        f"  - {{name: local, url: 'unix:///var/run/docker.sock', max_agents: 100, max_parallel_launches: {parallel}}}",
        "pools:",
    ]
    lines += [
        f"  - {{{p}, security: capabilities, cap_drop: [SYS_RESOURCE], docker_volume: {volume}}}"
        for p in pools
    ]
    return "\n".join(lines) + "\n"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Run:
    """One daemon against one controller, with its own instance name; cleans up after itself."""

    def __init__(self, config: str, tmp: Path, token: str) -> None:
        self.path = tmp / "agentpool.yaml"
        self.path.write_text(config)
        self.log = tmp / "daemon.log"
        env = {**os.environ, "AGENTPOOL_BENCH_TOKEN": token, "PYTHONPATH": str(REPO)}
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "agentpool", "run", "--config", str(self.path)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"),
        )

    def stop(self) -> None:
        if os.environ.get("BURST_KEEP_LOG"):
            Path(os.environ["BURST_KEEP_LOG"]).write_bytes(self.log.read_bytes())
        self.daemon.send_signal(signal.SIGTERM)
        try:
            self.daemon.wait(120)
        except subprocess.TimeoutExpired:
            self.daemon.kill()


def cleanup(client: docker.DockerClient, instance: str) -> None:
    label = f"agentpool.instance={instance}"
    for c in client.api.containers(all=True, filters={"label": label}):
        client.api.remove_container(c["Id"], force=True, v=True)
    for v in client.api.volumes(filters={"label": label})["Volumes"] or []:
        client.api.remove_volume(v["Name"], force=True)


def online_agents(ctl: Controller, instance: str) -> dict[str, bool]:
    return {n["name"]: not n["offline"] for n in ctl.nodes() if n["name"].startswith(instance)}


def burst(
    client: docker.DockerClient, image: str, items: int, parallel: int, volume: str
) -> tuple[list[float], list[float]]:
    """Queued → online per agent, and queued → its launch done (container started)."""
    token, instance = secrets.token_hex(8), "b" + secrets.token_hex(3)
    pool = (
        f'name: p, labels: [burst], image: "{image}", max_agents: 100, idle_timeout: 10m, launch_timeout: 5m'
    )
    with (
        Controller(listen=f"{bridge_gateway(client)}:0", user="admin", token=token) as ctl,
        tempfile.TemporaryDirectory() as tmp,
    ):
        server = jenkins.Jenkins(ctl.url, username="admin", password=token)
        for i in range(items):
            server.create_job(f"j{i}", freestyle_xml("burst", "true"))
        run = Run(config_text(ctl.url, instance, [pool], parallel, volume), Path(tmp), token)
        try:
            time.sleep(3)  # the daemon is up and has passed once over an empty queue
            queued, queued_wall = [], []
            for i in range(items):
                server.build_job(f"j{i}")
                queued.append(time.monotonic())
                queued_wall.append(time.time())
            online: dict[str, float] = {}
            deadline = time.monotonic() + 60 + items * 6
            while len(online) < items:
                if time.monotonic() > deadline:
                    raise SystemExit(f"only {len(online)} of {items} agents online; see {run.log}")
                now = time.monotonic()
                for name, up in online_agents(ctl, instance).items():
                    if up and name not in online:
                        online[name] = now
                time.sleep(0.02)
            started = sorted(started_at(client, instance))
        finally:
            run.stop()
            cleanup(client, instance)
    launched = [t - q for t, q in zip(started, queued_wall, strict=False)]
    return [t - q for t, q in zip(sorted(online.values()), queued, strict=True)], launched


def started_at(client: docker.DockerClient, instance: str) -> list[float]:
    """When the engine started each agent container of the run (``State.StartedAt``): the end of
    agentpool's part of a launch. The daemon's "provisioned" line comes later, when the next
    pass folds the outcome in."""
    times = []
    for c in client.api.containers(all=True, filters={"label": f"agentpool.instance={instance}"}):
        times.append(_parse_time(client.api.inspect_container(c["Id"])["State"]["StartedAt"]))
    return times


def reap_during(client: docker.DockerClient, agents: int, parallel: int) -> tuple[float, float]:
    """Seconds from queueing the new build to its agent online, and the reap's length."""
    token, instance = secrets.token_hex(8), "r" + secrets.token_hex(3)
    deaf, noop = build_noop_image(client, sigterm_deaf=True), build_noop_image(client)
    pools = [
        f'name: deaf, labels: [deaf], image: "{deaf}", max_agents: 100, idle_timeout: 3s, stop_timeout: 10s',
        f'name: fresh, labels: [fresh], image: "{noop}", max_agents: 5',
    ]
    with (
        Controller(listen=f"{bridge_gateway(client)}:0", user="admin", token=token) as ctl,
        tempfile.TemporaryDirectory() as tmp,
    ):
        server = jenkins.Jenkins(ctl.url, username="admin", password=token)
        for i in range(agents):
            server.create_job(f"d{i}", freestyle_xml("deaf", "true"))
        server.create_job("new", freestyle_xml("fresh", "true"))
        run = Run(config_text(ctl.url, instance, pools, parallel), Path(tmp), token)
        try:
            for i in range(agents):
                server.build_job(f"d{i}")
            deadline = time.monotonic() + 180
            while sum(online_agents(ctl, instance).values()) < agents:
                assert time.monotonic() < deadline, "the deaf agents did not come online"
                time.sleep(0.1)
            # the reap starts when the first deaf agent's node is deleted (then its container stops)
            while len(online_agents(ctl, instance)) == agents:
                assert time.monotonic() < deadline, "no reap started"
                time.sleep(0.02)
            reap_start = time.monotonic()
            server.build_job("new")
            queued = time.monotonic()
            fresh_online = None
            label = "agentpool.pool=deaf"
            while True:
                now = time.monotonic()
                if fresh_online is None and any(
                    up and "-fresh-" in name for name, up in online_agents(ctl, instance).items()
                ):
                    fresh_online = now - queued
                stopping = client.api.containers(
                    all=True, filters={"label": [label, f"agentpool.instance={instance}"]}
                )
                if fresh_online is not None and not stopping:
                    return fresh_online, now - reap_start
                assert now < deadline + 120, "the reap did not end"
                time.sleep(0.05)
        finally:
            run.stop()
            cleanup(client, instance)


def floor(client: docker.DockerClient, image: str, items: int, bound: int, secret: bool) -> list[float]:
    """Seconds from the request to each container started, N at once (at most ``bound`` in
    flight), the engine alone; with ``secret`` a file is copied in before the start, as a
    launch does with the agent's secret."""
    instance = "f" + secrets.token_hex(3)
    labels = {"agentpool.instance": instance}
    api = client.api
    done: list[float] = []
    lock = threading.Lock()

    slots = threading.Semaphore(bound)

    def one(index: int, go: threading.Event) -> None:
        name = f"{instance}-{index}"
        go.wait()
        begun = time.monotonic()
        with slots:
            launch(name)
        with lock:
            done.append(time.monotonic() - begun)

    def launch(name: str) -> None:
        api.create_volume(f"{name}-docker", labels=labels)
        host_config = security_host_config(
            api,
            "capabilities",
            ["SYS_RESOURCE"],
            binds={f"{name}-docker": {"bind": "/var/lib/docker", "mode": "rw"}},
            restart_policy={"Name": "no"},
        )
        created = api.create_container(image=image, name=name, labels=labels, host_config=host_config)
        if secret:
            api.put_archive(created["Id"], "/", _secret_archive("/run/agentpool/jenkins-secret", "0" * 64))
        api.start(created["Id"])

    go = threading.Event()
    threads = [threading.Thread(target=one, args=(i, go)) for i in range(items)]
    try:
        for thread in threads:
            thread.start()
        go.set()
        for thread in threads:
            thread.join(120)
    finally:
        cleanup(client, instance)
    if len(done) != items:
        raise SystemExit(f"only {len(done)} of {items} containers started")
    return done


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=12)
    parser.add_argument("--image", default="noop", help="'noop' (agentpool's own cost) or an image tag")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--parallel", type=int, default=4, help="docker_hosts[].max_parallel_launches")
    parser.add_argument("--volume", default="per-agent", choices=("per-agent", "reuse"))
    parser.add_argument("--reap-during", type=int, default=0, metavar="N")
    parser.add_argument("--floor", action="store_true", help="the engine alone: N containers started at once")
    parser.add_argument("--bounded", action="store_true", help="--floor: at most --parallel at once")
    parser.add_argument("--secret", action="store_true", help="--floor: copy a file in before each start")
    args = parser.parse_args()
    client = docker.from_env()
    if args.floor:
        image = build_noop_image(client) if args.image == "noop" else args.image
        starts: list[float] = []
        for run in range(args.runs):
            samples = floor(
                client, image, args.items, args.parallel if args.bounded else args.items, args.secret
            )
            starts += samples
            print(
                f"run {run + 1}: the engine alone, {args.items} containers of {image} at once"
                f"{f' (at most {args.parallel})' if args.bounded else ''}{', secret copied in' if args.secret else ''}, "
                f"load {os.getloadavg()[0]:.1f}: request → started {summary(samples)}",
                flush=True,
            )
        if args.runs > 1:
            print(f"all {args.runs} runs: request → started {summary(starts)}")
        return
    if args.reap_during:
        for run in range(args.runs):
            waited, reap = reap_during(client, args.reap_during, args.parallel)
            print(
                f"run {run + 1}: new item for another pool during a reap of {args.reap_during} SIGTERM-deaf "
                f"agents: queued → online {waited:.2f} s (the reap took {reap:.1f} s)",
                flush=True,
            )
        return
    image = build_noop_image(client) if args.image == "noop" else args.image
    everything: list[float] = []
    launches: list[float] = []
    for run in range(args.runs):
        samples, launched = burst(client, image, args.items, args.parallel, args.volume)
        everything += samples
        launches += launched
        print(
            f"run {run + 1}: {args.items} items, {image}, parallel {args.parallel}, load {os.getloadavg()[0]:.1f}: "
            f"queued → online {summary(samples)}; queued → container started {summary(launched)}",
            flush=True,
        )
    if args.runs > 1:
        print(f"all {args.runs} runs: queued → online {summary(everything)}; → started {summary(launches)}")


def summary(samples: list[float]) -> str:
    return f"p50 {statistics.median(samples):.2f} s, p95 {percentile(samples, 0.95):.2f} s, max {max(samples):.2f} s"


if __name__ == "__main__":
    main()
