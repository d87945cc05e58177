"""Folding a finished action's outcome into the planner's memory, and the lines it logs.

The engine's pass (observe, plan, execute) and its bookkeeping are two jobs; this module is
the second. :func:`fold` takes the memory and one outcome the executor handed back and
returns the memory after it: launches recorded or counted as failures (with their backoff
or host cooldown), reaps and orphan removals recorded or undone, one decision line each,
and the hooks told. Beside it, the lines a pass logs about what changed: agents come online
(:func:`log_new_online`) and another daemon seen at our instance (:func:`report_neighbours`).
:func:`decision` is the one way the engine logs a decision.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import assert_never

from agentpool import planner
from agentpool.config import Config
from agentpool.errors import System
from agentpool.hostimages import ImageKeeper
from agentpool.model import CompleteLaunch, Cordon, Memory, Provision, Reap, RemoveOrphan
from agentpool.report import Hooks, Outcome

log = logging.getLogger("agentpool")

Forget = Callable[[str], None]


def decision(event: str, level: int = logging.INFO, /, **fields: object) -> None:
    """One log line per decision: the event as the message, its facts as fields (key=value or JSON)."""
    log.log(level, event, extra={"event": event, **fields})


def fold(
    memory: Memory,
    outcome: Outcome,
    now: float,
    *,
    config: Config,
    hooks: Hooks,
    images: ImageKeeper,
    forget: Forget,
) -> Memory:
    """The memory after ``outcome``; ``forget`` drops the executor's secret of an agent gone."""
    action = outcome.action
    if not outcome.ok and outcome.error_system is not None and outcome.error_kind is not None:
        hooks.api_error(outcome.error_system, outcome.error_kind)
    match action:
        case Provision():
            memory = _provisioned(memory, action, outcome, now, config, images, forget)
        case Reap():
            memory = _reaped(memory, action, outcome, now, config, images, forget)
        case Cordon():
            where = {"agent": action.agent, "pool": action.pool, "reason": action.reason.value}
            if outcome.ok:
                decision("cordoned", **where, detail=action.detail)
            else:
                decision("cordon failed", logging.WARNING, **where, error=outcome.error)
        case CompleteLaunch():
            where = {"agent": action.agent, "pool": action.pool, "host": action.host}
            if outcome.ok:
                decision("launch completed", **where, reason=action.reason.value, detail=action.detail)
            else:
                decision("launch completion failed", logging.WARNING, **where, error=outcome.error)
        case RemoveOrphan():
            memory = _orphan_removed(memory, action, outcome)
        case _:
            assert_never(action)
    hooks.outcome(outcome, memory, now)
    return memory


def _provisioned(
    memory: Memory,
    action: Provision,
    outcome: Outcome,
    now: float,
    config: Config,
    images: ImageKeeper,
    forget: Forget,
) -> Memory:
    where = {"agent": action.agent, "pool": action.pool, "host": action.host}
    if outcome.ok:
        memory = planner.record_provisioned(memory, action, now, volume=outcome.volume)
        decision("provisioned", **where, reason=action.reason.value, detail=action.detail)
        return memory
    on_host = action.host if outcome.error_system is System.DOCKER else None
    memory = planner.record_launch_failure(
        memory, action.pool, now, host=on_host, error=outcome.error, planned_at=action.planned_at
    )
    decision("launch failed", logging.WARNING, **where, error=outcome.error, **_tail(outcome))
    _log_backoff(memory, config, images, action.pool, now, on_host)
    forget(action.agent)
    return memory


def _reaped(
    memory: Memory,
    action: Reap,
    outcome: Outcome,
    now: float,
    config: Config,
    images: ImageKeeper,
    forget: Forget,
) -> Memory:
    where = {"agent": action.agent, "pool": action.pool, "reason": action.reason.value}
    if not outcome.ok:
        decision("reap failed", logging.WARNING, **where, error=outcome.error)
        return memory
    if not outcome.removed:
        decision("kept", **where, detail="a build arrived while it was being reaped; back online")
        return memory
    memory = planner.record_reaped(memory, action.agent)
    decision("reaped", **where, detail=action.detail, **_tail(outcome))
    if action.count_launch_failure:
        memory = planner.record_launch_failure(
            memory,
            action.pool,
            now,
            host=action.host,
            error=action.detail,
            planned_at=action.planned_at,
        )
        _log_backoff(memory, config, images, action.pool, now, action.host)
    forget(action.agent)
    return memory


def _orphan_removed(memory: Memory, action: RemoveOrphan, outcome: Outcome) -> Memory:
    where = {"kind": action.kind.value, "resource": action.name, "host": action.host}
    where["reason"] = action.reason.value
    if outcome.ok and not outcome.removed:
        decision("removal undone", **where, detail="it connected or took a build meanwhile")
    elif outcome.ok:
        key = planner.orphan_key(action.kind, action.host, action.name)
        memory = planner.record_orphan_removed(memory, key)
        decision("removed", **where, detail=action.detail, **_tail(outcome))
    else:
        decision("removal failed", logging.WARNING, **where, error=outcome.error)
    return memory


def _log_backoff(
    memory: Memory, config: Config, images: ImageKeeper, pool: str, now: float, host: str | None = None
) -> None:
    pool_config = config.pool(pool)
    if host is not None:
        if pool_config is not None:
            images.launch_failed(host, pool_config.image)
        cooldown = memory.cooldowns[(host, pool)]
        seconds = round(cooldown.until - now)
        decision(
            "cooldown", logging.WARNING, host=host, pool=pool, seconds=seconds, failures=cooldown.failures
        )
        return
    state = memory.pools[pool]
    decision(
        "backoff",
        logging.WARNING,
        pool=pool,
        seconds=round(state.backoff_until - now),
        failures=state.consecutive_failures,
    )


def _tail(outcome: Outcome) -> dict[str, str]:
    return {"log_tail": outcome.log_tail} if outcome.log_tail else {}


def log_new_online(before: Memory, after: Memory, hooks: Hooks) -> None:
    """An ``online`` line for each agent that connected between the two memories, an
    ``adopted`` line for each agent the plan took over (launched before a restart: provisioned
    agents are in memory already, folded in from their outcome before the plan)."""
    for name, agent in after.agents.items():
        previous = before.agents.get(name)
        if previous is None:
            decision(
                "adopted",
                agent=name,
                pool=agent.pool,
                host=agent.host,
                connected=agent.online_at is not None,
                detail="its container and node of ours were found (launched by an earlier run)",
            )
            continue
        if agent.online_at is not None and previous.online_at is None:
            waited = agent.online_at - (agent.needed_since or agent.launched_at)
            decision("online", agent=name, pool=agent.pool, host=agent.host, waited=round(waited, 1))
            hooks.agent_online(agent.pool, max(0.0, waited))


def report_neighbours(
    known: frozenset[str], neighbours: tuple[str, ...], instance: str, daemon_id: str
) -> frozenset[str]:
    """Another daemon at our instance on this controller: logged once per daemon id; the ids now seen."""
    for other in sorted(set(neighbours) - known):
        decision(
            "second daemon",
            logging.WARNING,
            instance=instance,
            daemon_id=daemon_id,
            other=other,
            detail="nodes of another agentpool daemon at this instance; neither removes the "
            "other's, but give each daemon its own `instance`",
        )
    return frozenset(neighbours)
