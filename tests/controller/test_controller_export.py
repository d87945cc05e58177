"""The ``tree=`` parser and the depth/visibility rules of Jenkins' remote API."""

from __future__ import annotations

import pytest

from agentpool_testing.jenkins.export import Bean, TreeSyntaxError, parse_tree, pruner_for, serialise


def _queue() -> Bean:
    def item(n: int, name: str) -> Bean:
        task = Bean("hudson.model.FreeStyleProject").add("name", name, 2).add("url", f"u/{name}/", 2)
        task.add("labelExpression", "docker")
        return Bean("hudson.model.Queue$BuildableItem").add("id", n).add("task", task).add("why", f"w{n}")

    items = [item(n, f"job{n}") for n in range(5)]
    return Bean("hudson.model.Queue").add("discoverableItems", []).add("items", items, inline=True)


def test_tree_parses_nesting_and_ranges() -> None:
    tree = parse_tree("items[id,task[name,url]]{1,3},jobs")
    assert set(tree.children) == {"items", "jobs"}
    items = tree.children["items"]
    assert items.range == (1, 3)
    assert set(items.children["task"].children) == {"name", "url"}
    assert tree.children["jobs"].children == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a{2}", (2, 3)),
        ("a{2,}", (2, None)),
        ("a{,4}", (None, 4)),
        ("a{1,4}", (1, 4)),
        ("a[b]{0,10}", (0, 10)),
    ],
)
def test_range_forms(text: str, expected: tuple[int | None, int | None]) -> None:
    assert parse_tree(text).children["a"].range == expected


@pytest.mark.parametrize("bad", ["", "items[", "items[id", "a,,b", "a]", "a{x}", "a{1"])
def test_malformed_trees_are_refused(bad: str) -> None:
    with pytest.raises(TreeSyntaxError):
        parse_tree(bad)


def test_tree_selects_named_fields_and_omits_unknown_names() -> None:
    out = serialise(_queue(), pruner_for("items[id,nosuch,task[name,labelExpression]]{0,2}", 0))
    assert out == {
        "_class": "hudson.model.Queue",
        "items": [
            {
                "_class": "hudson.model.Queue$BuildableItem",
                "id": 0,
                "task": {
                    "_class": "hudson.model.FreeStyleProject",
                    "name": "job0",
                    "labelExpression": "docker",
                },
            },
            {
                "_class": "hudson.model.Queue$BuildableItem",
                "id": 1,
                "task": {
                    "_class": "hudson.model.FreeStyleProject",
                    "name": "job1",
                    "labelExpression": "docker",
                },
            },
        ],
    }


def test_wildcard_and_bare_nested_names() -> None:
    out = serialise(_queue(), pruner_for("items[*]{4}", 0))
    assert out["items"] == [
        {
            "_class": "hudson.model.Queue$BuildableItem",
            "id": 4,
            "task": {"_class": "hudson.model.FreeStyleProject"},
            "why": "w4",
        }
    ]


def test_tree_ignores_depth() -> None:
    assert serialise(_queue(), pruner_for("items[id]", 5)) == serialise(_queue(), pruner_for("items[id]", 0))


def test_depth_zero_shows_nested_objects_shallowly() -> None:
    out = serialise(_queue(), pruner_for(None, 0))
    first = out["items"][0]  # type: ignore[index]
    assert first["task"] == {"_class": "hudson.model.FreeStyleProject", "name": "job0", "url": "u/job0/"}
    assert first["why"] == "w0"


def test_depth_one_exports_default_visibility_of_nested_objects() -> None:
    out = serialise(_queue(), pruner_for(None, 1))
    task = out["items"][0]["task"]  # type: ignore[index]
    assert task["labelExpression"] == "docker"


def test_lazy_values_are_only_computed_when_written() -> None:
    calls: list[int] = []

    def expensive() -> Bean:
        calls.append(1)
        return Bean(None).add("x", 1, 2)

    bean = Bean("T").add("cheap", 1).add("lazy", expensive, 5)
    assert serialise(bean, pruner_for("cheap", 0)) == {"_class": "T", "cheap": 1}
    assert calls == []
    assert serialise(bean, pruner_for(None, 0))["lazy"] == {"x": 1}
    assert calls == [1]
