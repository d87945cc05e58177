"""The controller follows the corrected reference: queue order, ``changeOfflineCause``,
``assignedLabels`` by depth, a job's ``queueItem``, ``/scriptText``.

Every check goes through the real HTTP API (python-jenkins where it has a call), as a
provisioner would see a real Jenkins answer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import jenkins
import pytest
import requests

from agentpool_testing.jenkins import Controller, freestyle_config, pipeline_config

from .conftest import TOKEN, USER, AgentFactory

QUEUE_LABELS = 'Jenkins.instance.queue.items.each{println "${it.id}\\t${it.assignedLabel}"}'


@pytest.fixture
def busy_controller() -> Iterator[Controller]:
    """A controller whose built-in node has one executor (to make a build run and block)."""
    with Controller(token=TOKEN, builtin_executors=1, quiet_period=0) as ctl:
        yield ctl


def test_queue_lists_waiting_blocked_then_buildable_newest_first(busy_controller: Controller) -> None:
    server = jenkins.Jenkins(busy_controller.url, username=USER, password=TOKEN, timeout=10)
    server.create_node(
        "static-1",
        numExecutors=1,
        remoteFS="/w",
        labels="docker",
        launcher=jenkins.LAUNCHER_JNLP,
        launcher_params={},
    )
    server.create_job("running", freestyle_config("built-in", "sleep 3"))
    server.build_job("running")
    deadline = time.monotonic() + 10
    while busy_controller.build_result("running", 1) is not None or not server.get_running_builds():
        assert time.monotonic() < deadline, "the built-in node never started the build"
        time.sleep(0.05)
    blocked = server.build_job("running")  # not concurrent: waits for #1
    buildable = []
    for name in ("first", "second", "third"):
        server.create_job(name, freestyle_config("docker"))
        buildable.append(server.build_job(name))
        time.sleep(0.01)  # distinct buildable-since times, as queued one after another
    server.create_job("quiet", freestyle_config("docker", quiet_period=60))
    waiting = server.build_job("quiet")

    items = server.get_queue_info()
    assert [i["id"] for i in items] == [waiting, blocked, *reversed(buildable)]
    assert [i["_class"].rsplit("$", 1)[1] for i in items] == [
        "WaitingItem",
        "BlockedItem",
        "BuildableItem",
        "BuildableItem",
        "BuildableItem",
    ]
    server.cancel_queue(blocked)
    assert busy_controller.wait_for_build("running", 1, timeout=10) == "SUCCESS"


def test_executors_are_still_offered_oldest_buildable_first(
    add_agent: AgentFactory, server: jenkins.Jenkins, controller: Controller, http: requests.Session
) -> None:
    add_agent("agent-1", "docker")
    for name in ("old", "new"):
        server.create_job(name, freestyle_config("docker"))
        server.build_job(name)
        time.sleep(0.01)
    assert [i["task"]["name"] for i in server.get_queue_info()] == ["new", "old"]
    # the queue's fairness is unchanged: the item waiting longest is first to get an executor
    assert controller.queue_items()[-1]["task"] == "old"


def test_change_offline_cause_sets_temporarily_offline_idempotently(
    add_agent: AgentFactory, server: jenkins.Jenkins, controller: Controller, http: requests.Session
) -> None:
    add_agent("agent-1", "docker")
    url = controller.url + "computer/agent-1/changeOfflineCause"
    for message in ("reaping", "reaping again"):  # twice: still offline (a toggle would flip back)
        r = http.post(url, params={"offlineMessage": message}, allow_redirects=False)
        assert r.status_code == 302
        info = server.get_node_info("agent-1")
        assert info["temporarilyOffline"] is True and info["offline"] is True
        assert info["offlineCause"] == {"_class": "hudson.slaves.OfflineCause$UserCause"}
        assert info["offlineCauseReason"] == message
    # the form field works as well as the query parameter (Stapler's @QueryParameter reads both)
    http.post(url, data={"offlineMessage": "from a form"})
    assert server.get_node_info("agent-1")["offlineCauseReason"] == "from a form"
    # back online only with toggleOffline, after reading it offline
    server.enable_node("agent-1")
    assert server.get_node_info("agent-1")["temporarilyOffline"] is False


def test_change_offline_cause_is_post_only_and_knows_its_nodes(
    add_agent: AgentFactory, controller: Controller, http: requests.Session
) -> None:
    add_agent("agent-1")
    r = http.get(controller.url + "computer/agent-1/changeOfflineCause", allow_redirects=False)
    assert r.status_code == 405 and r.headers["Allow"] == "POST"
    assert http.post(controller.url + "computer/nope/changeOfflineCause").status_code == 404


LABEL_FIELDS = {
    "actions",
    "busyExecutors",
    "clouds",
    "description",
    "idleExecutors",
    "loadStatistics",
    "name",
    "nodes",
    "offline",
    "tiedJobs",
    "totalExecutors",
    "propertiesList",
}


def test_assigned_labels_are_names_at_depth_0_and_whole_labels_deeper(
    add_agent: AgentFactory, server: jenkins.Jenkins, controller: Controller, http: requests.Session
) -> None:
    add_agent("agent-1", "docker linux", executors=2)
    add_agent("agent-2", "docker")
    shallow = server.get_node_info("agent-1")["assignedLabels"]
    assert sorted(shallow, key=lambda x: x["name"]) == [
        {"name": "agent-1"},
        {"name": "docker"},
        {"name": "linux"},
    ]
    deep = {x["name"]: x for x in server.get_node_info("agent-1", depth=1)["assignedLabels"]}
    assert set(deep) == {"agent-1", "docker", "linux"}
    for label in deep.values():
        assert set(label) == LABEL_FIELDS  # whole label objects, and no _class on them
    docker = deep["docker"]
    assert docker["nodes"] == [
        {"_class": "hudson.slaves.DumbSlave", "nodeName": "agent-1"},
        {"_class": "hudson.slaves.DumbSlave", "nodeName": "agent-2"},
    ]
    assert (docker["offline"], docker["totalExecutors"], docker["idleExecutors"]) == (True, 0, 0)
    assert [n["nodeName"] for n in deep["linux"]["nodes"]] == ["agent-1"]
    # the same at depth 1 of the computer set, and tree= still picks what it names
    listed = http.get(controller.url + "computer/api/json?depth=1").json()["computer"]
    [agent] = [c for c in listed if c["displayName"] == "agent-1"]
    assert {x["name"] for x in agent["assignedLabels"]} == {"agent-1", "docker", "linux"}
    assert all(set(x) == LABEL_FIELDS for x in agent["assignedLabels"])
    tree = http.get(controller.url + "computer/agent-1/api/json?tree=assignedLabels[name,offline]").json()
    assert sorted(tree["assignedLabels"], key=lambda x: x["name"])[0] == {"name": "agent-1", "offline": True}


def test_a_jobs_queue_item_carries_its_fields(
    add_agent: AgentFactory, server: jenkins.Jenkins, controller: Controller
) -> None:
    add_agent("agent-1", "docker")
    server.create_job("app", freestyle_config("docker"))
    assert server.get_job_info("app")["queueItem"] is None
    number = server.build_job("app")
    item = server.get_job_info("app")["queueItem"]  # depth 0, as python-jenkins asks
    assert item["_class"] == "hudson.model.Queue$BuildableItem"
    assert item["id"] == number and item["url"] == f"queue/item/{number}/"
    assert item["why"] == "\u2018agent-1\u2019 is offline"
    assert (item["blocked"], item["buildable"], item["pending"], item["stuck"]) == (False, True, False, True)
    assert item["params"] == "" and item["inQueueSince"] <= item["buildableStartMilliseconds"]
    assert item["task"]["_class"] == "hudson.model.FreeStyleProject"
    assert server.get_job_info("app")["inQueue"] is True


def test_script_text_prints_every_queued_items_exact_label(
    add_agent: AgentFactory, server: jenkins.Jenkins, controller: Controller
) -> None:
    add_agent("static-1", "docker linux ubuntu-22")
    server.create_job("fs", freestyle_config("docker && linux"))
    server.create_job("roams", freestyle_config(None))
    server.create_job("p", pipeline_config("node('docker') { sh 'true' }"))
    ids = {name: server.build_job(name) for name in ("fs", "roams", "p")}
    deadline = time.monotonic() + 10
    while len(server.get_queue_info()) < 3:  # the Pipeline's node {} block queues once the run starts
        assert time.monotonic() < deadline, controller.queue_items()
        time.sleep(0.05)
    [pipeline_item] = [i["id"] for i in server.get_queue_info() if i["id"] not in ids.values()]
    output = server.run_script(QUEUE_LABELS)
    lines = dict(line.split("\t") for line in output.splitlines())
    assert lines == {str(ids["fs"]): "docker&&linux", str(ids["roams"]): "null", str(pipeline_item): "docker"}
    # the order is the queue's own
    assert [int(i) for i in lines] == [i["id"] for i in server.get_queue_info()]


@pytest.mark.parametrize(
    "script",
    [
        'Jenkins.get().queue.items.each { println "${it.id}\\t${it.assignedLabel}" }',
        'jenkins.model.Jenkins.instance.queue.items.each{println("${it.id}\t${it.assignedLabel}")}',
    ],
)
def test_script_text_accepts_the_scripts_spellings(server: jenkins.Jenkins, script: str) -> None:
    server.create_job("fs", freestyle_config("docker"))
    number = server.build_job("fs")
    assert server.run_script(script) == f"{number}\tdocker"  # python-jenkins drops the last newline


def test_other_scripts_are_refused_with_a_clear_400(controller: Controller, http: requests.Session) -> None:
    r = http.post(
        controller.url + "scriptText", data={"script": "Jenkins.instance.nodes.each{println it.name}"}
    )
    assert r.status_code == 400
    assert "runs only Jenkins.instance.queue.items.each" in r.text
    assert http.get(controller.url + "scriptText").status_code == 405
