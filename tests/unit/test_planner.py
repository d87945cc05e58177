"""The planner's decision table: demand, caps, min_idle, starting agents, backoff, idle reaping,
one-shot, draining, lost agents, orphans, reuse volumes, and what an outage forbids."""

from __future__ import annotations

import copy
import re
from dataclasses import fields, replace
from typing import Any

import pytest

from agentpool.model import (
    CompleteLaunch,
    ContainerState,
    Cooldown,
    Cordon,
    HostMemory,
    ItemKind,
    Memory,
    Plan,
    PoolMemory,
    Provision,
    Reap,
    Reason,
    RemoveOrphan,
)
from agentpool.planner import (
    BACKOFF_MAX,
    UNKNOWN_LABEL,
    agent_state,
    backoff_delay,
    copy_memory,
    matching_pools,
    plan,
    record_launch_failure,
    record_provisioned,
    record_reaped,
    set_draining,
)
from tests.unit.planner_builders import (
    T0,
    agent_name,
    config,
    container,
    item,
    items,
    known,
    memory,
    node,
    observed,
    volume,
)

A1, A2, A3 = (agent_name("dind", n) for n in (1, 2, 3))


def provisions(p: Plan) -> list[Provision]:
    return [a for a in p.actions if isinstance(a, Provision)]


def reaps(p: Plan) -> list[Reap]:
    return [a for a in p.actions if isinstance(a, Reap)]


def removals(p: Plan) -> list[RemoveOrphan]:
    return [a for a in p.actions if isinstance(a, RemoveOrphan)]


def running(*names: str, **kw: Any) -> tuple[list[Any], list[Any], Memory]:
    """Agents that are online and idle since long ago (containers, nodes, memory)."""
    return (
        [container(n) for n in names],
        [node(n, **kw) for n in names],
        memory(*(known(n, idle_since=T0 - 30) for n in names)),
    )


# --- demand and caps ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("waiting", "pool", "host_max", "busy_agents", "starting_agents", "expected"),
    [
        (0, {}, 20, 0, 0, 0),
        (1, {}, 20, 0, 0, 1),
        (3, {}, 20, 0, 0, 3),
        (10, {"max_agents": 3}, 20, 0, 0, 3),  # pool cap
        (10, {"max_agents": 10}, 2, 0, 0, 2),  # host cap
        (10, {"max_agents": 3}, 20, 2, 0, 1),  # busy agents count against the cap
        (3, {}, 20, 0, 2, 1),  # starting agents serve the waiting items
        (3, {}, 20, 0, 3, 0),  # never over-provision while agents connect
        (5, {"executors": 2}, 20, 0, 0, 3),  # executors per agent
        (5, {"executors": 2}, 20, 0, 1, 2),
    ],
)
def test_demand_and_caps(
    waiting: int, pool: dict[str, Any], host_max: int, busy_agents: int, starting_agents: int, expected: int
) -> None:
    cfg = config(pool, hosts=[{"name": "h1", "url": "unix:///x", "max_agents": host_max}])
    names = [agent_name("dind", n) for n in range(busy_agents + starting_agents)]
    busy, starting = names[:busy_agents], names[busy_agents:]
    execs = pool.get("executors", 1)
    nodes = [node(n, busy=execs, executors=execs) for n in busy] + [
        node(n, online=False, executors=execs) for n in starting
    ]
    mem = memory(
        *(known(n) for n in busy),
        *(known(n, launched_at=T0 - 5, online_at=None) for n in starting),
    )
    obs = observed(items(waiting), nodes, [container(n) for n in names])
    p, _ = plan(obs, cfg, mem, T0)
    new = provisions(p)
    assert len(new) == expected
    assert all(a.reason is Reason.DEMAND and a.pool == "dind" and a.host == "h1" for a in new)
    assert all(re.fullmatch(r"ap-dind-[0-9a-f]{6}", a.agent) for a in new)
    assert len({a.agent for a in new}) == len(new)
    assert p.demand == ({"docker&&linux": waiting} if waiting else {})
    served = min(waiting, (expected + starting_agents) * execs)
    assert len(p.unserved) == waiting - served
    assert all(u.why.startswith("cap reached") for u in p.unserved)


def test_no_over_provisioning_across_passes() -> None:
    """10 items, max_agents 3: three agents on the first pass, none while they connect."""
    cfg = config({"max_agents": 3})
    p1, mem = plan(observed(items(10)), cfg, Memory(), T0)
    assert len(provisions(p1)) == 3
    for action in provisions(p1):
        mem = record_provisioned(mem, action, T0 + 1)
    containers = [container(a.agent, created=T0 + 1) for a in provisions(p1)]
    nodes = [node(a.agent, online=False) for a in provisions(p1)]
    for t in (T0 + 5, T0 + 10, T0 + 60):
        p, mem = plan(observed(items(10), nodes, containers), cfg, mem, t)
        assert provisions(p) == [] and reaps(p) == []
        assert len(p.unserved) == 7


def test_idle_matching_nodes_serve_items_ours_or_not() -> None:
    nodes = [node("static-1", ("docker", "linux", "x86")), node("static-2", ("windows",))]
    p, _ = plan(observed(items(3), nodes), config(), Memory(), T0)
    assert len(provisions(p)) == 2  # static-1 takes one; static-2 does not match
    containers, our_nodes, mem = running(A1)
    p, _ = plan(observed(items(3), our_nodes, containers), config(), mem, T0)
    assert len(provisions(p)) == 2


@pytest.mark.parametrize("kind", [ItemKind.WAITING, ItemKind.BLOCKED, ItemKind.PENDING])
def test_only_buildable_items_are_demand(kind: ItemKind) -> None:
    p, _ = plan(observed([item(1, kind=kind)]), config(), Memory(), T0)
    assert p.actions == () and p.unserved == () and p.demand == {}


def test_best_fit_then_config_order_then_spill_over() -> None:
    cfg = config(
        {"name": "big", "labels": ["docker", "linux", "gpu"], "max_agents": 5},
        {"name": "small", "labels": ["docker", "linux"], "max_agents": 1},
        {"name": "small2", "labels": ["docker", "linux"]},
    )
    assert [p.name for p in matching_pools("docker", cfg.pools)] == ["small", "small2", "big"]
    assert [p.name for p in matching_pools("gpu||windows", cfg.pools)] == ["big"]
    assert [p.name for p in matching_pools("docker&&!gpu", cfg.pools)] == ["small", "small2"]
    p, _ = plan(observed([*items(3, "docker"), *items(1, "gpu", start=10)]), cfg, Memory(), T0)
    assert sorted(a.pool for a in provisions(p)) == ["big", "small", "small2", "small2"]


def test_no_pool_matches() -> None:
    p, _ = plan(observed(items(2, "windows")), config(), Memory(), T0)
    assert provisions(p) == []
    assert [(u.item_id, u.why) for u in p.unserved] == [(1, "no pool matches"), (2, "no pool matches")]


@pytest.mark.parametrize(("exclusive", "expected"), [(True, 0), (False, 2)])
def test_unlabelled_items_only_for_non_exclusive_pools(exclusive: bool, expected: int) -> None:
    p, _ = plan(observed(items(2, "")), config({"exclusive": exclusive}), Memory(), T0)
    assert len(provisions(p)) == expected
    assert p.demand == {"": 2}


def test_hosts_most_room_first_then_config_order() -> None:
    hosts = [
        {"name": "h1", "url": "unix:///1", "max_agents": 2},
        {"name": "h2", "url": "unix:///2", "max_agents": 3},
    ]
    p, _ = plan(observed(items(5), hosts=("h1", "h2")), config(hosts=hosts), Memory(), T0)
    assert [a.host for a in provisions(p)] == ["h2", "h1", "h2", "h1", "h2"]


def test_unreachable_host_gets_no_agents() -> None:
    hosts = [{"name": "h1", "url": "unix:///1"}, {"name": "h2", "url": "unix:///2"}]
    p, _ = plan(
        observed(items(2), hosts=("h1", "h2"), unreachable=("h1",)), config(hosts=hosts), Memory(), T0
    )
    assert [a.host for a in provisions(p)] == ["h2", "h2"]
    p, _ = plan(observed(items(2), unreachable=("h1",)), config(), Memory(), T0)
    assert provisions(p) == [] and {u.why for u in p.unserved} == {"no docker host reachable"}


# --- min_idle ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("min_idle", "idle", "starting", "waiting", "expected"),
    [
        (2, 0, 0, 0, 2),
        (2, 1, 0, 0, 1),
        (2, 0, 1, 0, 1),
        (2, 2, 0, 0, 0),
        (1, 0, 0, 2, 3),  # two for the items, one kept idle
        (1, 1, 0, 1, 1),  # the idle one takes the item: one more to stay at min_idle
    ],
)
def test_min_idle_is_a_deficit(min_idle: int, idle: int, starting: int, waiting: int, expected: int) -> None:
    names = [agent_name("dind", n) for n in range(idle + starting)]
    nodes = [node(n) for n in names[:idle]] + [node(n, online=False) for n in names[idle:]]
    mem = memory(
        *(known(n, idle_since=T0 - 5) for n in names[:idle]),
        *(known(n, launched_at=T0 - 5, online_at=None) for n in names[idle:]),
    )
    obs = observed(items(waiting), nodes, [container(n) for n in names])
    p, _ = plan(obs, config({"min_idle": min_idle}), mem, T0)
    assert len(provisions(p)) == expected
    assert [a.reason for a in provisions(p)].count(Reason.MIN_IDLE) == max(
        0, expected - max(0, waiting - idle)
    )


# --- backoff and draining ----------------------------------------------------------------


def test_backoff_blocks_provisioning() -> None:
    mem = memory(pools={"dind": PoolMemory(consecutive_failures=3, backoff_until=T0 + 40)})
    p, _ = plan(observed(items(2)), config({"min_idle": 1}), mem, T0)
    assert provisions(p) == []
    assert [u.why for u in p.unserved] == ["backoff (40s left)"] * 2
    p, _ = plan(observed(items(2)), config(), mem, T0 + 41)
    assert len(provisions(p)) == 2


def test_launch_failures_back_off_exponentially_bounded_and_reset_on_success() -> None:
    assert [backoff_delay(n) for n in (1, 2, 3, 4)] == [10.0, 20.0, 40.0, 80.0]
    assert backoff_delay(50) == BACKOFF_MAX
    mem = Memory()
    for n in range(3):
        mem = record_launch_failure(mem, "dind", T0 + n)
    assert mem.pools["dind"].consecutive_failures == 3
    assert mem.pools["dind"].backoff_until == T0 + 2 + 40
    # an agent of the pool comes online: failures forgotten
    mem.agents[A1] = known(A1, launched_at=T0, online_at=None)
    _, after = plan(observed([], [node(A1)], [container(A1)]), config(), mem, T0 + 50)
    assert after.pools["dind"] == PoolMemory()
    assert after.agents[A1].online_at == T0 + 50


def test_draining_pool_reaps_idle_agents_and_gets_none() -> None:
    containers, nodes, mem = running(A1, A2)
    nodes[1] = node(A2, busy=1)
    mem = set_draining(mem, "dind", True)
    mem.agents[A1].idle_since = T0  # idle just now: idle_timeout and min_idle do not matter
    p, _ = plan(observed(items(2), nodes, containers), config({"min_idle": 2}), mem, T0)
    assert [(r.agent, r.reason, r.check_idle) for r in reaps(p)] == [(A1, Reason.DRAIN, True)]
    assert provisions(p) == []
    assert {u.why for u in p.unserved} == {"draining"}


def test_agents_of_a_pool_removed_from_config_are_drained() -> None:
    old = agent_name("old", 1)
    mem = memory(known(old, pool="old", idle_since=T0))
    p, _ = plan(observed([], [node(old)], [container(old, pool="old")]), config(), mem, T0)
    assert [(r.agent, r.reason) for r in reaps(p)] == [(old, Reason.DRAIN)]
    assert removals(p) == []


# --- idle tracking and reaping -----------------------------------------------------------


def test_idle_since_tracked_from_what_is_polled() -> None:
    mem = memory(known(A1, online_at=None, launched_at=T0 - 10))
    obs_idle = observed([], [node(A1)], [container(A1)])
    obs_busy = observed([], [node(A1, busy=1)], [container(A1)])
    _, mem = plan(obs_idle, config(), mem, T0)
    assert (mem.agents[A1].online_at, mem.agents[A1].idle_since) == (T0, T0)
    _, mem = plan(obs_idle, config(), mem, T0 + 5)
    assert mem.agents[A1].idle_since == T0
    _, mem = plan(obs_busy, config(), mem, T0 + 10)
    assert (mem.agents[A1].idle_since, mem.agents[A1].builds_started) == (None, 1)
    _, mem = plan(obs_busy, config(), mem, T0 + 15)
    assert mem.agents[A1].builds_started == 1
    _, mem = plan(obs_idle, config(), mem, T0 + 20)
    assert mem.agents[A1].idle_since == T0 + 20


@pytest.mark.parametrize(
    ("idle_for", "min_idle", "agents", "reaped"),
    [
        (59, 0, 1, 0),
        (60, 0, 1, 1),
        (600, 0, 3, 3),
        (600, 1, 1, 0),  # the pool is not above min_idle
        (600, 1, 3, 2),
        (600, 3, 3, 0),
    ],
)
def test_idle_timeout(idle_for: float, min_idle: int, agents: int, reaped: int) -> None:
    names = [agent_name("dind", n) for n in range(agents)]
    mem = memory(*(known(n, idle_since=T0 - idle_for - i) for i, n in enumerate(names)))
    obs = observed([], [node(n) for n in names], [container(n) for n in names])
    p, _ = plan(obs, config({"min_idle": min_idle}), mem, T0)
    got = reaps(p)
    assert len(got) == reaped
    assert all(r.reason is Reason.IDLE_TIMEOUT and r.check_idle and not r.count_launch_failure for r in got)
    # the longest idle go first
    assert [r.agent for r in got] == list(reversed(names))[:reaped]
    assert provisions(p) == []


def test_busy_agent_never_reaped() -> None:
    mem = memory(known(A1, idle_since=None))
    p, _ = plan(observed([], [node(A1, busy=1)], [container(A1)]), config({"idle_timeout": 1}), mem, T0)
    assert p.actions == ()


def test_idle_agents_of_a_pool_with_waiting_items_are_kept() -> None:
    containers, nodes, mem = running(A1, A2)
    for a in mem.agents.values():
        a.idle_since = T0 - 1000
    nodes[1] = node(A2, temp_offline=True)  # not accepting: no capacity, and reaped when idle long
    p, _ = plan(observed(items(2), nodes, containers), config(), mem, T0)
    assert [(r.agent, r.reason) for r in reaps(p)] == [(A2, Reason.IDLE_TIMEOUT)]
    assert len(provisions(p)) == 1  # A1 takes one item


def test_copy_memory_covers_every_field() -> None:
    assert [f.name for f in fields(Memory)] == [
        "agents",
        "pools",
        "hosts",
        "cooldowns",
        "orphan_seen",
        "item_first_seen",
        "item_labels",
        "item_refused",
        "daemon_id",
        "boot",
        "last_ticks",
    ]
    mem = memory(known(A1, idle_since=T0), pools={"dind": PoolMemory(3, T0, True)})
    mem.orphan_seen["node:x"] = T0
    mem.item_first_seen[1] = T0
    mem.item_labels[1] = "docker"
    mem.hosts["h1"] = HostMemory(unreachable_since=T0, last_error="down", draining=True)
    mem.cooldowns[("h1", "dind")] = Cooldown(2, T0 + 20, T0, "refused")
    mem.item_refused[1] = frozenset({"dind"})
    mem.daemon_id, mem.boot = "d1", "b1"
    out = copy_memory(mem)
    assert out == mem and out.agents[A1] is not mem.agents[A1] and out.pools["dind"] is not mem.pools["dind"]
    assert (
        out.hosts["h1"] is not mem.hosts["h1"]
        and out.cooldowns[("h1", "dind")] is not mem.cooldowns[("h1", "dind")]
    )


# --- one-shot ----------------------------------------------------------------------------


def test_one_shot_agent_cordoned_when_busy_and_reaped_when_done() -> None:
    cfg = config({"one_shot": True})
    mem = memory(known(A1, idle_since=T0 - 1))
    p, mem = plan(observed([], [node(A1, busy=1)], [container(A1)]), cfg, mem, T0)
    assert p.actions == (Cordon(A1, "dind", "h1", Reason.ONE_SHOT_BUSY, "one-shot agent started its build"),)
    p, mem = plan(observed([], [node(A1, busy=1, temp_offline=True)], [container(A1)]), cfg, mem, T0 + 5)
    assert p.actions == ()
    p, mem = plan(observed([], [node(A1, temp_offline=True)], [container(A1)]), cfg, mem, T0 + 10)
    [reap] = reaps(p)
    assert (reap.reason, reap.check_idle) == (Reason.ONE_SHOT_DONE, False)
    # not cordoned after all (the cordon failed): the reap re-checks
    p, _ = plan(observed([], [node(A1)], [container(A1)]), cfg, mem, T0 + 15)
    assert [(r.reason, r.check_idle) for r in reaps(p)] == [(Reason.ONE_SHOT_DONE, True)]


def test_one_shot_busy_agent_is_not_capacity() -> None:
    mem = memory(known(A1))
    obs = observed(items(1), [node(A1, busy=1, executors=2, temp_offline=True)], [container(A1)])
    p, _ = plan(obs, config({"one_shot": True, "executors": 2}), mem, T0)
    assert len(provisions(p)) == 1


# --- launch timeout and lost agents ------------------------------------------------------


@pytest.mark.parametrize(("age", "reaped"), [(179, False), (180, True)])
def test_launch_timeout(age: float, reaped: bool) -> None:
    mem = memory(known(A1, launched_at=T0 - age, online_at=None))
    p, _ = plan(observed([], [node(A1, online=False)], [container(A1)]), config(), mem, T0)
    got = [(r.agent, r.reason, r.check_idle, r.keep_volume, r.count_launch_failure) for r in reaps(p)]
    assert got == ([(A1, Reason.LAUNCH_TIMEOUT, False, False, True)] if reaped else [])


@pytest.mark.parametrize(
    ("state", "in_docker", "online_before", "launch_failure"),
    [
        (ContainerState.EXITED, True, True, False),
        (ContainerState.DEAD, True, True, False),
        (None, False, True, False),
        (ContainerState.EXITED, True, False, True),  # died before connecting: a launch failure
    ],
)
def test_lost_agents(
    state: ContainerState | None, in_docker: bool, online_before: bool, launch_failure: bool
) -> None:
    cfg = config({"docker_volume": "reuse"})
    mem = memory(known(A1, online_at=T0 - 100 if online_before else None, launched_at=T0 - 120))
    containers = [container(A1, state=state)] if in_docker and state else []
    p, _ = plan(
        observed([], [node(A1, online=False, busy=1 if online_before else 0)], containers), cfg, mem, T0
    )
    [reap] = reaps(p)
    assert (reap.reason, reap.check_idle, reap.keep_volume, reap.count_launch_failure) == (
        Reason.LOST,
        False,
        False,
        launch_failure,
    )


def test_node_deleted_in_jenkins_means_lost_after_a_grace() -> None:
    obs = observed(items(1), [], [container(A1)])
    p, mem = plan(obs, config({"max_agents": 1}), memory(known(A1)), T0)
    assert p.actions == ()  # one answer without the node is not enough; the agent still counts
    p, mem = plan(obs, config({"max_agents": 1}), mem, T0 + 59)
    assert p.actions == ()
    p, mem = plan(obs, config({"max_agents": 1}), mem, T0 + 60)
    assert [(r.reason, r.check_idle) for r in reaps(p)] == [(Reason.LOST, False)]
    assert len(provisions(p)) == 1


def test_lost_agents_free_their_capacity() -> None:
    mem = memory(known(A1), known(A2))
    containers = [container(A1, state=ContainerState.EXITED), container(A2)]
    p, _ = plan(
        observed(items(2), [node(A1, online=False), node(A2, busy=1)], containers),
        config({"max_agents": 2}),
        mem,
        T0,
    )
    assert len(reaps(p)) == 1 and len(provisions(p)) == 1


# --- outages -----------------------------------------------------------------------------


def test_jenkins_unreachable_decides_nothing() -> None:
    containers, nodes, mem = running(A1, A2)
    mem.agents[A1].idle_since = T0 - 10_000
    containers[1] = container(A2, state=ContainerState.EXITED)
    p, after = plan(
        observed(items(3), nodes, containers, jenkins_down=True), config({"min_idle": 3}), mem, T0
    )
    assert p.actions == () and p.unserved == ()
    assert after.agents == mem.agents and after is not mem


def test_host_unreachable_decides_nothing_about_its_agents() -> None:
    containers, nodes, mem = running(A1)
    mem.agents[A1].idle_since = T0 - 10_000
    p, after = plan(observed([], nodes, containers, unreachable=("h1",)), config(), mem, T0)
    assert p.actions == ()
    assert after.agents == mem.agents and after.orphan_seen == {}


# --- restart: adoption -------------------------------------------------------------------


def test_restart_adopts_agents_idle_since_now() -> None:
    containers = [container(A1), container(A2)]
    nodes = [node(A1), node(A2, busy=1)]
    vols = [volume(f"{A1}-docker", agent=A1), volume(f"{A2}-docker", agent=A2)]
    p, mem = plan(observed([], nodes, containers, vols), config(), Memory(), T0)
    assert p.actions == ()
    assert set(mem.agents) == {A1, A2}
    assert (mem.agents[A1].idle_since, mem.agents[A1].volume, mem.agents[A1].online_at) == (
        T0,
        f"{A1}-docker",
        T0,
    )
    assert mem.agents[A2].idle_since is None and mem.agents[A2].builds_started == 1
    assert mem.orphan_seen == {}


def test_restart_adopts_an_agent_still_starting() -> None:
    p, mem = plan(
        observed(items(1), [node(A1, online=False)], [container(A1, created=T0 - 10)]), config(), Memory(), T0
    )
    assert p.actions == ()  # the starting agent will serve the item
    assert mem.agents[A1].launched_at == T0 - 10


# --- orphans: two passes and a grace period -----------------------------------------------


@pytest.mark.parametrize(
    ("kind", "obs_kw", "grace"),
    [
        ("container", {"containers": [container(A1, created=T0 - 1000)]}, 0),  # old already
        ("node", {"nodes": [node(A1, online=False)]}, 180),
        ("volume", {"volumes": [volume(f"{A1}-docker", agent=A1, created=T0 - 1000)]}, 0),
    ],
)
def test_orphans_removed_on_the_second_pass_after_grace(
    kind: str, obs_kw: dict[str, Any], grace: float
) -> None:
    cfg = config()
    obs = observed(**obs_kw)
    p1, mem = plan(obs, cfg, Memory(), T0)
    assert p1.actions == () and len(mem.orphan_seen) == 1
    if grace:  # nodes: their age is unknown, the grace counts from the first sighting
        p_early, mem = plan(obs, cfg, mem, T0 + grace - 1)
        assert p_early.actions == ()
    p2, mem = plan(obs, cfg, mem, T0 + grace + 5)
    [removal] = removals(p2)
    assert (removal.kind, removal.reason) == (kind, Reason.ORPHAN)
    assert removal.name == {"container": f"id-{A1}", "node": A1, "volume": f"{A1}-docker"}[kind]
    assert removal.host == ("" if kind == "node" else "h1")


def test_young_orphan_container_is_kept() -> None:
    obs = observed(containers=[container(A1, created=T0 - 10)])
    _, mem = plan(obs, config(), Memory(), T0)
    p, _ = plan(obs, config(), mem, T0 + 5)
    assert removals(p) == []


def test_orphan_seen_once_then_matched_is_forgotten() -> None:
    _, mem = plan(observed(containers=[container(A1)]), config(), Memory(), T0)
    assert mem.orphan_seen
    _, mem = plan(observed([], [node(A1)], [container(A1)]), config(), mem, T0 + 5)
    assert mem.orphan_seen == {} and A1 in mem.agents


def test_nodes_without_container_wait_while_a_host_is_unreachable() -> None:
    hosts = [{"name": "h1", "url": "unix:///1"}, {"name": "h2", "url": "unix:///2"}]
    obs = observed([], [node(A1)], hosts=("h1", "h2"), unreachable=("h2",))
    _, mem = plan(obs, config(hosts=hosts), Memory(), T0)
    p, _ = plan(obs, config(hosts=hosts), mem, T0 + 10_000)
    assert p.actions == ()


def test_other_instances_and_foreign_nodes_are_not_ours() -> None:
    nodes = [node("static-1"), node("other-dind-abcdef"), node("ap-unknownpool-abcdef"), node("ap-dind-xyz")]
    _, mem = plan(observed([], nodes), config(), Memory(), T0)
    p, _ = plan(observed([], nodes), config(), mem, T0 + 10_000)
    assert p.actions == () and mem.orphan_seen == {}


# --- reuse pools: leasing and excess volumes ---------------------------------------------


def test_reuse_pool_leases_most_recently_used_free_volumes() -> None:
    cfg = config({"docker_volume": "reuse", "max_agents": 5})
    vols = [
        volume("ap-dind-000001-docker", agent=agent_name("dind", 1), free=True, last_used=T0 - 300),
        volume("ap-dind-000002-docker", agent=agent_name("dind", 2), free=True, last_used=T0 - 100),
        volume(
            "ap-dind-000003-docker", agent=agent_name("dind", 3), free=True, last_used=T0 - 200, host="h2"
        ),
    ]
    p, _ = plan(observed(items(3), volumes=vols), cfg, Memory(), T0)
    assert [a.lease_volume for a in provisions(p)] == ["ap-dind-000002-docker", "ap-dind-000001-docker", None]
    assert removals(p) == []


def test_reuse_pool_keeps_at_most_max_agents_free_volumes() -> None:
    cfg = config({"docker_volume": "reuse", "max_agents": 2})
    vols = [volume(f"ap-dind-00000{n}-docker", free=True, last_used=T0 - 100 * n) for n in range(1, 6)]
    p, _ = plan(observed(volumes=vols), cfg, Memory(), T0)
    assert [(r.name, r.reason) for r in removals(p)] == [
        (f"ap-dind-00000{n}-docker", Reason.EXCESS_FREE_VOLUME) for n in (5, 4, 3)
    ]


def test_reuse_pool_clean_reap_keeps_the_volume() -> None:
    containers, nodes, mem = running(A1)
    mem.agents[A1].idle_since = T0 - 1000
    p, _ = plan(observed([], nodes, containers), config({"docker_volume": "reuse"}), mem, T0)
    assert [(r.reason, r.keep_volume) for r in reaps(p)] == [(Reason.IDLE_TIMEOUT, True)]
    p, _ = plan(observed([], nodes, containers), config(), mem, T0)
    assert [(r.reason, r.keep_volume) for r in reaps(p)] == [(Reason.IDLE_TIMEOUT, False)]


def test_free_volume_of_a_per_agent_pool_is_an_orphan() -> None:
    obs = observed(volumes=[volume("ap-dind-000001-docker", free=True)])
    _, mem = plan(obs, config(), Memory(), T0)
    p, _ = plan(obs, config(), mem, T0 + 61)
    assert [(r.kind, r.reason) for r in removals(p)] == [("volume", Reason.ORPHAN)]


def test_a_volume_left_by_an_earlier_run_without_its_container_is_removed_at_once() -> None:
    """A kill -9 between creating the volume and the container: no launch of this run can
    still mount it, so it does not wait out the orphan grace."""
    old = replace(volume(f"{A1}-docker", agent=A1, created=T0 - 5), boot="b-before")
    p, _ = plan(observed(volumes=[old]), config(), Memory(boot="b-now"), T0)
    [removal] = removals(p)
    assert (removal.kind, removal.name, removal.reason) == ("volume", f"{A1}-docker", Reason.ORPHAN)
    assert "left by an earlier run" in removal.detail


@pytest.mark.parametrize(
    ("boot", "with_container"),
    [("b-now", False), ("", False), ("b-before", True)],
    ids=["this-run-launching", "unlabelled", "its-container-exists"],
)
def test_other_young_volumes_wait_for_the_grace(boot: str, with_container: bool) -> None:
    young = replace(volume(f"{A1}-docker", agent=A1, created=T0 - 5), boot=boot)
    containers = [container(A1, created=T0 - 5)] if with_container else []
    p, _ = plan(observed(containers=containers, volumes=[young]), config(), Memory(boot="b-now"), T0)
    assert [r for r in removals(p) if r.kind == "volume"] == []


# --- labels Jenkins hides ----------------------------------------------------------------


def test_hidden_labels_start_one_agent_to_reveal_them() -> None:
    cfg = config({"name": "first"}, {"name": "second"})
    p, mem = plan(observed(items(4, None)), cfg, Memory(), T0)
    [probe] = provisions(p)
    assert probe.pool == "first"
    assert len(p.unserved) == 4 and all(u.why.startswith("label unknown") for u in p.unserved)
    assert p.demand == {UNKNOWN_LABEL: 4}
    mem = record_provisioned(mem, probe, T0)
    # its node exists (created first): from now on Jenkins shows the labels
    obs = observed(items(4, None), [node(probe.agent, online=False)], [container(probe.agent, pool="first")])
    p, _ = plan(obs, cfg, mem, T0 + 2)
    assert p.actions == ()


def test_labels_seen_once_survive_their_hiding() -> None:
    """After the last agent is reaped Jenkins hides labels again; an item whose label no pool
    serves must not start a probe agent every idle_timeout."""
    cfg = config()
    _, mem = plan(
        observed([item(7, "windows")], [node("static-1", ("windows-old",), online=False)]), cfg, Memory(), T0
    )
    assert mem.item_labels == {7: "windows"}
    p, mem = plan(observed([item(7, None)]), cfg, mem, T0 + 5)
    assert provisions(p) == []
    assert [(u.label, u.why) for u in p.unserved] == [("windows", "no pool matches")]
    # an item that left the queue is forgotten
    _, mem = plan(observed([]), cfg, mem, T0 + 10)
    assert mem.item_labels == {}


def test_unknown_label_while_nodes_exist_is_not_probed() -> None:
    p, _ = plan(observed(items(1, None), [node("static-1")]), config(), Memory(), T0)
    assert provisions(p) == [] and [u.why for u in p.unserved] == ["label unknown"]


# --- purity ------------------------------------------------------------------------------


def test_plan_is_pure_and_deterministic() -> None:
    containers, nodes, mem = running(A1, A2)
    obs = observed(items(5), nodes, containers)
    before = copy.deepcopy(mem)
    p1, m1 = plan(obs, config(), mem, T0)
    p2, m2 = plan(obs, config(), mem, T0)
    assert mem == before
    assert p1 == p2 and m1 == m2 and m1 is not mem
    p3, _ = plan(obs, config(), mem, T0 + 1)
    assert {a.agent for a in provisions(p3)} != {a.agent for a in provisions(p1)}


def test_item_first_seen_tracked() -> None:
    _, mem = plan(observed(items(2)), config({"max_agents": 0}), Memory(), T0)
    _, mem = plan(observed(items(2, start=2)), config({"max_agents": 0}), mem, T0 + 5)
    assert mem.item_first_seen == {2: T0, 3: T0 + 5}


def test_record_helpers() -> None:
    action = Provision("dind", "h1", A1, Reason.DEMAND, "", lease_volume="v1")
    mem = record_provisioned(Memory(), action, T0)
    assert (mem.agents[A1].launched_at, mem.agents[A1].volume, mem.agents[A1].online_at) == (T0, "v1", None)
    assert record_reaped(mem, A1).agents == {}
    assert A1 in mem.agents  # the input is not changed


def test_agent_states() -> None:
    a = known(A1)
    assert agent_state(a, node(A1)).value == "online-idle"
    assert agent_state(a, node(A1, busy=1)).value == "busy"
    assert agent_state(a, node(A1, temp_offline=True)).value == "draining"
    assert agent_state(known(A1, online_at=None), node(A1, online=False)).value == "starting"


def test_disconnected_agent_waits_launch_timeout_then_is_lost() -> None:
    mem = memory(known(A1, idle_since=T0 - 50))
    obs = observed([], [node(A1, online=False)], [container(A1)])
    p, mem = plan(obs, config(), mem, T0)
    assert p.actions == () and mem.agents[A1].offline_since == T0
    p, mem = plan(obs, config(), mem, T0 + 179)
    assert p.actions == ()
    p, mem = plan(obs, config(), mem, T0 + 180)
    assert [(r.reason, r.check_idle, r.count_launch_failure) for r in reaps(p)] == [
        (Reason.LOST, False, False)
    ]
    # reconnecting in time clears it
    _, mem = plan(observed([], [node(A1)], [container(A1)]), config(), memory(known(A1)), T0)
    assert mem.agents[A1].offline_since is None


def test_agents_on_an_unreachable_host_still_count_against_the_pool_cap() -> None:
    hosts = [{"name": "h1", "url": "unix:///1"}, {"name": "h2", "url": "unix:///2"}]
    mem = memory(known(A1, host="h1"), known(A2, host="h1"))
    obs = observed(items(5), [node(A1, busy=1), node(A2, busy=1)], hosts=("h1", "h2"), unreachable=("h1",))
    p, _ = plan(obs, config({"max_agents": 3}, hosts=hosts), mem, T0)
    assert [a.host for a in provisions(p)] == ["h2"]


def test_spill_over_reports_the_best_pools_reason() -> None:
    cfg = config(
        {"name": "a", "max_agents": 1}, {"name": "b", "labels": ["docker", "linux", "big"], "max_agents": 1}
    )
    p, _ = plan(observed(items(3)), cfg, Memory(), T0)
    assert sorted(a.pool for a in provisions(p)) == ["a", "b"]
    assert [u.why for u in p.unserved] == ["cap reached (pool a: max_agents 1)"]
    assert p.unserved[0].item_id == 3  # the newest waits


def test_unlabelled_items_do_not_count_on_foreign_nodes() -> None:
    # their mode (NORMAL or EXCLUSIVE) is not exported: an EXCLUSIVE one would never take the item
    p, _ = plan(observed(items(1, ""), [node("static-1")]), config({"exclusive": False}), Memory(), T0)
    assert len(provisions(p)) == 1


@pytest.mark.parametrize(
    ("created_ago", "launched_ago", "expected"),
    [
        (5, 5, "wait"),  # a launch in progress starts its container within a second or two
        (10, 10, "complete"),  # left by an interrupted launch: completed, not relaunched
        (179, 179, "complete"),
        (180, 180, "reap"),  # launch_timeout decides as for any agent that never came online
    ],
)
def test_a_container_left_created_by_an_interrupted_launch_is_completed(
    created_ago: float, launched_ago: float, expected: str
) -> None:
    mem = memory(known(A1, launched_at=T0 - launched_ago, online_at=None))
    box = container(A1, state=ContainerState.CREATED, created=T0 - created_ago)
    p, _ = plan(observed(items(1), [node(A1, online=False)], [box]), config(), mem, T0)
    completes = [a for a in p.actions if isinstance(a, CompleteLaunch)]
    got = "complete" if completes else ("reap" if reaps(p) else "wait")
    assert got == expected
    if expected != "reap":
        assert provisions(p) == []  # the waiting item is this agent's: no second agent for it
    if completes:
        assert (completes[0].container, completes[0].reason) == (box.id, Reason.INTERRUPTED_LAUNCH)
