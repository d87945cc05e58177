"""What is ours: the agents, nodes and volumes of this instance in one observation.

An observation holds everything the backends and Jenkins showed; only what carries this
instance's prefix (and, for nodes, a name of its pattern or a known agent) is ours. After
a restart memory is empty, and the agents are adopted from what has both an agent resource
(container) and a node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agentpool.config import Config, PoolConfig
from agentpool.model import AgentMemory, AgentResource, Node, Observed, Volume
from agentpool.planner.names import agent_pattern


@dataclass(frozen=True, slots=True)
class Ours:
    """This instance's share of one observation (reachable hosts only)."""

    containers: Mapping[str, AgentResource]  # agent name -> its (first) container
    extra_containers: tuple[AgentResource, ...]  # a second container claiming an agent's name
    volumes: tuple[Volume, ...]
    nodes: Mapping[str, Node]  # every node Jenkins reported, ours or not
    our_nodes: Mapping[str, Node]
    reachable: frozenset[str]  # hosts that answered
    all_hosts_reachable: bool


def what_is_ours(observed: Observed, config: Config, agents: Mapping[str, AgentMemory]) -> Ours:
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
    known_pools = {p.name for p in config.pools} | {a.pool for a in agents.values()}
    known_pools |= {c.pool for c in containers.values()}
    our_nodes: dict[str, Node] = {}
    for name, node in nodes.items():
        m = pattern.match(name)
        if name in agents or name in containers or (m and m.group("pool") in known_pools):
            our_nodes[name] = node
    return Ours(
        containers=containers,
        extra_containers=tuple(extra),
        volumes=tuple(volumes),
        nodes=nodes,
        our_nodes=our_nodes,
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
        connected = not node.offline or node.busy
        adopted[name] = AgentMemory(
            name=name,
            pool=container.pool,
            host=container.host,
            launched_at=container.created,
            online_at=now if connected else None,
            # a one-shot agent found idle and offline has done its build (we cordoned it)
            builds_started=1 if pool and pool.one_shot and node.temporarily_offline else 0,
            volume=container.volume or held.get((container.host, name), ""),
        )
    return adopted
