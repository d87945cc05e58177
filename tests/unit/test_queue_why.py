"""The label and kind of queued items, recovered from every `why` template Jenkins uses."""

from __future__ import annotations

from typing import Any

import pytest

from agentpool.model import Executor, ItemKind, Node
from agentpool.why import item_from_raw, item_kind, label_from_item


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


def curly(text: str) -> str:
    return text.replace("<", "‘").replace(">", "’")


def straight(text: str) -> str:
    return text.replace("<", "'").replace(">", "'")


WHY_ROWS = [
    ("Waiting for next available executor", ""),
    ("There are no nodes with the label <docker>", "docker"),
    ("There are no nodes with the label <docker&&linux>", "docker&&linux"),
    ("All nodes of label <docker&&linux> are offline", "docker&&linux"),
    ("Waiting for next available executor on <docker||arm>", "docker||arm"),
    ("Waiting for next available executor on <agent-1>", "docker&&linux"),
    ("Waiting for next available executor on <agentpool-dind-0a1b2c>", "docker&&linux"),
    ("<agent-1> is offline", "docker&&linux"),
    ("<bare> is offline", "bare"),
    ("<agent-1> is not accepting tasks", "docker&&linux"),
    ("<agent-1> is reserved for jobs with matching label expression", ""),
    ("<agent-1> doesn’t have label <gpu>", "gpu"),
    ("<agent-1> is reserved for jobs with matching label expression; <bare> is offline", ""),
    ("Jenkins is about to shut down", None),
    ("Something Jenkins says in a later version", None),
]


@pytest.mark.parametrize("quote", [curly, straight], ids=["curly", "straight"])
@pytest.mark.parametrize(("why", "label"), WHY_ROWS)
def test_every_why_template(quote: Any, why: str, label: str | None) -> None:
    assert label_from_item(None, quote(why), NODES) == label


def test_labels_from_why_are_normalised() -> None:
    assert label_from_item(None, "There are no nodes with the label ‘docker && ( linux )’", NODES) == (
        "docker&&(linux)"
    )


def test_unknown_name_in_a_node_template_is_read_as_a_label() -> None:
    assert label_from_item(None, "‘gone-node’ is offline", NODES) == "gone-node"


def test_without_any_agent_node_the_label_is_unknown() -> None:
    # Jenkins says "Waiting for next available executor" for every item while no agent node exists.
    assert label_from_item(None, "Waiting for next available executor", ()) is None
    # a freestyle task's exported labelExpression still tells
    assert label_from_item("docker && linux", "Waiting for next available executor", ()) == "docker&&linux"
    assert label_from_item("", "Waiting for next available executor", ()) == ""


@pytest.mark.parametrize(
    ("expression", "label"),
    [("docker && linux", "docker&&linux"), ("  ", ""), ("", ""), ("a||b&&!c", "a||b&&!c"), ("a &&", None)],
)
def test_exported_label_expression_wins(expression: str, label: str | None) -> None:
    assert label_from_item(expression, "There are no nodes with the label ‘other’", NODES) == label


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


def test_freestyle_item_without_label_exports_null() -> None:
    item = item_from_raw(
        raw_item({**FREESTYLE, "labelExpression": None}, "Waiting for next available executor"), ()
    )
    assert item.label == ""


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
