"""Every ``why`` row of the reference, computed by the controller's queue model.

The scenarios set up nodes in each state (online and idle, busy, disconnected,
temporarily offline) and ask the model why an item waits; the expected strings are
Jenkins' English messages, curly quotes included.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from agentpool_testing.jenkins import texts
from agentpool_testing.jenkins.config import FREESTYLE, JobConfig
from agentpool_testing.jenkins.model import Jenkins, QueueItem, StepRequest, StepSink, Work


class SilentChannel:
    """A connected agent that never finishes a step (keeps its executor busy)."""

    async def run(self, step: StepRequest, sink: StepSink) -> int:
        await asyncio.Event().wait()
        return 0

    async def close(self) -> None:
        return None


@dataclass
class N:
    name: str
    labels: str = ""
    state: str = "online"  # online, busy, disconnected, temp-offline
    mode: str = "NORMAL"
    executors: int = 1


def _config(label: str | None) -> JobConfig:
    return JobConfig(kind=FREESTYLE, xml="", assigned_node=label, can_roam=label is None, shells=["true"])


def why(
    nodes: list[N], label: str | None, *, cloud: bool = False, before: Callable[[Jenkins], None] | None = None
) -> str | None:
    async def scenario() -> str | None:
        j = Jenkins("http://jenkins:8080/", quiet_period=0, cloud=cloud)
        filler = j.create_job("filler", _config(None))
        for n in nodes:
            form = {"numExecutors": n.executors, "remoteFS": "/w", "labelString": n.labels, "mode": n.mode}
            c = j.create_node(n.name, dict(form))
            if n.state in ("online", "busy", "temp-offline"):
                j.connected(c, SilentChannel())
            if n.state == "temp-offline":
                j.toggle_offline(c, "maint")
            if n.state == "busy":
                from agentpool_testing.jenkins.model import Build

                c.executors = [Work(Build(filler, 1, 0), placeholder=False) for _ in range(n.executors)]
        if before is not None:
            before(j)
        job = j.create_job("app", _config(label))
        item = j.schedule(job, 0, "admin")
        assert item.state != "left", "the scenario must leave the item waiting"
        return j.why(item)

    return asyncio.run(scenario())


def test_no_label_required() -> None:
    assert why([N("a", "docker", "busy")], None) == "Waiting for next available executor"


def test_no_node_has_the_label() -> None:
    assert why([N("a", "linux")], "docker") == "There are no nodes with the label \u2018docker\u2019"


def test_zero_nodes_with_a_cloud_reads_as_all_offline() -> None:
    assert why([N("a", "linux")], "docker", cloud=True) == "All nodes of label \u2018docker\u2019 are offline"


def test_several_nodes_all_offline() -> None:
    nodes = [N("a", "docker", "disconnected"), N("b", "docker", "temp-offline")]
    assert why(nodes, "docker") == "All nodes of label \u2018docker\u2019 are offline"


def test_several_nodes_all_busy() -> None:
    nodes = [N("a", "docker", "busy"), N("b", "docker", "busy")]
    assert why(nodes, "docker") == "Waiting for next available executor on \u2018docker\u2019"


def test_exactly_one_node_offline() -> None:
    assert why([N("agent-1", "docker", "disconnected")], "docker") == "\u2018agent-1\u2019 is offline"


def test_exactly_one_node_temporarily_offline() -> None:
    assert why([N("agent-1", "docker", "temp-offline")], "docker") == "\u2018agent-1\u2019 is offline"


def test_exactly_one_node_busy() -> None:
    expected = "Waiting for next available executor on \u2018agent-1\u2019"
    assert why([N("agent-1", "docker", "busy"), N("other", "linux")], "docker") == expected


def test_node_name_as_label_maps_to_that_node() -> None:
    assert (
        why([N("agent-1", "docker", "busy")], "agent-1")
        == "Waiting for next available executor on \u2018agent-1\u2019"
    )


def test_shutting_down() -> None:
    def quiet_down(j: Jenkins) -> None:
        j.quieting_down = True

    assert why([N("a", "docker")], "docker", before=quiet_down) == "Jenkins is about to shut down"


def test_reserved_for_matching_label_expression() -> None:
    expected = "\u2018agent-1\u2019 is reserved for jobs with matching label expression"
    assert why([N("agent-1", "docker", mode="EXCLUSIVE")], None) == expected


def test_composite_reasons_are_sorted_and_joined() -> None:
    nodes = [N("b", "docker", mode="EXCLUSIVE"), N("a", "docker", "disconnected")]
    expected = "\u2018a\u2019 is offline; \u2018b\u2019 is reserved for jobs with matching label expression"
    assert why(nodes, None) == expected


def test_expressions_appear_normalised() -> None:
    nodes = [N("a", "docker linux", "busy"), N("b", "docker linux", "busy")]
    assert why(nodes, "docker && linux") == "Waiting for next available executor on \u2018docker&&linux\u2019"
    assert why([N("a", "x")], "docker && (linux || arm)") == (
        "There are no nodes with the label \u2018docker&&(linux||arm)\u2019"
    )


@pytest.mark.parametrize("label", ["docker", None])
def test_without_any_agent_node_every_item_waits_for_an_executor(label: str | None) -> None:
    assert why([], label) == "Waiting for next available executor"


def test_exclusive_node_takes_matching_items() -> None:
    async def scenario() -> QueueItem:
        j = Jenkins("http://jenkins:8080/", quiet_period=0)
        c = j.create_node(
            "agent-1", {"numExecutors": 1, "remoteFS": "/w", "labelString": "docker", "mode": "EXCLUSIVE"}
        )
        j.connected(c, SilentChannel())
        item = j.schedule(j.create_job("app", _config("docker")), 0, "admin")
        await asyncio.sleep(0)
        await j.shutdown()
        return item

    item = asyncio.run(scenario())
    assert item.state == "left"
    assert item.executable is not None and item.executable.built_on == "agent-1"


def test_quiet_period_and_blocked_texts() -> None:
    assert texts.in_quiet_period(4900) == "In the quiet period. Expires in 4.9 sec"
    assert texts.in_quiet_period(-1) == "Finished waiting"
    assert texts.build_in_progress(7, "N/A") == "Build #7 is already in progress (ETA: N/A)"


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (5, "5 ms"),
        (120, "0.12 sec"),
        (4900, "4.9 sec"),
        (1000, "1 sec"),
        (12_000, "12 sec"),
        (63_000, "1 min 3 sec"),
        (600_000, "10 min"),
        (2 * 3600_000 + 5 * 60_000, "2 hr 5 min"),
        (86_400_000, "1 day 0 hr"),
        (3 * 86_400_000, "3 days 0 hr"),
    ],
)
def test_time_span_strings(ms: int, text: str) -> None:
    assert texts.time_span(ms) == text


@pytest.mark.parametrize(("mode", "taken"), [("NORMAL", True), ("EXCLUSIVE", False)])
def test_only_normal_nodes_take_unlabelled_items(mode: str, taken: bool) -> None:
    async def scenario() -> QueueItem:
        j = Jenkins("http://jenkins:8080/", quiet_period=0)
        c = j.create_node(
            "agent-1", {"numExecutors": 1, "remoteFS": "/w", "labelString": "docker", "mode": mode}
        )
        j.connected(c, SilentChannel())
        item = j.schedule(j.create_job("app", _config(None)), 0, "admin")
        await asyncio.sleep(0)
        await j.shutdown()
        return item

    assert (asyncio.run(scenario()).state == "left") is taken


def test_temporarily_offline_nodes_take_nothing() -> None:
    async def scenario() -> QueueItem:
        j = Jenkins("http://jenkins:8080/", quiet_period=0)
        c = j.create_node("agent-1", {"numExecutors": 1, "remoteFS": "/w", "labelString": "docker"})
        j.connected(c, SilentChannel())
        j.toggle_offline(c, "")
        return j.schedule(j.create_job("app", _config("docker")), 0, "admin")

    assert asyncio.run(scenario()).state == "buildable"
