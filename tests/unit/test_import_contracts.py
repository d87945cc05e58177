"""The import contracts of pyproject.toml hold (lint-imports), and agentpool's modules import
one another without a cycle. Both run with the unit tests, so the test command fails on a
violation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[2]
LINT = [
    sys.executable,
    "-c",
    "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
]


def run_lint(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LINT, "--no-cache", *args], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_import_contracts_are_kept() -> None:
    result = run_lint()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_broken_contract_fails_the_check(tmp_path: Path) -> None:
    config = tmp_path / "contracts.ini"
    config.write_text(
        "[importlinter]\nroot_package = agentpool\n\n"
        "[importlinter:contract:bad]\nname = the planner may not use the model\ntype = forbidden\n"
        "source_modules = agentpool.planner\nforbidden_modules = agentpool.model\n"
    )
    result = run_lint("--config", str(config))
    assert result.returncode == 1 and "BROKEN" in result.stdout


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of modules that import one another (size > 1)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycle_in_the_package() -> None:
    g = grimp.build_graph("agentpool", cache_dir=None)
    modules = set(g.modules)
    graph = {m: {i for i in g.find_modules_directly_imported_by(m) if i in modules} for m in modules}
    assert strongly_connected(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
