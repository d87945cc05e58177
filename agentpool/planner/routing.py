"""Demand and routing: which waiting items count, grouped by label, and which pools may serve them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import msgspec

from agentpool.config import PoolConfig
from agentpool.labels import Expr, LabelSyntaxError, parse
from agentpool.model import ItemKind, Node, QueueItem

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
            item = msgspec.structs.replace(item, label=known[item.id], node=None)
        if item.label is not None:
            labels[item.id] = item.label
        items.append(item)
    return tuple(items), labels


def group_items(queue: Iterable[QueueItem]) -> Groups:
    """The buildable items by label, in queue order (those whose ``why`` names a node left out)."""
    groups: Groups = {}
    buildable = ItemKind.BUILDABLE
    for item in queue:
        if item.kind is buildable and (item.label is not None or item.node is None):
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


# --- labels inferred from a node named in their place ------------------------------------


def inferred_key(node: str) -> str:
    """The demand key of items whose ``why`` names only ``node`` (never a parseable expression)."""
    return f"(like ‘{node}’)"


def is_inferred(key: str) -> bool:
    return key.startswith("(like ‘")


@dataclass(frozen=True, slots=True)
class Inference:
    """Items whose expression is known only as "some expression ``node`` alone satisfies"."""

    groups: dict[str, list[QueueItem]]  # inferred key -> items
    routes: Routes  # inferred key -> candidate pools, the likeliest first
    refused: dict[int, frozenset[str]]  # item id -> pools learnt unable to serve it
    explained: dict[int, str]  # item id -> what was inferred, for `status`


def _stands_for(pool: PoolConfig, nodes: Mapping[str, Node], named: str) -> bool:
    """Some node other than ``named`` carries exactly the pool's labels.

    Such a node satisfies every expression an agent of the pool would: had the item's
    expression been one of those, Jenkins would not have named ``named`` alone.
    """
    labels = pool.label_set
    return any(name != named and node.labels - {name} == labels for name, node in nodes.items())


def infer(
    items: Iterable[QueueItem],
    pools: Sequence[PoolConfig],
    nodes: Mapping[str, Node],
    pool_of: Mapping[str, str],
    refused: Mapping[int, frozenset[str]],
) -> Inference:
    """Route items whose ``why`` names one node N instead of their label, soundly.

    The expression E is some expression that N satisfies and no other node does. So a pool
    one of whose agents (or any node with its labels) exists cannot serve E. When N is one
    of our agents (``pool_of``), N's pool can; when N is foreign, the candidates are the
    pools whose labels are all among N's, closest to N first (most labels, then config
    order). Once a candidate's node exists and ``why`` still names only N, the candidate is
    refused for that item for good (``refused``), so it is not tried again.
    """
    groups: dict[str, list[QueueItem]] = {}
    routes: Routes = {}
    learnt: dict[int, frozenset[str]] = {}
    explained: dict[int, str] = {}
    by_name = {pool.name: pool for pool in pools}
    for item in items:
        named = item.node
        node = nodes.get(named) if named is not None else None
        if named is None or node is None:
            continue
        key = inferred_key(named)
        own = pool_of.get(named)
        if own is not None and own in by_name:
            possible = [by_name[own]]
        else:
            labels = node.labels - {named}
            ordered = sorted(enumerate(pools), key=lambda pair: (-len(pair[1].labels), pair[0]))
            possible = [pool for _, pool in ordered if pool.label_set <= labels]
        no = set(refused.get(item.id, frozenset()))
        no.update(pool.name for pool in possible if _stands_for(pool, nodes, named))
        learnt[item.id] = frozenset(no)
        candidates = [pool for pool in possible if pool.name not in no]
        groups.setdefault(key, []).append(item)
        routes[key] = candidates
        tried = f"; refused by pool(s) {', '.join(sorted(no))}" if no else ""
        explained[item.id] = (
            f"label inferred: some expression only ‘{named}’ satisfies; "
            f"candidate pools: {', '.join(p.name for p in candidates) or 'none'}{tried}"
        )
    return Inference(groups, routes, learnt, explained)
