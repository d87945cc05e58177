"""The planner in a team's real controller: labels hidden behind one node, look-alike and
neighbour nodes, nodes left by a crash, one-shot agents adopted after a restart."""

from __future__ import annotations

from dataclasses import replace

import msgspec

from agentpool.model import Memory, Plan, Provision, QueueItem, Reap, Reason, RemoveOrphan
from agentpool.planner import plan
from agentpool.planner.ownership import node_marker
from agentpool.planner.routing import inferred_key
from tests.unit.planner_builders import INSTANCE, T0, agent_name, config, container, item, node, observed

A1 = agent_name("dind", 1)
STATIC = node("static-1", ("docker", "linux", "ubuntu-22"), busy=1)


def named(id: int, node_name: str = "static-1") -> QueueItem:
    return msgspec.structs.replace(
        item(id, None), why=f"Waiting for next available executor on ‘{node_name}’", node=node_name
    )


def provisions(p: Plan) -> list[Provision]:
    return [a for a in p.actions if isinstance(a, Provision)]


POOLS = ({"name": "docker", "labels": ["docker"]}, {"name": "gpu", "labels": ["docker", "gpu"]})


def test_a_build_behind_one_busy_static_node_gets_a_pool_whose_labels_the_node_has() -> None:
    cfg = config(*POOLS)
    p, mem = plan(observed([named(1)], [STATIC]), cfg, Memory(), T0)
    [start] = provisions(p)
    # `docker,gpu` is not among static-1's labels: it could not be the only match
    assert start.pool == "docker"
    assert p.demand == {inferred_key("static-1"): 1}
    assert "label inferred" in p.inferred[1] and "static-1" in p.inferred[1]
    assert mem.item_labels == {}  # an inference is never remembered as the label


def test_never_narrowed_to_the_nodes_labels() -> None:
    # The old reading took docker&&linux&&ubuntu-22: no pool matched and nothing started.
    p, _ = plan(observed([named(1)], [STATIC]), config({"name": "d", "labels": ["docker"]}), Memory(), T0)
    assert [a.pool for a in provisions(p)] == ["d"]


def test_a_pool_with_an_existing_node_cannot_be_the_hidden_expression() -> None:
    # An idle agent of pool `docker` exists; had the build wanted `docker`, Jenkins would have
    # named the label (two nodes match), not static-1.
    cfg = config(*POOLS, {"name": "linux", "labels": ["docker", "linux"]})
    ours = node(A1.replace("dind", "docker"), ("docker",))
    p, mem = plan(observed([named(1)], [STATIC, ours]), cfg, Memory(), T0)
    assert [a.pool for a in provisions(p)] == ["linux"]
    assert mem.item_refused[1] == frozenset({"docker"})


def test_refusal_is_learnt_and_not_retried() -> None:
    cfg = config({"name": "docker", "labels": ["docker"]})
    p, mem = plan(observed([named(1)], [STATIC]), cfg, Memory(), T0)
    [start] = provisions(p)
    # Its node exists, and `why` still names only static-1: the pool cannot serve the item.
    starting = node(start.agent, ("docker",), online=False)
    p, mem = plan(
        observed([named(1)], [STATIC, starting], [container(start.agent, "docker")]), cfg, mem, T0 + 1
    )
    assert provisions(p) == [] and mem.item_refused[1] == frozenset({"docker"})
    [unserved] = p.unserved
    assert unserved.inferred and "static-1" in unserved.why and unserved.label == inferred_key("static-1")
    # The agent is gone later: the pool is still not tried again for that item.
    p, mem = plan(observed([named(1)], [STATIC]), cfg, mem, T0 + 2)
    assert provisions(p) == []
    # Once the item left the queue, what was learnt about it is forgotten.
    _, mem = plan(observed([], [STATIC]), cfg, mem, T0 + 3)
    assert mem.item_refused == {}


def test_our_own_node_named_gets_its_pool() -> None:
    cfg = config(*POOLS)
    gpu_agent = agent_name("gpu", 1)
    nodes = [node(gpu_agent, ("docker", "gpu"), busy=1)]
    mem = Memory()
    _, mem = plan(observed([], nodes, [container(gpu_agent, "gpu")]), cfg, mem, T0)  # adopted
    p, _ = plan(observed([named(1, gpu_agent)], nodes, [container(gpu_agent, "gpu")]), cfg, mem, T0 + 1)
    assert [a.pool for a in provisions(p)] == ["gpu"]


def test_an_exact_or_remembered_label_is_not_inferred() -> None:
    cfg = config(*POOLS)
    mem = Memory(item_labels={1: "docker&&gpu"})
    p, _ = plan(observed([named(1)], [STATIC]), cfg, mem, T0)
    assert [a.pool for a in provisions(p)] == ["gpu"] and p.inferred == {}


def test_a_connected_busy_look_alike_node_is_never_touched() -> None:
    # Named like ours, connected from elsewhere, running a build: not ours (no marker).
    look_alike = node(A1, busy=1, description="")
    obs = observed([], [look_alike])
    _, mem = plan(obs, config(), Memory(), T0)
    p, mem = plan(obs, config(), mem, T0 + 10_000)
    assert p.actions == () and mem.agents == {}


def test_even_our_own_connected_node_is_never_an_orphan() -> None:
    obs = observed([], [node(A1, busy=1)])
    _, mem = plan(obs, config(), Memory(), T0)
    p, _ = plan(obs, config(), mem, T0 + 10_000)
    assert p.actions == ()


def test_a_second_daemon_at_the_same_instance_is_detected_and_left_alone() -> None:
    theirs = node(A1, online=False, description=node_marker(INSTANCE, "other-daemon", "b"))
    obs = observed([], [theirs])
    p, mem = plan(obs, config(), Memory(daemon_id="me"), T0)
    assert p.neighbours == ("other-daemon",)
    p, _ = plan(obs, config(), mem, T0 + 10_000)
    assert p.actions == ()


def test_node_left_by_a_crash_is_removed_at_once_and_no_second_node_is_made() -> None:
    # A kill -9 between creating the node and starting its container, then a restart.
    left = node(A1, online=False, description=node_marker(INSTANCE, "me", "boot-1"))
    mem = Memory(daemon_id="me", boot="boot-2")
    p, mem = plan(observed([item(1)], [left]), config(), mem, T0)
    assert [(type(a), a.name) for a in p.actions if isinstance(a, RemoveOrphan)] == [(RemoveOrphan, A1)]
    assert provisions(p) == []  # it holds its pool's place this pass
    p, _ = plan(observed([item(1)], []), config(), mem, T0 + 1)
    assert len(provisions(p)) == 1


def test_node_of_a_launch_in_flight_holds_its_place_and_waits() -> None:
    inflight = node(A1, online=False, description=node_marker(INSTANCE, "me", "boot-2"))
    mem = Memory(daemon_id="me", boot="boot-2")
    p, mem = plan(observed([item(1)], [inflight]), config(), mem, T0)
    assert p.actions == ()


def test_adopted_one_shot_agent_connected_and_idle_is_not_trusted_as_fresh() -> None:
    cfg = config({"one_shot": True})
    p, mem = plan(observed([], [node(A1)], [container(A1)]), cfg, Memory(), T0)
    assert mem.agents[A1].builds_started == 1
    assert [(a.agent, a.reason, a.check_idle) for a in p.actions if isinstance(a, Reap)] == [
        (A1, Reason.ONE_SHOT_DONE, True)
    ]
    # one that never connected is fresh
    p, mem = plan(observed([], [node(A1, online=False)], [container(A1, created=T0 - 5)]), cfg, Memory(), T0)
    assert mem.agents[A1].builds_started == 0 and p.actions == ()


def test_a_container_whose_node_is_connected_is_never_an_orphan() -> None:
    # The state directory was lost: our running agent's node carries an old daemon id.
    node_of_old_id = node(A1, busy=1, description=node_marker(INSTANCE, "lost-id", "b"))
    obs = observed([], [node_of_old_id], [container(A1, created=T0 - 3600)])
    _, mem = plan(obs, config(), Memory(daemon_id="new-id"), T0)
    p, _ = plan(obs, config(), mem, T0 + 10_000)
    assert p.actions == ()


def test_a_container_of_an_earlier_run_without_its_node_is_removed_at_once() -> None:
    # A kill -9 between a reap's deleting the node and removing the container.
    left = replace(container(A1, created=T0 - 5), boot="boot-1")
    p, _ = plan(observed([], [], [left]), config(), Memory(daemon_id="me", boot="boot-2"), T0)
    assert [(a.kind, a.name) for a in p.actions if isinstance(a, RemoveOrphan)] == [("container", f"id-{A1}")]
    # one of this run (a launch whose node the last read missed) waits for its grace
    mine = replace(container(A1, created=T0 - 5), boot="boot-2")
    p, mem = plan(observed([], [], [mine]), config(), Memory(daemon_id="me", boot="boot-2"), T0)
    p, _ = plan(observed([], [], [mine]), config(), mem, T0 + 1)
    assert p.actions == ()


def test_nodes_made_before_the_marker_are_adopted_after_an_upgrade() -> None:
    legacy = f"agentpool {INSTANCE}: docker-in-docker agent of pool dind"
    nodes = [node(A1, description=legacy), node(agent_name("dind", 2), online=False, description=legacy)]
    p, mem = plan(observed([], nodes, [container(A1)]), config(), Memory(daemon_id="me", boot="b"), T0)
    assert A1 in mem.agents  # adopted with its container
    # the other one has no container and never connected: left by the old version, removed
    assert [a.name for a in p.actions if isinstance(a, RemoveOrphan)] == [agent_name("dind", 2)]
