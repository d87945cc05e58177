"""Serving waiting items: idle executors first (other nodes', then ours), agents still
starting next, and new agents last, each label's oldest items first. Items whose label
Jenkins hides are served by one probing agent that makes the labels show.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agentpool.labels import Expr
from agentpool.model import Node, Provision, QueueItem, Reason, Unserved, UnservedReason
from agentpool.planner.launch import Blocked, Budget, Context, blocked, launch
from agentpool.planner.routing import Groups, Routes, is_inferred, label_expr

WHY_UNKNOWN = f"{UnservedReason.LABEL_UNKNOWN} (Jenkins hides labels while no agent node exists)"

_OLDEST_FIRST = operator.attrgetter("in_queue_since", "id")
_NO_POOL = Blocked(UnservedReason.NO_POOL, UnservedReason.NO_POOL.value)

# idle executors of online nodes that are not ours, by the node's labels
Foreign = dict[frozenset[str], int]


@dataclass(frozen=True, slots=True)
class Served:
    actions: tuple[Provision, ...]
    unserved: tuple[Unserved, ...]
    budget: Budget


def foreign_slots(nodes: Mapping[str, Node], our_nodes: Mapping[str, Node]) -> Foreign:
    foreign: Foreign = {}
    for name, node in nodes.items():
        if name in our_nodes or node.offline:
            continue
        slots = node.idle_executors
        if slots:
            key = node.labels - {name}
            foreign[key] = foreign.get(key, 0) + slots
    return foreign


def _use_foreign(expr: Expr, foreign: Foreign, waiting: int) -> tuple[Foreign, int]:
    left = dict(foreign)
    for labels, slots in foreign.items():
        if waiting == 0:
            break
        if slots and expr.matches(labels):
            used = min(slots, waiting)
            left[labels] = slots - used
            waiting -= used
    return left, waiting


def _use_existing(routes: Sequence[str], budget: Budget, waiting: int) -> tuple[Budget, int]:
    """Idle executors of the routed pools' agents, then those of their starting agents."""
    for starting in (False, True):
        for name in routes:
            if waiting == 0:
                break
            capacity = budget.pools[name]
            capacity, used = capacity.use_starting(waiting) if starting else capacity.use_idle(waiting)
            if used:
                budget = budget.with_pool(name, capacity)
                waiting -= used
    return budget, waiting


def _start_for(
    ctx: Context, label: str, items: Sequence[QueueItem], routes: Routes, budget: Budget, waiting: int
) -> tuple[list[Provision], Budget, int, Blocked]:
    """New agents for what is still waiting, best-fit pool first; why the rest waits."""
    actions: list[Provision] = []
    why = _NO_POOL
    needed_since = min(i.in_queue_since for i in items) if waiting else None
    for index, pool in enumerate(routes[label]):
        while waiting > 0:
            refused = blocked(ctx, pool, budget)
            if refused is not None:
                if index == 0:
                    why = refused
                break
            what = f"an inferred label {label}" if is_inferred(label) else label or "(no label)"
            detail = f"{waiting} item(s) wait for {what}"
            action, budget = launch(ctx, pool, budget, Reason.DEMAND, detail, needed_since=needed_since)
            actions.append(action)
            capacity, used = budget.pools[pool.name].use_starting(waiting)
            budget = budget.with_pool(pool.name, capacity)
            waiting -= used
    return actions, budget, waiting, why


def serve(ctx: Context, groups: Groups, routes: Routes, foreign: Foreign, budget: Budget) -> Served:
    """Serve the labelled groups, oldest waiting item first."""
    actions: list[Provision] = []
    unserved: list[Unserved] = []
    ordered = sorted(
        ((label, sorted(items, key=_OLDEST_FIRST)) for label, items in groups.items() if label is not None),
        key=lambda pair: _OLDEST_FIRST(pair[1][0]),
    )
    for label, items in ordered:
        waiting = len(items)
        inferred = is_inferred(label)
        # Only the named node satisfies an inferred expression: no other node's executor serves it.
        expr = label_expr(label) if label and not inferred else None
        if expr is not None:
            foreign, waiting = _use_foreign(expr, foreign, waiting)
        budget, waiting = _use_existing([p.name for p in routes[label]], budget, waiting)
        started, budget, waiting, why = _start_for(ctx, label, items, routes, budget, waiting)
        actions.extend(started)
        if waiting:
            rest = items[len(items) - waiting :]
            if inferred:
                unserved.extend(
                    Unserved(
                        i.id,
                        i.task_name,
                        label,  # the demand key `(like ‘N’)`: no expression is known
                        f"{why.why} (label inferred from ‘{i.node}’)",
                        why.reason,
                        True,
                    )
                    for i in rest
                )
            else:
                unserved.extend(Unserved(i.id, i.task_name, label, why.why, why.reason) for i in rest)
    return Served(tuple(actions), tuple(unserved), budget)


def probe(
    ctx: Context, items: Sequence[QueueItem], budget: Budget, no_nodes: bool, no_agents: bool
) -> Served:
    """Labels are hidden while Jenkins has no agent node: start one agent so that they show."""
    items = sorted(items, key=_OLDEST_FIRST)
    detail = WHY_UNKNOWN if no_nodes else UnservedReason.LABEL_UNKNOWN.value
    actions: list[Provision] = []
    if no_nodes and no_agents and not budget.new_agents:
        for pool in ctx.config.pools:
            if blocked(ctx, pool, budget) is None:
                why = f"{len(items)} item(s) with hidden labels: one agent reveals them"
                needed_since = min(i.in_queue_since for i in items)
                action, budget = launch(ctx, pool, budget, Reason.DEMAND, why, needed_since=needed_since)
                actions.append(action)
                detail = f"{WHY_UNKNOWN}; starting one agent of pool {pool.name} to reveal them"
                break
    unserved = tuple(Unserved(i.id, i.task_name, None, detail, UnservedReason.LABEL_UNKNOWN) for i in items)
    return Served(tuple(actions), unserved, budget)
