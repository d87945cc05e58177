"""How long one planner pass takes at scale: 10,000 queued items, 1,000 agents, 20 pools.

The planner runs every poll interval on the daemon's thread; the target is < 50 ms.
Run: python3 bench/planner_bench.py [--runs N]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentpool.config import Config
from agentpool.model import (
    AgentMemory,
    Container,
    ContainerState,
    Executor,
    HostView,
    ItemKind,
    Memory,
    Node,
    Observed,
    QueueItem,
    Volume,
)
from agentpool.planner import plan

NOW = 1_700_000_000.0
POOLS = 20
HOSTS = 5
AGENTS = 1_000
ITEMS = 10_000
EXTRA_LABELS = ["x86", "arm", "gpu", "big", "jdk17", "jdk21", "py3", "node", "go", "rust"]


def scenario(seed: int = 1) -> tuple[Observed, Config, Memory]:
    rng = random.Random(seed)
    pools = []
    for p in range(POOLS):
        labels = ["docker", "linux", *rng.sample(EXTRA_LABELS, 1 + p % 3), f"pool{p}"]
        pools.append(
            {
                "name": f"pool{p}",
                "labels": labels,
                "image": "agentpool/dind-agent:latest",
                "max_agents": 100,
                "min_idle": p % 3,
                "executors": 1 + p % 2,
                "exclusive": p % 4 != 0,
                "docker_volume": "reuse" if p % 5 == 0 else "per-agent",
                "one_shot": p % 7 == 0,
            }
        )
    config = Config.model_validate(
        {
            "jenkins": {"url": "http://j:8080/", "user": "u", "token": "t"},
            "instance": "ap",
            "docker_hosts": [
                {"name": f"h{h}", "url": f"tcp://h{h}:2375", "max_agents": 300} for h in range(HOSTS)
            ],
            "pools": pools,
        }
    )
    containers: dict[str, list[Container]] = {f"h{h}": [] for h in range(HOSTS)}
    volumes: dict[str, list[Volume]] = {f"h{h}": [] for h in range(HOSTS)}
    nodes: list[Node] = []
    memory = Memory()
    for a in range(AGENTS):
        pool = config.pools[a % POOLS]
        host = f"h{a % HOSTS}"
        name = f"ap-{pool.name}-{a:06x}"
        state = rng.random()
        online = state > 0.05
        busy = online and state > 0.4
        containers[host].append(
            Container(host, f"c{a}", name, name, pool.name, ContainerState.RUNNING, NOW - 600)
        )
        volumes[host].append(Volume(host, f"{name}-docker", pool.name, name, False, NOW - 600, NOW - 600))
        executors = tuple(Executor(idle=not busy or i > 0) for i in range(pool.executors))
        nodes.append(Node(name, frozenset({name, *pool.labels}), not online, False, "", executors))
        memory.agents[name] = AgentMemory(
            name, pool.name, host, NOW - 600, NOW - 500 if online else None, None if busy else NOW - 100
        )
    for s in range(50):  # static agents not ours
        labels = {"linux", *rng.sample(EXTRA_LABELS, 2)}
        nodes.append(
            Node(f"static-{s}", frozenset({f"static-{s}", *labels}), False, False, "", (Executor(False),))
        )
    expressions = [
        "docker",
        "docker&&linux",
        "",
        *(f"docker&&{label}" for label in EXTRA_LABELS),
        *(f"pool{p}" for p in range(POOLS)),
        "linux&&(gpu||big)&&!arm",
        "windows",
    ]
    kinds = [ItemKind.BUILDABLE] * 8 + [ItemKind.BLOCKED, ItemKind.WAITING]
    queue = tuple(
        QueueItem(i, rng.choice(kinds), f"job-{i}", "", NOW - rng.random() * 3600, rng.choice(expressions))
        for i in range(ITEMS)
    )
    hosts = tuple(HostView(h, True, tuple(containers[h]), tuple(volumes[h])) for h in sorted(containers))
    return Observed(queue, tuple(nodes), hosts), config, memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    observed, config, memory = scenario()
    plan(observed, config, memory, NOW)  # warm the label-parsing cache
    wall: list[float] = []
    cpu: list[float] = []
    result = None
    for _ in range(args.runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        result, _ = plan(observed, config, memory, NOW)
        cpu.append((time.process_time() - start_cpu) * 1000)
        wall.append((time.perf_counter() - start) * 1000)
    assert result is not None
    print(
        f"planner: {ITEMS} queued items, {AGENTS} agents, {POOLS} pools, {HOSTS} hosts; "
        f"{len(result.actions)} actions, {len(result.unserved)} unserved"
    )
    # CPU time is what the pass costs; wall time also shows waiting for a busy machine's CPUs.
    for what, times in (("wall", wall), ("cpu", cpu)):
        times.sort()
        print(
            f"{what}: median {statistics.median(times):.1f} ms, min {times[0]:.1f} ms, "
            f"max {times[-1]:.1f} ms over {args.runs} runs"
        )


if __name__ == "__main__":
    main()
