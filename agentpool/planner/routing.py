"""Demand and routing: which waiting items count, grouped by label, and which pools may serve them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from agentpool.config import PoolConfig
from agentpool.labels import Expr, LabelSyntaxError, parse
from agentpool.model import ItemKind, QueueItem

# The key of `Plan.demand` for items whose label Jenkins hides.
UNKNOWN_LABEL = "(unknown)"

# waiting items by label expression; None: label hidden by Jenkins
Groups = dict[str | None, list[QueueItem]]
# label expression -> the pools that may serve it, best fit first
Routes = dict[str, list[PoolConfig]]


def label_expr(label: str) -> Expr | None:
    """The parsed expression, None when it does not parse (then no pool matches)."""
    try:
        return parse(label)
    except LabelSyntaxError:
        return None


def matching_pools(label: str, pools: Iterable[PoolConfig]) -> list[PoolConfig]:
    """The pools that may serve ``label``, best fit (fewest labels) first, then config order.

    ``""`` (no label) is served only by pools that are not exclusive.
    """
    ordered = sorted(enumerate(pools), key=lambda pair: (len(pair[1].labels), pair[0]))
    if label == "":
        return [pool for _, pool in ordered if not pool.exclusive]
    expr = label_expr(label)
    if expr is None:
        return []
    return [pool for _, pool in ordered if expr.matches(pool.label_set)]


def first_seen(queue: Iterable[QueueItem], seen: Mapping[int, float], now: float) -> dict[int, float]:
    """When each waiting item was first seen (kept from earlier passes)."""
    return {i.id: seen.get(i.id, now) for i in queue}


def remember_labels(
    queue: tuple[QueueItem, ...], known: Mapping[int, str]
) -> tuple[tuple[QueueItem, ...], dict[int, str]]:
    """Fill in hidden labels from earlier passes; return the items and the labels to remember."""
    labels: dict[int, str] = {}
    items = []
    for item in queue:
        if item.label is None and item.id in known:
            item = replace(item, label=known[item.id])
        if item.label is not None:
            labels[item.id] = item.label
        items.append(item)
    return tuple(items), labels


def group_items(queue: Iterable[QueueItem]) -> Groups:
    """The buildable items by label, in queue order."""
    groups: Groups = {}
    buildable = ItemKind.BUILDABLE
    for item in queue:
        if item.kind is buildable:
            group = groups.get(item.label)
            if group is None:
                groups[item.label] = [item]
            else:
                group.append(item)
    return groups


def demand_counts(groups: Groups) -> dict[str, int]:
    """Waiting items per label expression (the metrics' view)."""
    return {UNKNOWN_LABEL if label is None else label: len(items) for label, items in groups.items()}


def route(groups: Groups, pools: Iterable[PoolConfig]) -> Routes:
    pools = tuple(pools)
    return {label: matching_pools(label, pools) for label in groups if label is not None}


def pools_in_demand(routes: Routes) -> frozenset[str]:
    """The pools some waiting item is routed to (their idle agents are not reaped)."""
    return frozenset(pool.name for candidates in routes.values() for pool in candidates)
