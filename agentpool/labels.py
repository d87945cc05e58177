"""Jenkins label expressions: parse, evaluate, and print them the way Jenkins does.

Both halves of the project need the same semantics: the provisioner decides which pool
serves a queued item's expression, and the test controller decides which node may run it
and what its ``why`` text says. Jenkins' grammar (``LabelExpression.g4``) binds, from
loosest to tightest, ``<->``, ``->``, ``||``, ``&&``, ``!``; binary operators associate
to the left; parentheses written by the user are kept when the expression is printed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache

from agentpool.errors import AgentpoolError


class LabelSyntaxError(AgentpoolError, ValueError):
    """The text is not a valid Jenkins label expression."""


class Precedence(IntEnum):
    """Jenkins' ``LabelOperatorPrecedence``: a larger value binds more loosely."""

    ATOM = 0
    NOT = 1
    AND = 2
    OR = 3
    IMPLIES = 4
    IFF = 5


_OPERATOR_TEXT = {
    Precedence.AND: "&&",
    Precedence.OR: "||",
    Precedence.IMPLIES: "->",
    Precedence.IFF: "<->",
}

# Characters that end an unquoted atom (Jenkins' lexer); '-' and '<' only when they
# start an operator.
_ATOM_STOP = set('&|!()"') | set(" \t\r\n")
# ``LabelAtom.needsEscape``: what ``Jenkins.checkGoodName`` refuses, plus blanks and parentheses.
_UNSAFE_IN_NAMES = set("?*/\\%!@#$^&|<>[]:;")
_ESCAPED_TOO = set(" ()\t\n")
# ``QuotedStringTokenizer.unquote``: the escapes a quoted atom may use.
_UNQUOTE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "f": "\f", "b": "\b"}
_QUOTE_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\f": "\\f", "\b": "\\b"}


class Expr:
    """A parsed label expression."""

    precedence: Precedence = Precedence.ATOM

    def matches(self, labels: Iterable[str] | frozenset[str]) -> bool:
        """Whether a node carrying ``labels`` satisfies the expression."""
        return self._eval(labels if isinstance(labels, frozenset) else frozenset(labels))

    def _eval(self, labels: frozenset[str]) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def atoms(self) -> frozenset[str]:
        """Every label name the expression mentions."""
        raise NotImplementedError  # pragma: no cover - abstract

    def __str__(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class Atom(Expr):
    name: str

    def _eval(self, labels: frozenset[str]) -> bool:
        return self.name in labels

    def atoms(self) -> frozenset[str]:
        return frozenset((self.name,))

    def __str__(self) -> str:
        return quote_atom(self.name)


@dataclass(frozen=True)
class Paren(Expr):
    inner: Expr

    def _eval(self, labels: frozenset[str]) -> bool:
        return self.inner._eval(labels)

    def atoms(self) -> frozenset[str]:
        return self.inner.atoms()

    def __str__(self) -> str:
        return f"({self.inner})"


@dataclass(frozen=True)
class Not(Expr):
    inner: Expr
    precedence = Precedence.NOT

    def _eval(self, labels: frozenset[str]) -> bool:
        return not self.inner._eval(labels)

    def atoms(self) -> frozenset[str]:
        return self.inner.atoms()

    def __str__(self) -> str:
        return "!" + _paren(Precedence.NOT, self.inner)


@dataclass(frozen=True)
class Binary(Expr):
    op: Precedence
    lhs: Expr
    rhs: Expr

    def __post_init__(self) -> None:
        object.__setattr__(self, "precedence", self.op)

    def _eval(self, labels: frozenset[str]) -> bool:
        left = self.lhs._eval(labels)
        if self.op is Precedence.AND:
            return left and self.rhs._eval(labels)
        if self.op is Precedence.OR:
            return left or self.rhs._eval(labels)
        if self.op is Precedence.IMPLIES:
            return (not left) or self.rhs._eval(labels)
        return left == self.rhs._eval(labels)

    def atoms(self) -> frozenset[str]:
        return self.lhs.atoms() | self.rhs.atoms()

    def __str__(self) -> str:
        return _paren(self.op, self.lhs) + _OPERATOR_TEXT[self.op] + _paren(self.op, self.rhs)


def _paren(op: Precedence, expr: Expr) -> str:
    return f"({expr})" if op < expr.precedence else str(expr)


def needs_escape(name: str) -> bool:
    """``LabelAtom.needsEscape``: not a good Jenkins name, or holds blanks or parentheses."""
    if not name or name.strip() in (".", ".."):
        return True
    return any(
        ch in _UNSAFE_IN_NAMES or ch in _ESCAPED_TOO or ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F
        for ch in name
    )


def quote_atom(name: str) -> str:
    """Print an atom as Jenkins' ``LabelAtom.escape`` does (``QuotedStringTokenizer.quote``).

    Jenkins only quotes what ``needs_escape`` flags: ``a=b`` or ``a"b`` stay bare, ``jdk:11``
    and ``x y`` get quotes.
    """
    if not needs_escape(name):
        return name
    return '"' + "".join(_QUOTE_ESCAPES.get(ch, ch) for ch in name) + '"'


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
        elif text.startswith("&&", i) or text.startswith("||", i):
            tokens.append(text[i : i + 2])
            i += 2
        elif text.startswith("<->", i):
            tokens.append("<->")
            i += 3
        elif text.startswith("->", i):
            tokens.append("->")
            i += 2
        elif c in "!()":
            tokens.append(c)
            i += 1
        elif c == '"':
            j, buf = i + 1, []
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                    if text[j] == "u" and j + 4 < n:
                        digits = text[j + 1 : j + 5]
                        if not all(c in "0123456789abcdefABCDEF" for c in digits):
                            raise LabelSyntaxError(f"bad \\u escape {digits!r} in {text!r}")
                        buf.append(chr(int(digits, 16)))
                        j += 5
                        continue
                    buf.append(_UNQUOTE_ESCAPES.get(text[j], text[j]))
                else:
                    buf.append(text[j])
                j += 1
            if j >= n:
                raise LabelSyntaxError(f"unterminated quoted label in {text!r}")
            tokens.append('"' + "".join(buf))
            i = j + 1
        elif c in "&|":
            raise LabelSyntaxError(f"single {c!r} at offset {i} in {text!r} (did you mean {c * 2!r}?)")
        else:
            j = i
            while (
                j < n
                and text[j] not in _ATOM_STOP
                and not text.startswith("->", j)
                and not text.startswith("<->", j)
            ):
                j += 1
            tokens.append("=" + text[i:j])
            i = j
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise LabelSyntaxError(f"unexpected end of label expression {self.text!r}")
        self.pos += 1
        return token

    def binary(self, op: Precedence) -> Expr:
        if op is Precedence.NOT:
            return self.unary()
        lower = Precedence(op - 1)
        expr = self.binary(lower)
        while self.peek() == _OPERATOR_TEXT[op]:
            self.pos += 1
            expr = Binary(op, expr, self.binary(lower))
        return expr

    def unary(self) -> Expr:
        lexeme = self.take()
        if lexeme == "!":
            return Not(self.primary(self.take()))
        return self.primary(lexeme)

    def primary(self, lexeme: str) -> Expr:
        if lexeme == "(":
            inner = self.binary(Precedence.IFF)
            if self.take() != ")":
                raise LabelSyntaxError(f"missing ')' in label expression {self.text!r}")
            return Paren(inner)
        if lexeme[0] in '="':
            return Atom(lexeme[1:])
        raise LabelSyntaxError(f"unexpected {lexeme!r} in label expression {self.text!r}")


@lru_cache(maxsize=4096)
def parse(text: str) -> Expr:
    """Parse a label expression; raise :class:`LabelSyntaxError` when it is malformed."""
    parser = _Parser(text.strip())
    if not parser.tokens:
        raise LabelSyntaxError("empty label expression")
    expr = parser.binary(Precedence.IFF)
    if parser.peek() is not None:
        raise LabelSyntaxError(f"unexpected {parser.peek()!r} in label expression {text!r}")
    return expr


@lru_cache(maxsize=4096)
def normalise(text: str) -> str:
    """The expression as Jenkins prints it (``docker && linux`` → ``docker&&linux``)."""
    return str(parse(text))


def split_labels(label_string: str) -> frozenset[str]:
    """A node's ``labelString`` (whitespace-separated) as a set of labels."""
    return frozenset(label_string.split())
