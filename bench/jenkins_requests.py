"""How many Jenkins requests one agentpool pass costs when nothing changes, by number of agents.

Target: at most 2 per pass, whatever the number of agents. Runs against the project's
Jenkins-compatible controller (which counts requests per endpoint) and the local Docker engine:
each "agent" is a labelled container plus its Jenkins node, adopted by agentpool as it would
adopt real agents after a restart. Usage: python bench/jenkins_requests.py [--agents 0 10 50]
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
from pathlib import Path

import docker
import jenkins

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentpool.config import load_config_text
from agentpool.daemon import Engine
from agentpool.model import LABEL_AGENT, LABEL_INSTANCE, LABEL_POOL
from agentpool_testing.jenkins import Controller

BUSYBOX = "agentpool/busybox:latest"


def measure(agents: int, passes: int) -> tuple[float, dict[str, int]]:
    token = secrets.token_hex(8)
    instance = "b" + secrets.token_hex(3)
    client = docker.from_env()
    with Controller(listen="127.0.0.1:0", user="admin", token=token) as ctl:
        server = jenkins.Jenkins(ctl.url, username="admin", password=token)
        os.environ["AGENTPOOL_BENCH_TOKEN"] = token
        config = load_config_text(
            f"""
jenkins: {{url: "{ctl.url}", user: admin, token_env: AGENTPOOL_BENCH_TOKEN}}
instance: {instance}
metrics: {{listen: null}}
pools:
  - {{name: dind, labels: [docker], image: {BUSYBOX}, max_agents: 1000, launch_timeout: 1h, idle_timeout: 1h}}
""",
            "bench",
        )
        containers = []
        try:
            for i in range(agents):
                name = f"{instance}-dind-{i:06x}"
                server.create_node(
                    name,
                    numExecutors=1,
                    labels="docker",
                    exclusive=True,
                    launcher=jenkins.LAUNCHER_JNLP,
                    launcher_params={"webSocket": True},
                )
                labels = {LABEL_INSTANCE: instance, LABEL_POOL: "dind", LABEL_AGENT: name}
                containers.append(
                    client.containers.run(BUSYBOX, ["sleep", "600"], name=name, labels=labels, detach=True)
                )
            engine = Engine(config)
            engine.run_pass()  # adoption; python-jenkins resolves the crumb on its first request
            engine.run_pass()
            ctl.reset_counts()
            for _ in range(passes):
                report = engine.run_pass()
                assert not report.outcomes, report.outcomes
            counts = dict(ctl.request_counts)
            engine.close()
        finally:
            for c in containers:
                c.remove(force=True)
    return sum(counts.values()) / passes, counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, nargs="+", default=[0, 10, 50])
    parser.add_argument("--passes", type=int, default=10)
    args = parser.parse_args()
    print("| agents | Jenkins requests per pass | requests by endpoint (all passes) |")
    print("|---:|---:|---|")
    for n in args.agents:
        per_pass, counts = measure(n, args.passes)
        print(f"| {n} | {per_pass:.2f} | {', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))} |")


if __name__ == "__main__":
    tempfile.tempdir = None
    main()
