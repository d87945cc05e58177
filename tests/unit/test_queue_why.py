"""The label and kind of queued items, recovered from every `why` template Jenkins uses."""

from __future__ import annotations

from typing import Any

import pytest

from agentpool.model import Executor, ItemKind, Node
from agentpool.why import ambiguous, item_from_raw, item_kind, label_from_item, with_exact_labels


def node(name: str, *labels: str) -> Node:
    return Node(
        name=name,
        labels=frozenset({name, *labels}),
        offline=False,
        temporarily_offline=False,
        offline_reason="",
        executors=(Executor(idle=True),),
    )


NODES = (
    node("agent-1", "docker", "linux"),
    node("agentpool-dind-0a1b2c", "docker", "linux"),
    node("bare"),
)


def names(nodes: tuple[Node, ...]) -> set[str]:
    return {n.name for n in nodes}


def curly(text: str) -> str:
    return text.replace("<", "‘").replace(">", "’")


def straight(text: str) -> str:
    return text.replace("<", "'").replace(">", "'")


# (why, label, node): a node named in place of the label gives no label, only that node.
WHY_ROWS = [
    ("Waiting for next available executor", "", None),
    ("There are no nodes with the label <docker>", "docker", None),
    ("There are no nodes with the label <docker&&linux>", "docker&&linux", None),
    ("All nodes of label <docker&&linux> are offline", "docker&&linux", None),
    ("Waiting for next available executor on <docker||arm>", "docker||arm", None),
    ("Waiting for next available executor on <agent-1>", None, "agent-1"),
    ("Waiting for next available executor on <agentpool-dind-0a1b2c>", None, "agentpool-dind-0a1b2c"),
    ("<agent-1> is offline", None, "agent-1"),
    ("<bare> is offline", None, "bare"),
    ("<agent-1> is not accepting tasks", None, "agent-1"),
    ("<agent-1> is reserved for jobs with matching label expression", "", None),
    ("<agent-1> doesn’t have label <gpu>", "gpu", None),
    ("<agent-1> is reserved for jobs with matching label expression; <bare> is offline", "", None),
    ("Jenkins is about to shut down", None, None),
    ("Something Jenkins says in a later version", None, None),
]


@pytest.mark.parametrize("quote", [curly, straight], ids=["curly", "straight"])
@pytest.mark.parametrize(("why", "label", "named"), WHY_ROWS)
def test_every_why_template(quote: Any, why: str, label: str | None, named: str | None) -> None:
    assert label_from_item(None, quote(why), names(NODES)) == (label, named)


def test_labels_from_why_are_normalised() -> None:
    assert label_from_item(None, "There are no nodes with the label ‘docker && ( linux )’", names(NODES)) == (
        "docker&&(linux)",
        None,
    )


def test_a_node_named_for_the_label_never_becomes_its_labels() -> None:
    # A `docker` build behind a busy static node labelled `docker linux ubuntu-22`: Jenkins names
    # the node; its labels' conjunction would narrow the build's expression.
    static = node("static-1", "docker", "linux", "ubuntu-22")
    why = "Waiting for next available executor on ‘static-1’"
    assert label_from_item(None, why, names((static,))) == (None, "static-1")
    # a freestyle task's labelExpression is exact
    assert label_from_item("docker", why, names((static,))) == ("docker", None)


def test_unknown_name_in_a_node_template_is_unknown() -> None:
    assert label_from_item(None, "‘gone-node’ is offline", names(NODES)) == (None, None)


def test_without_any_agent_node_the_label_is_unknown() -> None:
    # Jenkins says "Waiting for next available executor" for every item while no agent node exists.
    assert label_from_item(None, "Waiting for next available executor", names(())) == (None, None)
    # a freestyle task's exported labelExpression still tells
    why = "Waiting for next available executor"
    assert label_from_item("docker && linux", why, names(())) == ("docker&&linux", None)
    assert label_from_item("", "Waiting for next available executor", names(())) == ("", None)


@pytest.mark.parametrize(
    ("expression", "label"),
    [("docker && linux", "docker&&linux"), ("  ", ""), ("", ""), ("a||b&&!c", "a||b&&!c"), ("a &&", None)],
)
def test_exported_label_expression_when_why_names_no_label(expression: str, label: str | None) -> None:
    assert label_from_item(expression, "‘agent-1’ is offline", names(NODES))[0] == label


def test_a_label_why_names_wins_over_label_expression() -> None:
    # Label assignment actions (NodeLabel parameter, matrix) are applied before `why` is written.
    assert label_from_item("docker", "There are no nodes with the label ‘other’", names(NODES)) == (
        "other",
        None,
    )


@pytest.mark.parametrize(
    ("cls", "flags", "kind"),
    [
        ("hudson.model.Queue$WaitingItem", {}, ItemKind.WAITING),
        ("hudson.model.Queue$BlockedItem", {"blocked": True}, ItemKind.BLOCKED),
        ("hudson.model.Queue$BuildableItem", {"buildable": True}, ItemKind.BUILDABLE),
        ("hudson.model.Queue$BuildableItem", {"buildable": True, "pending": True}, ItemKind.PENDING),
        ("hudson.model.Queue$LeftItem", {}, ItemKind.WAITING),
        ("", {"buildable": True}, ItemKind.BUILDABLE),
        ("", {"blocked": True}, ItemKind.BLOCKED),
    ],
)
def test_item_kind(cls: str, flags: dict[str, bool], kind: ItemKind) -> None:
    assert item_kind(cls, **flags) is kind


def raw_item(task: dict[str, Any], why: str, cls: str = "hudson.model.Queue$BuildableItem") -> dict[str, Any]:
    return {
        "_class": cls,
        "id": 42,
        "why": why,
        "inQueueSince": 1717000000000,
        "buildable": cls.endswith("BuildableItem"),
        "blocked": False,
        "pending": False,
        "stuck": True,
        "task": task,
    }


FREESTYLE = {"_class": "hudson.model.FreeStyleProject", "name": "app", "url": "http://j/job/app/"}
PLACEHOLDER = {
    "_class": "org.jenkinsci.plugins.workflow.support.steps.ExecutorStepExecution$PlaceholderTask",
    "name": "part of p #3",
    "url": "job/p/3/",
}


def test_freestyle_item_uses_its_label_expression() -> None:
    item = item_from_raw(
        raw_item({**FREESTYLE, "labelExpression": "docker && linux"}, "Waiting for next available executor"),
        (),
    )
    assert (item.id, item.kind, item.task_name, item.label) == (
        42,
        ItemKind.BUILDABLE,
        "app",
        "docker&&linux",
    )
    assert item.in_queue_since == 1717000000.0


def test_null_label_expression_is_no_proof_of_no_label() -> None:
    # No agent node: `why` hides the label, and a null labelExpression does not tell either.
    item = item_from_raw(
        raw_item({**FREESTYLE, "labelExpression": None}, "Waiting for next available executor"), ()
    )
    assert item.label is None
    # A label assignment action gave the roaming job a label: `why` names it.
    item = item_from_raw(
        raw_item({**FREESTYLE, "labelExpression": None}, "There are no nodes with the label ‘gpu’"), NODES
    )
    assert item.label == "gpu"
    item = item_from_raw(
        raw_item({**FREESTYLE, "labelExpression": None}, "Waiting for next available executor"), NODES
    )
    assert item.label == ""


def test_exact_labels_fill_ambiguous_items_only() -> None:
    static = node("static-1", "docker", "linux")
    named = item_from_raw(
        raw_item(PLACEHOLDER, "Waiting for next available executor on ‘static-1’"), (static,)
    )
    assert ambiguous(named) and named.node == "static-1"
    filled = with_exact_labels([named], {42: "docker && linux", 7: "x"})
    assert (filled[0].label, filled[0].node, filled[0].exact) == ("docker&&linux", None, True)
    assert with_exact_labels([named], {42: ""})[0].label == ""
    labelled = item_from_raw(raw_item(PLACEHOLDER, "There are no nodes with the label ‘a’"), (static,))
    assert with_exact_labels([labelled], {42: "b"})[0].label == "a"


def test_pipeline_placeholder_reads_why() -> None:
    item = item_from_raw(raw_item(PLACEHOLDER, "There are no nodes with the label ‘docker&&linux’"), NODES)
    assert (item.task_name, item.label) == ("part of p #3", "docker&&linux")


def test_pipeline_placeholder_without_agent_nodes_is_unknown() -> None:
    item = item_from_raw(raw_item(PLACEHOLDER, "Waiting for next available executor"), ())
    assert item.label is None


def test_quiet_period_item() -> None:
    item = item_from_raw(
        raw_item(
            {**FREESTYLE, "labelExpression": "docker"},
            "In the quiet period. Expires in 4.9 sec",
            "hudson.model.Queue$WaitingItem",
        ),
        NODES,
    )
    assert (item.kind, item.label) == (ItemKind.WAITING, "docker")
