"""Recover what a queued item waits for from what Jenkins exports: its label and its kind.

Jenkins does not export a queue item's label (``Queue.Item.getAssignedLabel`` is not
``@Exported``). Freestyle tasks export ``labelExpression``; a Pipeline ``node('…')`` item
exports nothing but its ``why`` text, which names the label — or, when the expression
matched exactly one node, that node's name — inside curly quotes. While no agent node
exists at all, ``why`` hides the label entirely (see docs/planner.md for what the planner
does then). The adapter calls :func:`item_from_raw` on every item it fetched.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
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


def _node_label(node: Node) -> str:
    """An expression that ``node`` satisfies and that stands for it: all its labels but its name.

    For one of our agents that is exactly its pool's labels joined with ``&&``. A node whose
    only label is its own name gives its name (no pool can serve that).
    """
    labels = sorted(node.labels - {node.name})
    if not labels:
        return _normalised(node.name) or node.name
    return "&&".join(normalise(label) for label in labels)


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


def _from_why(why: str, nodes: Sequence[Node]) -> str | None:
    text = why.strip()
    if text == _NO_LABEL:
        # Jenkins drops the label while no agent node exists: the item may well have one.
        return "" if nodes else None
    # A composite blockage joins several causes with "; ": the first one we understand wins.
    for part in text.split("; "):
        for pattern, kind in _TEMPLATES:
            match = pattern.match(part.strip())
            if match is None:
                continue
            quoted = match.group(1)
            if kind == "unlabelled":
                return ""
            if kind in ("node", "label-or-node") and (node := _by_name(nodes).get(quoted)) is not None:
                return _node_label(node)
            return _normalised(quoted)
    return None


def label_from_item(task_label_expression: str | None, why: str, nodes: Sequence[Node]) -> str | None:
    """The item's label expression, Jenkins-normalised; "" for none; None when it cannot be known.

    ``task_label_expression`` is the task's exported ``labelExpression`` (None when the task
    does not export it, as for Pipeline items); ``nodes`` are the agent nodes Jenkins reports
    (the built-in node excluded).
    """
    if task_label_expression is not None:
        if not task_label_expression.strip():
            return ""
        return _normalised(task_label_expression)
    return _from_why(why, nodes)


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
    # A key that is present (even null) is exported; a Pipeline placeholder never exports it.
    if "labelExpression" in task and not task_class.endswith(_PLACEHOLDER_TASK):
        value = task["labelExpression"]
        expression = value if isinstance(value, str) else ""
    why = str(raw.get("why") or "")
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
        label=label_from_item(expression, why, nodes),
    )
