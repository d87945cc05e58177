"""The planner over several docker hosts: placement by room, budgets, tags, images, health
(cooldowns per host and pool), drained, removed and lost hosts."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from agentpool.config import ConfigError, load_config_text
from agentpool.model import (
    Memory,
    Observed,
    Plan,
    Provision,
    Reap,
    Reason,
    RemoveOrphan,
    ResourceKind,
    UnservedReason,
)
from agentpool.planner import plan, record_launch_failure, set_host_draining
from tests.unit.planner_builders import (
    T0,
    agent_name,
    config,
    container,
    items,
    known,
    memory,
    node,
    observed,
)

HOSTS3 = ("h1", "h2", "h3")


def hosts(*specs: dict[str, Any], max_agents: int = 2) -> list[dict[str, Any]]:
    names = [f"h{i + 1}" for i in range(len(specs))]
    return [
        {"name": n, "url": f"unix:///{n}", "max_agents": max_agents, **s}
        for n, s in zip(names, specs, strict=True)
    ]


def provisions(p: Plan) -> list[Provision]:
    return [a for a in p.actions if isinstance(a, Provision)]


def with_images(obs: Observed, images: dict[str, frozenset[str]]) -> Observed:
    views = tuple(replace(v, images=images[v.name]) if v.name in images else v for v in obs.hosts)
    return replace(obs, hosts=views)


def test_agents_spread_over_the_hosts_by_room_ties_in_config_order() -> None:
    cfg = config({"max_agents": 10}, hosts=hosts({}, {}, {}))
    p, _ = plan(observed(items(6), hosts=HOSTS3), cfg, Memory(), T0)
    assert [a.host for a in provisions(p)] == ["h1", "h2", "h3", "h1", "h2", "h3"]
    assert all(a.planned_at == T0 for a in provisions(p))


def test_the_host_with_most_room_gets_the_agent_counting_what_runs_there() -> None:
    cfg = config({"max_agents": 10}, hosts=hosts({"max_agents": 4}, {"max_agents": 4}))
    a1, a2 = agent_name("dind", 1), agent_name("dind", 2)
    mem = memory(known(a1, host="h1"), known(a2, host="h1"))
    obs = observed(
        items(4), [node(a1, busy=1), node(a2, busy=1)], [container(a1), container(a2)], hosts=("h1", "h2")
    )
    p, _ = plan(obs, cfg, mem, T0)
    assert [a.host for a in provisions(p)] == ["h2", "h2", "h1", "h2"]


def test_cpus_and_memory_budgets_bound_a_host() -> None:
    cfg = config(
        {"max_agents": 10, "cpus": 1.5, "memory": "1g"},
        hosts=hosts({"max_agents": 10, "cpus": 3}, {"max_agents": 10, "memory": "2g"}, {"max_agents": 1}),
    )
    p, _ = plan(observed(items(8), hosts=HOSTS3), cfg, Memory(), T0)
    placed = [a.host for a in provisions(p)]
    assert (placed.count("h1"), placed.count("h2"), placed.count("h3")) == (2, 2, 1)
    [why] = {u.why for u in p.unserved}
    assert why.startswith("cap reached (every docker host is full: h1: full, h2: full, h3: full)")


def test_a_pool_hosts_selector_picks_hosts_by_name_or_tag() -> None:
    cfg = config(
        {"name": "gpu", "labels": ["gpu"], "hosts": ["gpu"]},
        {"name": "cpu", "labels": ["cpu"], "hosts": ["h1"]},
        hosts=hosts({}, {"tags": ["gpu"]}, {"tags": ["gpu", "big"]}, max_agents=5),
    )
    p, _ = plan(observed(items(4, "gpu") + items(2, "cpu", start=10), hosts=HOSTS3), cfg, Memory(), T0)
    assert [(a.pool, a.host) for a in provisions(p)] == [
        ("gpu", "h2"),
        ("gpu", "h3"),
        ("gpu", "h2"),
        ("gpu", "h3"),
        ("cpu", "h1"),
        ("cpu", "h1"),
    ]


def test_a_selector_that_names_no_host_is_a_config_error() -> None:
    text = """jenkins: {url: "http://j/", user: u, token: t}
docker_hosts:
  - {name: a, url: "unix:///a", tags: [gpu]}
pools:
  - {name: p, labels: [x], image: i, hosts: [gpu, tpu]}
  - {name: q, labels: [y], image: i, cpus: 4, hosts: [a]}
"""
    text = text.replace("tags: [gpu]}", "tags: [gpu], cpus: 2}")
    with pytest.raises(ConfigError) as err:
        load_config_text(text, "c.yaml")
    assert err.value.errors == [
        "c.yaml:5: pools[0].hosts[1]: no docker host is named or tagged 'tpu'",
        "c.yaml:6: pools[1].cpus: cpus (4.0) exceeds the cpus budget of every docker host the pool may use",
    ]


def test_hosts_without_the_image_are_skipped_and_none_having_it_is_said() -> None:
    cfg = config({"max_agents": 10}, hosts=hosts({}, {}, {}))
    obs = with_images(observed(items(3), hosts=HOSTS3), {"h1": frozenset(), "h2": frozenset({"img"})})
    p, _ = plan(obs, cfg, Memory(), T0)
    assert [a.host for a in provisions(p)] == ["h2", "h3", "h2"]  # h3 unchecked: counts as present
    obs = with_images(observed(items(1), hosts=HOSTS3), dict.fromkeys(HOSTS3, frozenset()))
    p, _ = plan(obs, cfg, Memory(), T0)
    assert provisions(p) == []
    [u] = p.unserved
    assert u.reason is UnservedReason.NO_IMAGE
    assert u.why == "image missing (img; h1: image missing, h2: image missing, h3: image missing)"


def test_a_failing_host_cools_down_for_the_pool_while_the_others_serve() -> None:
    cfg = config({"max_agents": 10}, hosts=hosts({}, {}, {}))
    mem = Memory()
    # three launches of one pass fail on h1: one failure counted
    for _ in range(3):
        mem = record_launch_failure(mem, "dind", T0, host="h1", error="no space left", planned_at=T0)
    cooldown = mem.cooldowns[("h1", "dind")]
    assert (cooldown.failures, cooldown.until, cooldown.error) == (1, T0 + 10, "no space left")
    assert mem.pools["dind"].consecutive_failures == 1 and mem.pools["dind"].backoff_until == 0.0
    assert mem.hosts["h1"].last_error == "no space left"
    p, mem = plan(observed(items(4), hosts=HOSTS3), cfg, mem, T0 + 1)
    assert [a.host for a in provisions(p)] == ["h2", "h3", "h2", "h3"]
    # another pass, another failure: the cooldown doubles
    mem = record_launch_failure(mem, "dind", T0 + 12, host="h1", error="no space left", planned_at=T0 + 11)
    assert (mem.cooldowns[("h1", "dind")].failures, mem.cooldowns[("h1", "dind")].until) == (2, T0 + 32)
    # after the cooldown h1 takes agents again
    p, _ = plan(observed(items(1), hosts=HOSTS3), cfg, mem, T0 + 33)
    assert [a.host for a in provisions(p)] == ["h1"]


def test_the_pool_backs_off_only_when_no_host_can_take_its_agents() -> None:
    cfg = config({"max_agents": 10}, hosts=hosts({}, {}))
    mem = Memory()
    for host in ("h1", "h2"):
        mem = record_launch_failure(mem, "dind", T0, host=host, error="refused", planned_at=T0)
    p, _ = plan(observed(items(1), hosts=("h1", "h2")), cfg, mem, T0 + 5)
    [u] = p.unserved
    assert u.reason is UnservedReason.BACKOFF
    assert (
        u.why == "backoff (every docker host for pool dind is out: h1: cooling down 5s, h2: cooling down 5s)"
    )
    # a Jenkins-side failure (no host) backs the pool off as before
    mem = record_launch_failure(Memory(), "dind", T0)
    assert mem.pools["dind"].backoff_until == T0 + 10 and not mem.cooldowns


def test_an_agent_online_forgives_its_host_and_pool() -> None:
    cfg = config(hosts=hosts({}, {}))
    a1 = agent_name("dind", 1)
    mem = record_launch_failure(Memory(), "dind", T0, host="h1", error="x", planned_at=T0)
    mem = record_launch_failure(mem, "dind", T0, host="h2", error="y", planned_at=T0)
    mem.agents[a1] = known(a1, host="h2", launched_at=T0, online_at=None)
    _, mem = plan(observed([], [node(a1)], [container(a1, host="h2")], hosts=("h1", "h2")), cfg, mem, T0 + 1)
    assert list(mem.cooldowns) == [("h1", "dind")]
    assert mem.pools["dind"].consecutive_failures == 0


def test_launch_timeouts_of_one_pass_count_once() -> None:
    cfg = config({"launch_timeout": 60}, hosts=hosts({}))
    a1, a2 = agent_name("dind", 1), agent_name("dind", 2)
    mem = memory(known(a1, online_at=None), known(a2, online_at=None))
    obs = observed([], [node(a1, online=False), node(a2, online=False)], [container(a1), container(a2)])
    p, _ = plan(obs, cfg, mem, T0)
    reaps = [a for a in p.actions if isinstance(a, Reap)]
    assert [(r.reason, r.planned_at) for r in reaps] == [(Reason.LAUNCH_TIMEOUT, T0)] * 2
    for r in reaps:
        mem = record_launch_failure(mem, r.pool, T0 + 1, host=r.host, error=r.detail, planned_at=r.planned_at)
    assert mem.cooldowns[("h1", "dind")].failures == 1


def test_a_drained_host_gets_no_agents_and_its_idle_ones_go() -> None:
    cfg = config({"max_agents": 10}, hosts=hosts({}, {}))
    a1, a2 = agent_name("dind", 1), agent_name("dind", 2)
    mem = set_host_draining(memory(known(a1, idle_since=T0), known(a2)), "h1", True)
    obs = observed(items(2), [node(a1), node(a2, busy=1)], [container(a1), container(a2)], hosts=("h1", "h2"))
    p, _ = plan(obs, cfg, mem, T0)
    assert [(r.agent, r.reason) for r in p.actions if isinstance(r, Reap)] == [(a1, Reason.DRAIN)]
    assert [a.host for a in provisions(p)] == ["h2", "h2"]


def test_a_host_gone_from_the_config_is_drained() -> None:
    cfg = config(hosts=hosts({}))
    a1 = agent_name("dind", 1)
    mem = memory(known(a1, host="old", idle_since=T0))
    obs = observed([], [node(a1)], [container(a1, host="old")], hosts=("h1", "old"))
    p, mem = plan(obs, cfg, mem, T0)
    assert [(r.agent, r.host, r.reason) for r in p.actions if isinstance(r, Reap)] == [
        (a1, "old", Reason.DRAIN)
    ]


def test_a_lost_host_loses_its_disconnected_nodes_never_connected_ones() -> None:
    cfg = config({"max_agents": 2}, hosts=hosts({}, {}), host_lost_after="2m")
    a1, a2 = agent_name("dind", 1), agent_name("dind", 2)
    mem = memory(known(a1, host="h1"), known(a2, host="h1"))
    nodes = [node(a1, online=False), node(a2, busy=1)]
    down = ("h1",)
    p, mem = plan(observed(items(2), nodes, hosts=("h1", "h2"), unreachable=down), cfg, mem, T0)
    assert p.actions == () and mem.hosts["h1"].unreachable_since == T0
    assert [u.reason for u in p.unserved] == [UnservedReason.CAP]  # its agents still count (a1 as starting)
    p, mem = plan(observed(items(2), nodes, hosts=("h1", "h2"), unreachable=down), cfg, mem, T0 + 119)
    assert p.actions == ()
    p, mem = plan(observed(items(2), nodes, hosts=("h1", "h2"), unreachable=down), cfg, mem, T0 + 120)
    assert [a for a in p.actions if isinstance(a, RemoveOrphan)] == [
        RemoveOrphan(
            ResourceKind.NODE,
            "",
            a1,
            Reason.HOST_LOST,
            "docker host h1 unreachable for 120s (host_lost_after 120s)",
        )
    ]
    # its node deleted: the agent is forgotten and the pool serves the item on h2
    p, mem = plan(observed(items(2), nodes[1:], hosts=("h1", "h2"), unreachable=down), cfg, mem, T0 + 121)
    assert set(mem.agents) == {a2}
    assert [(a.host, a.reason) for a in provisions(p)] == [("h2", Reason.DEMAND)]
    # back: its leftover container is an orphan, removed on the second sight
    leftover = container(a1, host="h1", created=T0 - 600)
    p, mem = plan(observed([], nodes[1:], [leftover, container(a2)], hosts=("h1", "h2")), cfg, mem, T0 + 130)
    assert (
        not [a for a in p.actions if isinstance(a, RemoveOrphan)]
        and mem.hosts["h1"].unreachable_since is None
    )
    p, mem = plan(observed([], nodes[1:], [leftover, container(a2)], hosts=("h1", "h2")), cfg, mem, T0 + 135)
    assert [(a.kind, a.name) for a in p.actions if isinstance(a, RemoveOrphan)] == [
        (ResourceKind.CONTAINER, leftover.id)
    ]
