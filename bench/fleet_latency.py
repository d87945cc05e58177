"""Queued → agent online with three TLS Docker hosts: p50 and p95 per agent over N runs.

Brings up the test fleet (three engines in PORT mode, each in its own network namespace, mutual
TLS with certificates made here: tests/fleet/conftest.py), builds the no-op agent image and
copies it into each engine, then per run queues one freestyle build per host at once, runs
agentpool passes every 0.5 s until the three agents are online, and records, per agent, the
time from its build's ``build_job`` to Jenkins showing the node online (and which host it ran
on). The agents are reaped before the next run: every run is three cold starts at once.
Usage: python bench/fleet_latency.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import jenkins

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentpool.adapters.docker import DockerHost
from agentpool.config import load_config_text
from agentpool.daemon import Engine
from agentpool_testing.jenkins import Controller
from agentpool_testing.jenkins.stub import BUILT_JAR
from agentpool_testing.jobs import freestyle_xml
from tests.fleet import conftest as fleet_setup
from tests.fleet.certs import CertificateAuthority
from tests.fleet.noop_image import build_noop_image

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def bring_up(client: docker.DockerClient, root: Path, suffix: str) -> fleet_setup.Fleet:
    network = f"agentpool-fleet-{suffix}"
    gateway, addresses = fleet_setup._create_network(client, network, suffix)
    ca = CertificateAuthority()
    (root / "ca.pem").write_bytes(ca.pem)
    certs = ca.issue(root / "client", "agentpool")
    names = [f"fleet-{i + 1}" for i in range(fleet_setup.SIZE)]
    servers = [
        ca.issue(root / "server" / n, n, server_ips=(ip, "127.0.0.1"))
        for n, ip in zip(names, addresses, strict=True)
    ]
    engines = []
    for name, ip, server in zip(names, addresses, servers, strict=True):
        container = fleet_setup._start_engine(client, network, ip, name, suffix, server)
        engines.append(fleet_setup.FleetEngine(name, container, container, ip, certs))
    for engine in engines:
        fleet_setup._wait_engine(engine, client)
    local = DockerHost("local", fleet_setup.local_url())
    return fleet_setup.Fleet(engines, network, gateway, root / "ca.pem", certs, local, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    client = docker.from_env()
    suffix = secrets.token_hex(3)
    root = Path(tempfile.mkdtemp(prefix=f"agentpool-bench-fleet-{suffix}-"))
    jar = BUILT_JAR
    if not jar.exists():
        subprocess.run([str(REPO / "scripts/build-agent-jar")], check=True, capture_output=True)
    samples: list[float] = []
    per_host: dict[str, int] = {}
    try:
        fleet = bring_up(client, root, suffix)
        image = build_noop_image(client, jar)
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda e: fleet.ensure_image(e, image), fleet.engines))
        token, port = secrets.token_hex(8), free_port()
        instance = "b" + secrets.token_hex(3)
        os.environ["AGENTPOOL_BENCH_TOKEN"] = token
        url = f"http://{fleet.gateway}:{port}/"
        with Controller(listen=f"0.0.0.0:{port}", user="admin", token=token, url=url, quiet_period=0) as ctl:
            config = load_config_text(
                f"""
jenkins: {{url: "http://127.0.0.1:{port}/", agent_url: "{ctl.url}", user: admin, token_env: AGENTPOOL_BENCH_TOKEN}}
instance: {instance}
poll_interval: 0.5s
metrics: {{listen: null}}
{fleet.docker_hosts_yaml(max_agents=1)}
pools:
  - {{name: noop, labels: [noop], image: "{image}", security: capabilities,
      cap_drop: [SYS_RESOURCE], max_agents: 3, idle_timeout: 2s, launch_timeout: 2m}}
""",
                "bench",
            )
            server = jenkins.Jenkins(f"http://127.0.0.1:{port}/", username="admin", password=token)
            engine = Engine(config)
            try:
                for run in range(args.runs):
                    jobs = [f"j{run}-{i}" for i in range(3)]
                    for job in jobs:
                        server.create_job(job, freestyle_xml("noop", "true"))
                    queued = time.monotonic()
                    for job in jobs:
                        server.build_job(job)
                    online: dict[str, float] = {}
                    hosts: dict[str, str] = {}
                    while len(online) < 3:
                        engine.run_pass()
                        for node in server.get_nodes():
                            name = node["name"]
                            if name.startswith(instance) and not node["offline"] and name not in online:
                                online[name] = time.monotonic() - queued
                                agent = engine.memory.agents.get(name)
                                hosts[name] = agent.host if agent else "?"
                        if time.monotonic() - queued > 180:
                            raise SystemExit("agents did not come online within 180 s")
                        if len(online) < 3:
                            time.sleep(0.5)
                    for name, seconds in online.items():
                        samples.append(seconds)
                        per_host[hosts.get(name, "?")] = per_host.get(hosts.get(name, "?"), 0) + 1
                    line = ", ".join(f"{hosts.get(n, '?')} {s:.2f} s" for n, s in sorted(online.items()))
                    print(f"run {run + 1}: queued → online {line}", flush=True)
                    while engine.memory.agents or any(
                        n["name"].startswith(instance) for n in server.get_nodes()
                    ):
                        engine.run_pass()
                        time.sleep(0.5)
            finally:
                engine.close()
    finally:
        fleet_setup._cleanup(client, suffix)
        shutil.rmtree(root, ignore_errors=True)
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    print(
        f"queued → online, 3 hosts, 3 agents at once, {len(samples)} agents over {args.runs} runs: "
        f"p50 {statistics.median(samples):.2f} s, p95 {p95:.2f} s, min {ordered[0]:.2f} s, "
        f"max {ordered[-1]:.2f} s; agents per host {dict(sorted(per_host.items()))}"
    )


if __name__ == "__main__":
    main()
