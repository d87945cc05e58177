"""Label expressions: Jenkins precedence, evaluation and the printed (normalised) form."""

import pytest

from agentpool.labels import LabelSyntaxError, normalise, parse

NODE = frozenset({"docker", "linux", "x86"})


@pytest.mark.parametrize(
    ("expr", "printed"),
    [
        ("docker", "docker"),
        ("docker && linux", "docker&&linux"),
        ("  docker&&linux  ", "docker&&linux"),
        ("(docker && linux)", "(docker&&linux)"),
        ("a || b && !c", "a||b&&!c"),
        ("!(a || b)", "!(a||b)"),
        ("a -> b -> c", "a->b->c"),
        ("a <-> b", "a<->b"),
        ('"x y" && z', '"x y"&&z'),
        ("a-b && c", "a-b&&c"),
        ("a && (b || c)", "a&&(b||c)"),
        ("jdk1.8 || jdk_17", "jdk1.8||jdk_17"),
    ],
)
def test_printed_as_jenkins_does(expr: str, printed: str) -> None:
    assert normalise(expr) == printed


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("docker", True),
        ("windows", False),
        ("docker&&linux", True),
        ("docker&&windows", False),
        ("docker||windows", True),
        ("!windows", True),
        ("!docker", False),
        ("windows->docker", True),
        ("docker->windows", False),
        ("docker<->linux", True),
        ("docker<->windows", False),
        ("windows<->arm", True),
        # && binds tighter than ||: windows || (docker && linux)
        ("windows||docker&&linux", True),
        # || binds tighter than ->: (windows||docker) -> arm
        ("windows||docker->arm", False),
        ("!(docker&&windows)", True),
        ('"docker"&&"linux"', True),
    ],
)
def test_evaluation(expr: str, expected: bool) -> None:
    assert parse(expr).matches(NODE) is expected


def test_atoms_lists_every_label() -> None:
    assert parse("docker && (linux || !arm)").atoms() == {"docker", "linux", "arm"}


@pytest.mark.parametrize("bad", ["", "   ", "docker &&", "(docker", "docker)", "a & b", '"open', "&& a", "!"])
def test_malformed_expressions_are_refused(bad: str) -> None:
    with pytest.raises(LabelSyntaxError):
        parse(bad)


@pytest.mark.parametrize(
    ("expr", "printed"),
    [
        # LabelAtom.escape quotes only what LabelAtom.needsEscape flags (checkGoodName + blanks/parens)
        ('"jdk:11"', '"jdk:11"'),
        ('"a/b"', '"a/b"'),
        ('"x(y)"', '"x(y)"'),
        ("a=b", "a=b"),
        ('"a\\\\b"', '"a\\\\b"'),
        ('"tab\\there"', '"tab\\there"'),
        ('"."', '"."'),
    ],
)
def test_atoms_are_quoted_exactly_when_jenkins_quotes_them(expr: str, printed: str) -> None:
    assert normalise(expr) == printed
