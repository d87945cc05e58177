"""Jenkins' remote-API export model: visibility, ``depth`` and ``tree=`` pruning.

Jenkins does not serialise its objects field by field: Stapler walks ``@Exported``
properties, each with a visibility, and a pruner decides what is written. ``depth=N``
shows a nested property only while its visibility outranks the nesting level;
``tree=`` names exactly what to write (``*`` for any name, ``{M,N}`` ranges on lists)
and silently drops unknown names. Provisioners are written against what real Jenkins
writes, so the test controller builds its answers through the same rules instead of
hand-writing JSON shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeAlias

JsonValue: TypeAlias = "bool | int | float | str | list[JsonValue] | dict[str, JsonValue] | None"
Value: TypeAlias = "bool | int | float | str | Bean | list[Value] | dict[str, JsonValue] | Lazy | None"
Lazy: TypeAlias = "Callable[[], Value]"


@dataclass(frozen=True)
class Prop:
    """One ``@Exported`` property: name, value, visibility, and whether it is inlined.

    A callable value is computed only when the property is written: Jenkins' object
    graph has cycles (a job's ``queueItem`` has the job as ``task``) that only the
    pruner bounds.
    """

    name: str
    value: Value
    visibility: int = 1
    inline: bool = False


@dataclass
class Bean:
    """An exported object; ``cls`` is written as ``_class`` (None when Jenkins omits it)."""

    cls: str | None
    props: list[Prop] = field(default_factory=list)

    def add(self, name: str, value: Value, visibility: int = 1, inline: bool = False) -> Bean:
        self.props.append(Prop(name, value, visibility, inline))
        return self


class TreeSyntaxError(ValueError):
    """A ``tree=`` parameter Stapler would refuse."""


@dataclass
class Tree:
    """A parsed ``tree=`` node: named children, and the range applied to a list value."""

    children: dict[str, Tree] = field(default_factory=dict)
    range: tuple[int | None, int | None] | None = None


def parse_tree(text: str) -> Tree:
    """Parse ``items[id,task[name,url]],jobs[name]{0,10}`` into a :class:`Tree`."""
    parser = _TreeParser(text)
    tree = parser.parse_list()
    if parser.pos != len(text):
        raise TreeSyntaxError(f"unexpected {text[parser.pos]!r} at offset {parser.pos} in tree={text}")
    return tree


class _TreeParser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def parse_list(self) -> Tree:
        tree = Tree()
        while True:
            name = self.name()
            child = Tree()
            if self.peek() == "[":
                self.pos += 1
                child = self.parse_list()
                self.expect("]")
            if self.peek() == "{":
                child.range = self.range()
            tree.children[name] = child
            if self.peek() != ",":
                return tree
            self.pos += 1

    def peek(self) -> str | None:
        return self.text[self.pos] if self.pos < len(self.text) else None

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise TreeSyntaxError(f"expected {char!r} at offset {self.pos} in tree={self.text}")
        self.pos += 1

    def name(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in "[]{},":
            self.pos += 1
        name = self.text[start : self.pos].strip()
        if not name:
            raise TreeSyntaxError(f"missing name at offset {start} in tree={self.text}")
        return name

    def range(self) -> tuple[int | None, int | None]:
        self.expect("{")
        end = self.text.find("}", self.pos)
        if end < 0:
            raise TreeSyntaxError(f"unterminated range in tree={self.text}")
        body = self.text[self.pos : end].strip()
        self.pos = end + 1
        try:
            if "," not in body:
                index = int(body)
                return (index, index + 1)
            lo, hi = (part.strip() for part in body.split(",", 1))
            return (int(lo) if lo else None, int(hi) if hi else None)
        except ValueError:
            raise TreeSyntaxError(f"bad range {{{body}}} in tree={self.text}") from None


class Pruner:
    """Decides, property by property, what gets written (Stapler's ``TreePruner``)."""

    def accept(self, prop: Prop) -> Pruner | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def range(self) -> tuple[int | None, int | None] | None:
        return None


class ByDepth(Pruner):
    """``depth=N``: the top object is ``ByDepth(1 - N)``; deeper objects need more visibility."""

    def __init__(self, level: int) -> None:
        self.level = level

    def accept(self, prop: Prop) -> Pruner | None:
        if prop.visibility < self.level:
            return None
        return self if prop.inline else ByDepth(self.level + 1)


class ByTree(Pruner):
    """``tree=...``: only the named properties, whatever their visibility."""

    def __init__(self, tree: Tree) -> None:
        self.tree = tree

    def accept(self, prop: Prop) -> Pruner | None:
        sub = self.tree.children.get(prop.name) or self.tree.children.get("*")
        return ByTree(sub) if sub is not None else None

    def range(self) -> tuple[int | None, int | None] | None:
        return self.tree.range


def pruner_for(tree: str | None, depth: int) -> Pruner:
    """The pruner Jenkins uses for a request: ``tree=`` wins and makes ``depth`` irrelevant."""
    return ByTree(parse_tree(tree)) if tree else ByDepth(1 - depth)


def serialise(bean: Bean, pruner: Pruner) -> dict[str, JsonValue]:
    """Write ``bean`` as Jenkins would under ``pruner``."""
    out: dict[str, JsonValue] = {}
    if bean.cls is not None:
        out["_class"] = bean.cls
    for prop in bean.props:
        sub = pruner.accept(prop)
        if sub is not None:
            out[prop.name] = _value(prop.value, sub)
    return out


def _value(value: Value, pruner: Pruner) -> JsonValue:
    if callable(value):
        return _value(value(), pruner)
    if isinstance(value, Bean):
        return serialise(value, pruner)
    if isinstance(value, list):
        lo, hi = pruner.range() or (None, None)
        return [_value(v, pruner) for v in value[lo:hi]]
    return value
