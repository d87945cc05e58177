"""Invariants of the planner over many random situations: caps hold, busy agents are never
reaped, nothing is started for a pool in backoff or draining, names and leases are unique."""

from __future__ import annotations

import random

import pytest

from agentpool.model import ContainerState, Memory, PoolMemory, Provision, Reap, Reason
from agentpool.planner import plan
from tests.unit.planner_builders import T0, config, container, item, known, node, observed, volume

LABELS = ["docker&&linux", "docker", "", "gpu", "docker&&big", "windows", None]


@pytest.mark.parametrize("seed", range(150))
def test_random_situations_keep_the_invariants(seed: int) -> None:
    rng = random.Random(seed)
    hosts = [{"name": f"h{h}", "url": f"unix:///{h}", "max_agents": rng.randint(0, 6)} for h in range(2)]
    pools = [
        {"name": "dind", "max_agents": rng.randint(0, 5), "min_idle": 0, "exclusive": rng.random() < 0.5},
        {
            "name": "big",
            "labels": ["docker", "linux", "big"],
            "max_agents": rng.randint(1, 4),
            "executors": rng.randint(1, 2),
            "one_shot": rng.random() < 0.3,
            "docker_volume": "reuse",
        },
    ]
    for pool in pools:
        pool["min_idle"] = rng.randint(0, pool["max_agents"])
    cfg = config(*pools, hosts=hosts)
    mem = Memory(pools={p.name: PoolMemory() for p in cfg.pools})
    if rng.random() < 0.3:
        mem.pools["dind"].backoff_until = T0 + 10
    if rng.random() < 0.2:
        mem.pools["big"].draining = True
    containers, nodes, vols = [], [], []
    host_load = {h["name"]: 0 for h in hosts}
    pool_load = {p.name: 0 for p in cfg.pools}
    for n in range(rng.randint(0, 8)):
        pool = rng.choice(cfg.pools)
        host = rng.choice(hosts)["name"]
        if pool_load[pool.name] >= pool.max_agents or host_load[host] >= next(
            h["max_agents"] for h in hosts if h["name"] == host
        ):
            continue
        name = f"ap-{pool.name}-{n:06x}"
        state = rng.choice([ContainerState.RUNNING] * 4 + [ContainerState.EXITED])
        containers.append(container(name, pool=pool.name, host=host, state=state))
        online = rng.random() < 0.8
        busy = rng.randint(0, pool.executors) if online else 0
        nodes.append(
            node(
                name,
                tuple(pool.labels),
                online=online,
                busy=busy,
                executors=pool.executors,
                temp_offline=False,
            )
        )
        if rng.random() < 0.9:
            mem.agents[name] = known(
                name,
                pool=pool.name,
                host=host,
                online_at=T0 - 100 if online else None,
                launched_at=T0 - rng.choice([10, 1000]),
                idle_since=None if busy else T0 - rng.choice([5, 500]),
                builds_started=rng.randint(0, 1),
            )
        pool_load[pool.name] += 1
        host_load[host] += 1
    for n in range(rng.randint(0, 4)):
        vols.append(volume(f"ap-big-f{n:05x}-docker", pool="big", host=rng.choice(hosts)["name"], free=True))
    queue = [item(i, rng.choice(LABELS)) for i in range(rng.randint(0, 15))]
    obs = observed(queue, nodes, containers, vols, hosts=("h0", "h1"))
    p, _ = plan(obs, cfg, mem, T0)

    by_name = {n.name: n for n in nodes}
    running = {c.agent for c in containers if c.state is ContainerState.RUNNING}
    new = [a for a in p.actions if isinstance(a, Provision)]
    gone = {
        a.agent for a in p.actions if isinstance(a, Reap) and a.reason in (Reason.LOST, Reason.LAUNCH_TIMEOUT)
    }
    for reap in (a for a in p.actions if isinstance(a, Reap)):
        node_ = by_name.get(reap.agent)
        if node_ is not None and node_.busy and reap.agent in running:
            pytest.fail(f"busy agent reaped: {reap}")
    for pool in cfg.pools:
        mine = [a for a in new if a.pool == pool.name]
        existing = sum(1 for a in mem.agents.values() if a.pool == pool.name and a.name not in gone)
        assert existing + len(mine) <= max(pool.max_agents, existing)
        state = mem.pools[pool.name]
        if state.draining or state.backoff_until > T0:
            assert mine == []
    for h in hosts:
        on_host = sum(1 for c in containers if c.host == h["name"] and c.agent not in gone)
        assert on_host + sum(1 for a in new if a.host == h["name"]) <= max(h["max_agents"], on_host)
    names = [a.agent for a in new]
    assert len(set(names)) == len(names)
    assert not set(names) & ({n.name for n in nodes} | {c.agent for c in containers})
    leases = [a.lease_volume for a in new if a.lease_volume]
    assert len(set(leases)) == len(leases)
    assert all(a.pool == "big" for a in new if a.lease_volume)
