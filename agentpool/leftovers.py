"""Removing what the daemon left behind (orphan nodes, containers, volumes) and putting nodes back online.

Apart from the executor because it is a procedure of its own: a leftover has no agent, pool
or undo path, only a kind, a host and a name, and a leftover node is removed with the same
care as a reap (offline → re-check → delete), so a node that took a build meanwhile stays.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import assert_never

from agentpool.backend import Backend, JenkinsPort
from agentpool.errors import ErrorKind, ExternalError
from agentpool.model import RemoveOrphan, ResourceKind
from agentpool.report import Outcome

__all__ = ["Offline", "back_online", "offline_and_idle", "remove_orphan"]

# The executor's logger: these are steps of the executor's actions.
log = logging.getLogger("agentpool.executor")


def back_online(jenkins: JenkinsPort, agent: str) -> None:
    """Put a node this daemon took offline back online; a failure is logged, not raised."""
    try:
        jenkins.set_temporarily_offline(agent, False)
    except Exception as exc:  # it stays offline and idle: the next pass reaps it again
        log.warning("putting %s back online failed: %s", agent, exc)


def remove_orphan(
    jenkins: JenkinsPort, hosts: Mapping[str, Backend], action: RemoveOrphan, stop_timeout: float
) -> Outcome:
    """Remove one leftover; a container is given ``stop_timeout`` seconds to stop."""
    match action.kind:
        case ResourceKind.NODE:
            return _remove_orphan_node(jenkins, action)
        case ResourceKind.CONTAINER:
            host = hosts[action.host]
            tail = host.logs_tail(action.name)
            host.remove_agent(action.name, stop_timeout)
            return Outcome(action, ok=True, log_tail=tail)
        case ResourceKind.VOLUME:
            hosts[action.host].remove_volume(action.name)
            return Outcome(action, ok=True)
        case _:
            assert_never(action.kind)


def _remove_orphan_node(jenkins: JenkinsPort, action: RemoveOrphan) -> Outcome:
    """Offline → re-check → delete, as a reap: a node that connected or took a build meanwhile stays."""
    checked = offline_and_idle(jenkins, action.name, "agentpool: removing this orphan node", back_online)
    if checked is None:
        return Outcome(action, ok=True)
    if not checked.idle:
        return Outcome(action, ok=True, removed=False)
    jenkins.delete_node(action.name)
    return Outcome(action, ok=True)


@dataclass(frozen=True, slots=True)
class Offline:
    idle: bool  # offline (temporarily) and running nothing: safe to delete
    took_offline: bool  # this check took it offline (a node offline before is an admin's or a cordon's)


def offline_and_idle(
    jenkins: JenkinsPort, name: str, message: str, put_back: Callable[[JenkinsPort, str], None]
) -> Offline | None:
    """Take node ``name`` offline unless it is already, then re-read it: may it be deleted?

    None when there is no such node. A node that took a build meanwhile, or that someone
    brought back online, is not idle; if this check took it offline, ``put_back`` brings it back
    (the reap's raises on failure, the orphan sweep's logs it). An offline cause already there
    (an admin's message, our one-shot cordon) is left as it is.
    """
    try:
        node = jenkins.read_node(name)
        was_offline = node.temporarily_offline
        if not was_offline:
            node = jenkins.set_temporarily_offline(name, True, message)
    except ExternalError as exc:
        if exc.kind is ErrorKind.NOT_FOUND:
            return None
        raise
    if node.busy or not node.temporarily_offline:
        if node.temporarily_offline and not was_offline:
            put_back(jenkins, name)
        return Offline(idle=False, took_offline=False)
    return Offline(idle=True, took_offline=not was_offline)
