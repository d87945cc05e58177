"""Recover what a queued item waits for from what Jenkins exports: its label and its kind.

Jenkins does not export a queue item's label (``Queue.Item.getAssignedLabel`` is not
``@Exported``). Freestyle tasks export ``labelExpression``; a Pipeline ``node('…')`` item
exports nothing but its ``why`` text, which names the label — or, when the expression
matched exactly one node, that node's name — inside curly quotes. A node's name does not
give the expression back (it is *some* expression only that node satisfies): the item then
carries ``node`` and no label, and the planner infers what it can (docs/planner.md). While
no agent node exists at all, ``why`` hides the label entirely. The adapter calls
:func:`items_from_raw` on the items it fetched, then :func:`with_exact_labels` when the
account may read the exact labels.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import msgspec

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


def _from_why(why: str, names: Collection[str]) -> tuple[str | None, str | None]:
    """(label, node): the label ``why`` names ("" none, None unknown), or the one node it names."""
    text = why.strip()
    if text == _NO_LABEL:
        # Jenkins drops the label while no agent node exists: the item may well have one.
        return ("" if names else None), None
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
    task_label_expression: str | None, why: str, node_names: Collection[str]
) -> tuple[str | None, str | None]:
    """(label, node): the item's label expression, Jenkins-normalised, "" for none, None when
    ``why`` does not tell; and the node ``why`` names in its place (the expression matched
    exactly that node), if any. ``node_names`` are the names of the nodes of the same pass.

    ``task_label_expression`` is the freestyle task's ``labelExpression`` (None when null or
    not exported, as for Pipeline items). A label ``why`` names is what Jenkins really
    matches (label assignment actions applied) and wins; ``labelExpression`` is used when
    ``why`` names a node or nothing. A null ``labelExpression`` proves nothing.
    """
    label, node = _from_why(why, node_names)
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


class RawTask(msgspec.Struct, frozen=True, gc=False):
    """An item's ``task`` as :data:`QUEUE_TREE` asks for it (unknown fields are skipped)."""

    cls: str = msgspec.field(name="_class", default="")
    name: str | None = None
    # A string, or null when the job may roam; anything else proves nothing either.
    labelExpression: Any = None
    fullDisplayName: str | None = None


class RawItem(msgspec.Struct, frozen=True, gc=False):
    """One item of ``/queue/api/json?tree=`` + :data:`QUEUE_TREE`, decoded straight from the
    answer: a JSON decode into dicts plus a walk over them cost three times as much at 10,000
    items (bench/full_pass.py)."""

    id: int
    cls: str = msgspec.field(name="_class", default="")
    why: str | None = None
    inQueueSince: float | None = None
    buildable: bool | None = None
    blocked: bool | None = None
    pending: bool | None = None
    task: RawTask | None = None


class RawQueue(msgspec.Struct, frozen=True, gc=False):
    items: list[RawItem] = msgspec.field(default_factory=list)


_QUEUE = msgspec.json.Decoder(RawQueue)


def decode_queue(text: str | bytes) -> list[RawItem]:
    """The items of a queue answer; ``msgspec.ValidationError`` (a ValueError) names the first
    field of the wrong type by its path, e.g. ``Expected `int`, got `str` - at `$.items[3].id```."""
    return _QUEUE.decode(text).items


def item_from_raw(raw: Mapping[str, Any], nodes: Sequence[Node]) -> QueueItem:
    """One item, as decoded JSON, as a :class:`QueueItem` (tests; the adapter decodes typed)."""
    return items_from_raw((msgspec.convert(raw, RawItem),), nodes)[0]


def items_from_raw(raws: Iterable[RawItem], nodes: Sequence[Node]) -> tuple[QueueItem, ...]:
    """Every item of one queue read; the nodes are of the same pass.

    Items waiting for the same thing share their ``why`` text, so each distinct
    (expression, why) is read once per call: ten thousand items cost a few dozen regex reads.
    """
    names = {node.name for node in nodes}
    labels: dict[tuple[str | None, str], tuple[str | None, str | None]] = {}
    kinds: dict[tuple[str, bool, bool, bool], ItemKind] = {}
    items = []
    for raw in raws:
        task = raw.task or _NO_TASK
        expression: str | None = None
        # Null when the job may roam, and blind to label assignment actions: only a string counts.
        if isinstance(task.labelExpression, str) and not task.cls.endswith(_PLACEHOLDER_TASK):
            expression = task.labelExpression
        why = raw.why or ""
        found = labels.get((expression, why))
        if found is None:
            found = labels[expression, why] = label_from_item(expression, why, names)
        flags = (raw.cls, bool(raw.buildable), bool(raw.blocked), bool(raw.pending))
        kind = kinds.get(flags)
        if kind is None:
            kind = kinds[flags] = item_kind(flags[0], buildable=flags[1], blocked=flags[2], pending=flags[3])
        since = raw.inQueueSince
        items.append(
            QueueItem(
                id=raw.id,
                kind=kind,
                task_name=task.fullDisplayName or task.name or "",
                why=why,
                in_queue_since=since / 1000.0 if since is not None else 0.0,
                label=found[0],
                node=found[1],
            )
        )
    return tuple(items)


_NO_TASK = RawTask()


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
                item = msgspec.structs.replace(item, label=normal, node=None, exact=True)
        out.append(item)
    return tuple(out)
