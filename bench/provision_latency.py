"""Queued → node online with the real dind image on this machine: p50 and p95 of N runs.

Each run queues one freestyle build for `docker`, runs agentpool passes (poll every 0.5 s)
until Jenkins shows the agent online, and records the time from `build_job` to that moment.
The agent is then reaped before the next run, so every run is a cold start of one agent.
Usage: python bench/provision_latency.py [--runs 10]
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
from agentpool_testing.jenkins import Controller
from agentpool_testing.jobs import freestyle_xml
from agentpool_testing.network import bridge_gateway


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    token = secrets.token_hex(8)
    instance = "l" + secrets.token_hex(3)
    os.environ["AGENTPOOL_BENCH_TOKEN"] = token
    samples: list[float] = []
    with Controller(listen=f"{bridge_gateway()}:0", user="admin", token=token) as ctl:
        config = load_config_text(
            f"""
jenkins: {{url: "{ctl.url}", agent_url: "{ctl.url}", user: admin, token_env: AGENTPOOL_BENCH_TOKEN}}
instance: {instance}
poll_interval: 0.5s
metrics: {{listen: null}}
pools:
  - {{name: dind, labels: [docker], image: "agentpool/dind-agent:latest", security: capabilities,
      cap_drop: [SYS_RESOURCE], max_agents: 1, idle_timeout: 0.5s, launch_timeout: 2m}}
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
                online = None
                while online is None:
                    engine.run_pass()
                    for node in server.get_nodes():
                        if node["name"].startswith(instance) and not node["offline"]:
                            online = time.monotonic() - queued
                    if online is None:
                        time.sleep(0.5)
                    if time.monotonic() - queued > 180:
                        raise SystemExit("agent did not come online within 180 s")
                samples.append(online)
                print(f"run {run + 1}: queued → online {online:.2f} s", flush=True)
                while engine.memory.agents or any(n["name"].startswith(instance) for n in server.get_nodes()):
                    engine.run_pass()
                    time.sleep(0.5)
        finally:
            engine.close()
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    print(
        f"queued → online over {len(samples)} runs: p50 {statistics.median(samples):.2f} s, "
        f"p95 {p95:.2f} s, min {ordered[0]:.2f} s, max {ordered[-1]:.2f} s"
    )


if __name__ == "__main__":
    main()
