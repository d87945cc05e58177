"""What is ours: the agents, nodes and volumes of this instance in one observation.

An observation holds everything the backends and Jenkins showed; only what carries this
instance's prefix is ours. A node is ours by the marker this daemon writes in its
description when it creates it (:func:`node_marker`: instance, daemon id, boot), never by
its name alone: a look-alike node connected from elsewhere, or another daemon's left at the
same ``instance``, is never touched. After a restart memory is empty, and the agents are
adopted from what has both an agent resource (container) and a node of ours.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agentpool.config import Config, PoolConfig
from agentpool.model import AgentMemory, AgentResource, Memory, Node, Observed, Volume
from agentpool.planner.names import agent_pattern

MARKER_PREFIX = "agentpool:"


def node_marker(instance: str, daemon_id: str, boot: str = "") -> str:
    """The first word of the description of every node agentpool creates: who made it, when.

    ``daemon_id`` is stable per installation (kept in the state directory); ``boot`` changes
    with every start, so that a node left by an earlier run is told from a launch in flight.
    """
    return f"{MARKER_PREFIX}{instance}:{daemon_id}" + (f":{boot}" if boot else "")


def read_marker(node: Node) -> tuple[str, str, str] | None:
    """(instance, daemon id, boot) of an agentpool node's marker; None for any other node."""
    word = node.description.split(maxsplit=1)[0] if node.description.strip() else ""
    if not word.startswith(MARKER_PREFIX):
        return None
    parts = word[len(MARKER_PREFIX) :].split(":")
    if len(parts) < 2 or not parts[0]:
        return None
    return parts[0], parts[1], parts[2] if len(parts) > 2 else ""


@dataclass(frozen=True, slots=True)
class Ours:
    """This instance's share of one observation (reachable hosts only)."""

    containers: Mapping[str, AgentResource]  # agent name -> its (first) container
    extra_containers: tuple[AgentResource, ...]  # a second container claiming an agent's name
    volumes: tuple[Volume, ...]
    nodes: Mapping[str, Node]  # every node Jenkins reported, ours or not
    our_nodes: Mapping[str, Node]
    node_pools: Mapping[str, str]  # our node -> its pool
    left_behind: frozenset[str]  # our nodes made by an earlier run of this daemon
    neighbours: frozenset[str]  # daemon ids of other daemons at our instance on this controller
    boot: str  # this run of the daemon (Memory.boot)
    reachable: frozenset[str]  # hosts that answered
    all_hosts_reachable: bool


def what_is_ours(observed: Observed, config: Config, memory: Memory) -> Ours:
    agents = memory.agents
    prefix = f"{config.instance}-"
    containers: dict[str, AgentResource] = {}
    extra: list[AgentResource] = []
    volumes: list[Volume] = []
    reachable = frozenset(h.name for h in observed.hosts if h.reachable)
    for view in observed.hosts:
        if not view.reachable:
            continue
        for c in view.containers:
            if not c.name.startswith(prefix):
                continue
            agent = c.agent or c.name
            if agent in containers:
                extra.append(c)
            else:
                containers[agent] = c
        volumes.extend(v for v in view.volumes if v.name.startswith(prefix))
    nodes = {n.name: n for n in observed.nodes or ()}
    pattern = agent_pattern(config.instance)
    our_nodes: dict[str, Node] = {}
    node_pools: dict[str, str] = {}
    left_behind: set[str] = set()
    neighbours: set[str] = set()
    for name, node in nodes.items():
        marker = read_marker(node)
        if marker is None and node.description.startswith(f"agentpool {config.instance}: "):
            # made before nodes carried the marker (an upgrade): ours, from an earlier run
            marker = (config.instance, memory.daemon_id, "")
        mine = marker is not None and marker[:2] == (config.instance, memory.daemon_id)
        if marker is not None and marker[0] == config.instance and not mine:
            neighbours.add(marker[1])
            continue
        if not mine and name not in agents:
            continue
        our_nodes[name] = node
        if name in agents:
            node_pools[name] = agents[name].pool
        elif name in containers:
            node_pools[name] = containers[name].pool
        elif m := pattern.match(name):
            node_pools[name] = m.group("pool")
        if mine and marker is not None and marker[2] != memory.boot and name not in agents:
            left_behind.add(name)
    return Ours(
        containers=containers,
        extra_containers=tuple(extra),
        volumes=tuple(volumes),
        nodes=nodes,
        our_nodes=our_nodes,
        node_pools=node_pools,
        left_behind=frozenset(left_behind),
        neighbours=frozenset(neighbours),
        boot=memory.boot,
        reachable=reachable,
        all_hosts_reachable=all(h.name in reachable for h in config.docker_hosts),
    )


def adopt(
    ours: Ours, pools: Mapping[str, PoolConfig], agents: Mapping[str, AgentMemory], now: float
) -> dict[str, AgentMemory]:
    """The agents memory does not know of (after a restart): a container with a node."""
    held = {(v.host, v.agent): v.name for v in ours.volumes if not v.free}
    adopted: dict[str, AgentMemory] = {}
    for name, container in ours.containers.items():
        node = ours.our_nodes.get(name)
        if name in agents or node is None:
            continue
        pool = pools.get(container.pool)
        connected = not node.offline or node.busy or node.temporarily_offline
        # A one-shot agent's build is recorded in Jenkins by our cordon (taken offline). One
        # found connected and idle without that record may have run a build unseen before a
        # crash: only one that never connected is trusted as fresh.
        used = pool is not None and pool.one_shot and connected and not node.busy
        adopted[name] = AgentMemory(
            name=name,
            pool=container.pool,
            host=container.host,
            launched_at=container.created,
            online_at=now if connected else None,
            builds_started=1 if used else 0,
            volume=container.volume or held.get((container.host, name), ""),
        )
    return adopted
