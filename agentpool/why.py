"""Recover what a queued item waits for from what Jenkins exports: its label and its kind.

Jenkins does not export a queue item's label (``Queue.Item.getAssignedLabel`` is not
``@Exported``). Freestyle tasks export ``labelExpression``; a Pipeline ``node('…')`` item
exports nothing but its ``why`` text, which names the label — or, when the expression
matched exactly one node, that node's name — inside curly quotes. A node's name does not
give the expression back (it is *some* expression only that node satisfies): the item then
carries ``node`` and no label, and the planner infers what it can (docs/planner.md). While
no agent node exists at all, ``why`` hides the label entirely. The adapter calls
:func:`item_from_raw` on every item it fetched, then :func:`with_exact_labels` when the
account may read the exact labels.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from agentpool.labels import LabelSyntaxError, normalise
from agentpool.model import ItemKind, Node, QueueItem

# The `tree=` the adapter fetches the queue with: everything this module reads.
QUEUE_TREE = (
    "items[_class,id,why,inQueueSince,buildable,blocked,pending,stuck,"
    "task[_class,name,url,labelExpression,fullDisplayName]]"
)

_O = "[‘'’]"  # opening quote: U+2018, or a straight quote from a mangled or older text
_C = "[’']"  # closing quote: U+2019 or straight
_NO_LABEL = "Waiting for next available executor"
# (pattern, what the quoted text names): "label" is a label expression, "node" a node name
# that stands for the expression matched by exactly that node, "unlabelled" a node that
# refused the item because it carries no label (so the item has none).
_TEMPLATES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.DOTALL), kind)
    for pattern, kind in (
        (rf"^There are no nodes with the label {_O}(.*){_C}$", "label"),
        (rf"^All nodes of label {_O}(.*){_C} are offline$", "label"),
        (rf"^Waiting for next available executor on {_O}(.*){_C}$", "label-or-node"),
        (rf"^{_O}(.*){_C} is offline$", "node"),
        (rf"^{_O}(.*){_C} is reserved for jobs with matching label expression$", "unlabelled"),
        (rf"^{_O}(.*){_C} is not accepting tasks$", "node"),
        (rf"^{_O}?.*?{_C}? doesn{_C}t have label {_O}(.*){_C}$", "label"),
    )
)
_PLACEHOLDER_TASK = "$PlaceholderTask"


def _normalised(text: str) -> str | None:
    try:
        return normalise(text)
    except LabelSyntaxError:
        return None


# The nodes of the last queue read, by name: every item of one read looks them up in the same
# answer, and building the index per item made a read O(items × nodes).
_index: tuple[Sequence[Node], dict[str, Node]] = ((), {})


def _by_name(nodes: Sequence[Node]) -> dict[str, Node]:
    global _index
    seen, index = _index
    if seen is not nodes:
        index = {node.name: node for node in nodes}
        _index = (nodes, index)
    return index


def _from_why(why: str, nodes: Sequence[Node]) -> tuple[str | None, str | None]:
    """(label, node): the label ``why`` names ("" none, None unknown), or the one node it names."""
    text = why.strip()
    if text == _NO_LABEL:
        # Jenkins drops the label while no agent node exists: the item may well have one.
        return ("" if nodes else None), None
    names = _by_name(nodes)
    # A composite blockage joins several causes with "; ": the first one we understand wins.
    for part in text.split("; "):
        for pattern, kind in _TEMPLATES:
            match = pattern.match(part.strip())
            if match is None:
                continue
            quoted = match.group(1)
            if kind == "unlabelled":
                return "", None
            if kind in ("node", "label-or-node") and quoted in names:
                # Some expression this one node satisfies and no other does: not recoverable here.
                return None, quoted
            if kind == "node":
                return None, None
            return _normalised(quoted), None
    return None, None


def label_from_item(
    task_label_expression: str | None, why: str, nodes: Sequence[Node]
) -> tuple[str | None, str | None]:
    """(label, node): the item's label expression, Jenkins-normalised, "" for none, None when
    ``why`` does not tell; and the node ``why`` names in its place (the expression matched
    exactly that node), if any.

    ``task_label_expression`` is the freestyle task's ``labelExpression`` (None when null or
    not exported, as for Pipeline items). A label ``why`` names is what Jenkins really
    matches (label assignment actions applied) and wins; ``labelExpression`` is used when
    ``why`` names a node or nothing. A null ``labelExpression`` proves nothing.
    """
    label, node = _from_why(why, nodes)
    if label is not None:
        return label, None
    if task_label_expression is not None:
        if not task_label_expression.strip():
            return "", None
        exact = _normalised(task_label_expression)
        if exact is not None:
            return exact, None
    return None, node


def item_kind(
    class_name: str, *, buildable: bool = False, blocked: bool = False, pending: bool = False
) -> ItemKind:
    """The kind of a queue item from its ``_class`` (the flags decide only for unknown classes)."""
    if class_name.endswith("$WaitingItem"):
        return ItemKind.WAITING
    if class_name.endswith("$BlockedItem"):
        return ItemKind.BLOCKED
    if class_name.endswith("$BuildableItem"):
        return ItemKind.PENDING if pending else ItemKind.BUILDABLE
    if pending:
        return ItemKind.PENDING
    if blocked:
        return ItemKind.BLOCKED
    if buildable:
        return ItemKind.BUILDABLE
    # $LeftItem and anything unknown: never a demand for an executor.
    return ItemKind.WAITING


def item_from_raw(raw: Mapping[str, Any], nodes: Sequence[Node]) -> QueueItem:
    """One item of ``/queue/api/json?tree=`` + :data:`QUEUE_TREE` as a :class:`QueueItem`."""
    task = raw.get("task") or {}
    task_class = str(task.get("_class", ""))
    expression: str | None = None
    # Null when the job may roam, and blind to label assignment actions: only a string counts.
    if not task_class.endswith(_PLACEHOLDER_TASK) and isinstance(task.get("labelExpression"), str):
        expression = task["labelExpression"]
    why = str(raw.get("why") or "")
    label, node = label_from_item(expression, why, nodes)
    since = raw.get("inQueueSince")
    return QueueItem(
        id=int(raw["id"]),
        kind=item_kind(
            str(raw.get("_class", "")),
            buildable=bool(raw.get("buildable")),
            blocked=bool(raw.get("blocked")),
            pending=bool(raw.get("pending")),
        ),
        task_name=str(task.get("fullDisplayName") or task.get("name") or ""),
        why=why,
        in_queue_since=float(since) / 1000.0 if isinstance(since, int | float) else 0.0,
        label=label,
        node=node,
    )


def ambiguous(item: QueueItem) -> bool:
    """A buildable item whose label ``why`` does not give (hidden, or a node named in its place)."""
    return item.kind is ItemKind.BUILDABLE and item.label is None


def with_exact_labels(items: Sequence[QueueItem], exact: Mapping[int, str]) -> tuple[QueueItem, ...]:
    """The items with the labels ``/scriptText`` printed (``Queue.Item.getAssignedLabel``) filled in."""
    out = []
    for item in items:
        label = exact.get(item.id)
        if item.label is None and label is not None:
            normal = _normalised(label) if label else ""
            if normal is not None:
                item = replace(item, label=normal, node=None, exact=True)
        out.append(item)
    return tuple(out)
