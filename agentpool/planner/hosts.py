"""The docker hosts' health and loss: what each pass makes of reachability, drains and cooldowns.

A host's memory (:class:`agentpool.model.HostMemory`) records since when it is unreachable
and its last error; a host unreachable for ``host_lost_after`` is *lost*: the Jenkins nodes of
its agents that are disconnected are deleted (their builds cannot continue; connected ones are
never touched) and, once a node is gone, the agent is forgotten, so its pool may start
another elsewhere and what is left on the host when it returns is an orphan like any other.
Launch failures cool a (host, pool) pair down (:func:`agentpool.planner.memory.record_launch_failure`);
only the cooldowns still running reach placement.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from agentpool.config import Config
from agentpool.model import (
    AgentMemory,
    Cooldown,
    HostMemory,
    HostView,
    Node,
    Reason,
    RemoveOrphan,
    ResourceKind,
)


def host_health(
    views: Iterable[HostView], config: Config, hosts: Mapping[str, HostMemory], now: float
) -> dict[str, HostMemory]:
    """The hosts' memory after this pass' observation (configured hosts and those still observed)."""
    out: dict[str, HostMemory] = {}
    for name in [h.name for h in config.docker_hosts]:
        out[name] = replace(hosts[name]) if name in hosts else HostMemory()
    for view in views:
        mem = out.get(view.name) or (replace(hosts[view.name]) if view.name in hosts else HostMemory())
        if view.reachable:
            mem.unreachable_since = None
        else:
            if mem.unreachable_since is None:
                mem.unreachable_since = now
            mem.last_error, mem.last_error_at = view.error, now
        out[view.name] = mem
    return out


def draining_hosts(config: Config, hosts: Mapping[str, HostMemory]) -> frozenset[str]:
    """Hosts that get no new agents and whose idle agents are reaped: drained, or gone from the config."""
    configured = {h.name for h in config.docker_hosts}
    return frozenset(name for name, mem in hosts.items() if mem.draining or name not in configured)


def lost_for(mem: HostMemory | None, now: float) -> float | None:
    """Seconds the host has been unreachable, None while it answers."""
    if mem is None or mem.unreachable_since is None:
        return None
    return now - mem.unreachable_since


def cooling(cooldowns: Mapping[tuple[str, str], Cooldown], now: float) -> dict[tuple[str, str], float]:
    return {key: cd.until for key, cd in cooldowns.items() if cd.until > now}


def disconnected(node: Node) -> bool:
    """Jenkins shows the agent not connected (a temporarily offline node may still be: left alone)."""
    return node.offline and not node.temporarily_offline and not node.busy


@dataclass(frozen=True, slots=True)
class Lost:
    actions: tuple[RemoveOrphan, ...]  # delete the disconnected nodes of agents on lost hosts
    forget: frozenset[str]  # agents on lost hosts whose node is gone


def lost_agents(
    agents: Mapping[str, AgentMemory],
    nodes: Mapping[str, Node],
    hosts: Mapping[str, HostMemory],
    grace: float,
    now: float,
) -> Lost:
    actions: list[RemoveOrphan] = []
    forget: set[str] = set()
    for name in sorted(agents):
        agent = agents[name]
        down = lost_for(hosts.get(agent.host), now)
        if down is None or down < grace:
            continue
        node = nodes.get(name)
        if node is None:
            forget.add(name)
        elif disconnected(node):
            detail = f"docker host {agent.host} unreachable for {down:.0f}s (host_lost_after {grace:g}s)"
            actions.append(RemoveOrphan(ResourceKind.NODE, "", name, Reason.HOST_LOST, detail))
    return Lost(tuple(actions), frozenset(forget))
