"""Queued → node online with the real dind image on this machine: p50 and p95 of N runs.

Each run queues one freestyle build for `docker` and runs one agentpool pass at once: it sees
the item and submits the launch (``wait=False``: the launch runs on its lane, as in the
daemon). Jenkins' nodes are then read every 20 ms until the agent is online. Recorded per run:
queued → online, and how long the pass that saw the item took (observe + plan + submit), so
that "online within 1.0 s plus the pass that sees the item" can be read off. The agent is
then reaped (passes every 0.5 s) before the next run, so every run is a cold start of one agent.
Usage: python bench/provision_latency.py [--runs 10] [--image IMAGE] [--volume reuse]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time
from pathlib import Path

import jenkins

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentpool.config import load_config_text
from agentpool.daemon import Engine
from agentpool.model import Provision
from agentpool_testing.jenkins import Controller
from agentpool_testing.jobs import freestyle_xml
from agentpool_testing.network import bridge_gateway


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--image", default="agentpool/dind-agent:latest")
    parser.add_argument("--volume", default="per-agent", choices=("per-agent", "reuse"))
    args = parser.parse_args()
    token = secrets.token_hex(8)
    instance = "l" + secrets.token_hex(3)
    os.environ["AGENTPOOL_BENCH_TOKEN"] = token
    samples: list[float] = []
    passes: list[float] = []
    with Controller(listen=f"{bridge_gateway()}:0", user="admin", token=token) as ctl:
        config = load_config_text(
            f"""
jenkins: {{url: "{ctl.url}", agent_url: "{ctl.url}", user: admin, token_env: AGENTPOOL_BENCH_TOKEN}}
instance: {instance}
poll_interval: 0.5s
metrics: {{listen: null}}
pools:
  - {{name: dind, labels: [docker], image: "{args.image}", security: capabilities, docker_volume: {args.volume},
      cap_drop: [SYS_RESOURCE], max_agents: 1, idle_timeout: 1s, launch_timeout: 2m}}
""",
            "bench",
        )
        server = jenkins.Jenkins(ctl.url, username="admin", password=token)
        engine = Engine(config)
        try:
            for run in range(args.runs):
                job = f"j{run}"
                server.create_job(job, freestyle_xml("docker", "true"))
                queued = time.monotonic()
                server.build_job(job)
                report = engine.run_pass(wait=False)
                if not any(a.pool == "dind" for a in report.plan.actions if isinstance(a, Provision)):
                    raise SystemExit(f"the pass that saw the item did not provision: {report.plan}")
                online = None
                while online is None:
                    if any(n["name"].startswith(instance) and not n["offline"] for n in ctl.nodes()):
                        online = time.monotonic() - queued
                        break
                    if time.monotonic() - queued > 180:
                        raise SystemExit("agent did not come online within 180 s")
                    time.sleep(0.02)
                samples.append(online)
                passes.append(report.duration)
                print(
                    f"run {run + 1}: queued → online {online:.2f} s (the pass that saw it: "
                    f"{report.duration * 1000:.0f} ms)",
                    flush=True,
                )
                engine.executor.wait()
                while engine.memory.agents or any(n["name"].startswith(instance) for n in server.get_nodes()):
                    engine.run_pass()
                    time.sleep(0.5)
        finally:
            engine.close()
            # a reuse pool keeps its free volume as a warm cache: this run's go with it
            import docker

            client = docker.from_env()
            for v in client.api.volumes(filters={"label": f"agentpool.instance={instance}"})["Volumes"] or []:
                client.api.remove_volume(v["Name"], force=True)
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    print(
        f"queued → online over {len(samples)} runs: p50 {statistics.median(samples):.2f} s, "
        f"p95 {p95:.2f} s, min {ordered[0]:.2f} s, max {ordered[-1]:.2f} s; "
        f"the pass that saw the item: median {statistics.median(passes) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
