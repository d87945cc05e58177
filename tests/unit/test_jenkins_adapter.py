"""The Jenkins adapter against the project's controller over real HTTP: what it reads, what it
writes, how many requests a read costs, and how failures are translated (never leaking the token)."""

from __future__ import annotations

import contextlib
import http.server
import json
import secrets
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import jenkins
import pytest

from agentpool.adapters.jenkins import JenkinsAdapter
from agentpool.errors import ErrorKind, JenkinsError
from agentpool.model import ItemKind
from agentpool_testing.jenkins import Controller, freestyle_config, pipeline_config

TOKEN = secrets.token_hex(16)


@pytest.fixture
def controller() -> Iterator[Controller]:
    ctl = Controller(listen="127.0.0.1:0", user="admin", token=TOKEN)
    ctl.start()
    yield ctl
    ctl.stop()


@pytest.fixture
def adapter(controller: Controller) -> JenkinsAdapter:
    return JenkinsAdapter(controller.url, "admin", TOKEN, timeout=5)


@pytest.fixture
def client(controller: Controller) -> jenkins.Jenkins:
    return jenkins.Jenkins(controller.url, username="admin", password=TOKEN, timeout=5)


def make_agent(adapter: JenkinsAdapter, name: str, labels: list[str]) -> None:
    adapter.create_node(
        name,
        labels=labels,
        executors=1,
        remote_fs="/home/jenkins/agent",
        exclusive=True,
        websocket=True,
        description="test",
    )


def test_node_life_cycle(adapter: JenkinsAdapter, controller: Controller) -> None:
    make_agent(adapter, "ap-dind-000001", ["docker", "linux"])
    with pytest.raises(JenkinsError) as caught:  # never taken over: it may not be ours
        make_agent(adapter, "ap-dind-000001", ["docker", "linux"])
    assert caught.value.kind == "conflict" and "already exists" in str(caught.value)
    (node,) = adapter.read_nodes()
    assert node.name == "ap-dind-000001" and node.description == "test"
    assert node.labels == {"ap-dind-000001", "docker", "linux"}
    assert node.offline and not node.temporarily_offline and not node.busy
    assert adapter.agent_secret("ap-dind-000001") == controller.secret("ap-dind-000001")
    node = adapter.set_temporarily_offline("ap-dind-000001", True, "agentpool: reaping")
    assert node.temporarily_offline and node.offline_reason == "agentpool: reaping"
    node = adapter.set_temporarily_offline("ap-dind-000001", True, "again")  # no flip back
    assert node.temporarily_offline and node.offline_reason == "again"
    assert controller.request_counts.get("POST /computer/{name}/toggleOffline", 0) == 0
    assert not adapter.set_temporarily_offline("ap-dind-000001", False).temporarily_offline
    adapter.delete_node("ap-dind-000001")
    adapter.delete_node("ap-dind-000001")  # gone already counts as deleted
    assert adapter.read_nodes() == ()


def test_queue_labels_for_freestyle_and_pipeline(adapter: JenkinsAdapter, client: jenkins.Jenkins) -> None:
    adapter.scripts_allowed = False  # what `why` and labelExpression tell, without /scriptText
    client.create_job("free", freestyle_config("docker && linux", quiet_period=0))
    client.create_job("pipe", pipeline_config("node('docker && linux') { sh 'true' }", quiet_period=0))
    client.create_job("quiet", freestyle_config("docker", quiet_period=60))
    for job in ("free", "pipe", "quiet"):
        client.build_job(job)
    deadline = time.monotonic() + 10
    while True:  # the Pipeline run starts first, then its node() step queues a placeholder task
        items = adapter.read_queue(adapter.read_nodes())
        if any("pipe #1" in i.task_name for i in items) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    # no agent node at all: Jenkins hides the Pipeline item's label; the freestyle one is exported
    by_name = {item.task_name: item for item in items}
    assert by_name["free"].label == "docker&&linux" and by_name["free"].kind is ItemKind.BUILDABLE
    assert by_name["quiet"].kind is ItemKind.WAITING
    pipeline = next(i for name, i in by_name.items() if "pipe #1" in name)
    assert pipeline.label is None
    # once any agent node exists, the label shows in why
    make_agent(adapter, "ap-other-000002", ["windows"])
    items = adapter.read_queue(adapter.read_nodes())
    pipeline = next(i for i in items if "pipe #1" in i.task_name)
    assert pipeline.label == "docker&&linux"


def queue_pipeline(client: jenkins.Jenkins, adapter: JenkinsAdapter, label: str) -> None:
    client.create_job("pipe", pipeline_config(f"node('{label}') {{ sh 'true' }}", quiet_period=0))
    client.build_job("pipe")
    deadline = time.monotonic() + 10
    while not any("pipe #1" in i.task_name for i in adapter.read_queue(adapter.read_nodes())):
        assert time.monotonic() < deadline, "the Pipeline item never queued"
        time.sleep(0.1)


def test_exact_labels_through_script_text_with_overall_administer(
    adapter: JenkinsAdapter, client: jenkins.Jenkins, controller: Controller
) -> None:
    make_agent(adapter, "static-1", ["docker", "linux", "ubuntu-22"])
    queue_pipeline(client, adapter, "docker")
    # why names static-1 (the one node `docker` matches); the script console tells the truth
    controller.reset_counts()
    [item] = [i for i in adapter.read_queue(adapter.read_nodes()) if "pipe #1" in i.task_name]
    assert "static-1" in item.why and (item.label, item.exact, item.node) == ("docker", True, None)
    assert adapter.scripts_allowed is True
    assert controller.request_counts["POST /scriptText"] == 1 and sum(controller.request_counts.values()) == 3


def test_without_administer_script_text_is_tried_once_and_never_required(
    controller: Controller, client: jenkins.Jenkins
) -> None:
    perms = ["Overall/Read", "Job/Read", "Agent/Create", "Agent/Delete", "Agent/Connect", "Agent/Disconnect"]
    controller.add_user("svc", "svc-token", perms)
    adapter = JenkinsAdapter(controller.url, "svc", "svc-token", timeout=5)
    make_agent(adapter, "static-1", ["docker", "linux"])
    queue_pipeline(client, adapter, "docker")
    assert adapter.scripts_allowed is False
    controller.reset_counts()
    for _ in range(3):
        [item] = [i for i in adapter.read_queue(adapter.read_nodes()) if "pipe #1" in i.task_name]
        assert (item.label, item.node) == (None, "static-1")
    assert "POST /scriptText" not in controller.request_counts
    assert sum(controller.request_counts.values()) == 6


def test_a_failing_script_console_costs_the_exact_labels_not_the_pass(
    adapter: JenkinsAdapter, client: jenkins.Jenkins, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_agent(adapter, "static-1", ["docker", "linux"])
    adapter.scripts_allowed = False
    queue_pipeline(client, adapter, "docker")

    def broken() -> dict[int, str] | None:
        raise JenkinsError(ErrorKind.SERVER_ERROR, "read exact labels: HTTP 500")

    monkeypatch.setattr(adapter, "exact_labels", broken)
    adapter.scripts_allowed = None
    [item] = [i for i in adapter.read_queue(adapter.read_nodes()) if "pipe #1" in i.task_name]
    assert (item.label, item.node) == (None, "static-1")
    assert adapter.scripts_allowed is None  # asked again on a later pass


def test_a_pass_reads_jenkins_in_two_requests(adapter: JenkinsAdapter, controller: Controller) -> None:
    for i in range(5):
        make_agent(adapter, f"ap-dind-00000{i}", ["docker"])
    adapter.read_queue(adapter.read_nodes())  # resolves auth and the crumb once
    controller.reset_counts()
    adapter.read_queue(adapter.read_nodes())
    assert sum(controller.request_counts.values()) == 2


@pytest.mark.parametrize(
    ("status", "kind"), [(500, "server-error"), (503, "server-error"), (403, "forbidden"), (401, "auth")]
)
def test_errors_are_translated_without_the_token(
    adapter: JenkinsAdapter, controller: Controller, status: int, kind: str
) -> None:
    controller.faults.fail_next(5, status=status)
    with pytest.raises(JenkinsError) as caught:
        adapter.read_nodes()
    assert caught.value.kind == kind
    assert TOKEN not in str(caught.value)


def test_bad_credentials(controller: Controller) -> None:
    adapter = JenkinsAdapter(controller.url, "admin", "wrong-" + TOKEN, timeout=5)
    with pytest.raises(JenkinsError) as caught:
        adapter.read_nodes()
    assert caught.value.kind == "auth"
    assert TOKEN not in str(caught.value)


def test_unreachable() -> None:
    adapter = JenkinsAdapter("http://127.0.0.1:9/", "admin", TOKEN, timeout=2)
    with pytest.raises(JenkinsError) as caught:
        adapter.read_nodes()
    assert caught.value.kind == "unreachable"
    assert "127.0.0.1:9" in str(caught.value)


def _reply(handler: http.server.BaseHTTPRequestHandler, body: bytes) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("X-Jenkins", "2.504")
    handler.end_headers()
    handler.wfile.write(body)


@contextlib.contextmanager
def _adapter_of(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[JenkinsAdapter]:
    """An adapter talking to a loopback server answering with ``handler``, for the block's length."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield JenkinsAdapter(f"http://127.0.0.1:{server.server_port}/", "admin", TOKEN, timeout=5)
    finally:
        server.shutdown()
        server.server_close()


class _RealJenkins(http.server.BaseHTTPRequestHandler):
    """``/computer/api/json`` and ``/queue/api/json`` as real Jenkins answers them with ``tree=``:
    only what was asked for.

    A Pipeline's flyweight task (the run itself) holds a one-off executor of the node it was
    given, which may be an agent when the built-in node cannot take it; its regular executor
    stays idle. Deleting that node interrupts the run.
    """

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        tree = urllib.parse.parse_qs(url.query).get("tree", [""])[0]
        if url.path == "/queue/api/json":
            self._queue(tree)
            return
        if url.path != "/computer/api/json":
            self.send_error(404)
            return
        computer: dict[str, Any] = {
            "_class": "hudson.slaves.SlaveComputer",
            "displayName": "ap-dind-00000a",
            "offline": False,
            "temporarilyOffline": False,
            "offlineCauseReason": "",
            "assignedLabels": [{"name": "ap-dind-00000a"}, {"name": "docker"}],
            "executors": [{"idle": True, "currentExecutable": None}],
        }
        if "oneOffExecutors" in tree:
            computer["oneOffExecutors"] = [
                {"idle": False, "currentExecutable": {"_class": "WorkflowRun", "url": "http://j/job/p/3/"}}
            ]
        self._send({"_class": "hudson.model.ComputerSet", "computer": [computer]})

    def _queue(self, tree: str) -> None:
        """A freestyle job in a folder: ``name`` is ambiguous, ``fullDisplayName`` is not."""
        task: dict[str, Any] = {
            "_class": "hudson.model.FreeStyleProject",
            "name": "app",
            "url": "http://j/job/team-a/job/app/",
            "labelExpression": "docker",
        }
        if "fullDisplayName" in tree:
            task["fullDisplayName"] = "team-a » app"
        item = {
            "_class": "hudson.model.Queue$BuildableItem",
            "id": 7,
            "why": "Waiting for next available executor on ‘docker’",
            "inQueueSince": 1717000000000,
            "buildable": True,
            "blocked": False,
            "pending": False,
            "stuck": False,
            "task": task,
        }
        self._send({"_class": "hudson.model.Queue", "items": [item]})

    def _send(self, data: dict[str, Any]) -> None:
        _reply(self, json.dumps(data).encode())

    def log_message(self, *_: Any) -> None:
        pass


def test_a_node_running_a_flyweight_task_is_busy() -> None:
    with _adapter_of(_RealJenkins) as adapter:
        (node,) = adapter.read_nodes()
    assert node.busy, "a node whose one-off executor runs a Pipeline would be reaped"
    assert node.idle_executors == 1  # the one-off executor is no slot for queued items


def test_a_stale_crumb_is_fetched_again() -> None:
    """With a password (not an API token) every POST needs a crumb tied to the session; after a
    controller restart the session, and so the cached crumb, is gone."""
    password = secrets.token_hex(8)
    ctl = Controller(listen="127.0.0.1:0", user="admin", token=TOKEN, password=password)
    ctl.start()
    try:
        adapter = JenkinsAdapter(ctl.url, "admin", password, timeout=5)
        make_agent(adapter, "ap-dind-00000b", ["docker"])
        adapter.request_session.cookies.clear()  # the controller restarted: new session
        adapter.delete_node("ap-dind-00000b")
        assert adapter.read_nodes() == ()
    finally:
        ctl.stop()


def test_queued_tasks_are_named_in_full() -> None:
    with _adapter_of(_RealJenkins) as adapter:
        (item,) = adapter.read_queue(adapter.read_nodes())
    assert item.task_name == "team-a » app"  # `status` tells team-a's app from team-b's
    assert item.label == "docker"


def _answering(
    body: bytes, computers: bytes = b'{"computer": []}'
) -> type[http.server.BaseHTTPRequestHandler]:
    """A Jenkins whose queue answer is ``body`` and nodes answer ``computers``, whatever they hold."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = urllib.parse.urlsplit(self.path).path
            answers = {"/queue/api/json": body, "/computer/api/json": computers}
            if path not in answers:
                self.send_error(404)  # no crumb issuer
                return
            _reply(self, answers[path])

        def log_message(self, *_: Any) -> None:
            pass

    return Handler


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b'{"items": [{"id": "7", "why": null}]}', "$.items[0].id"),
        (b'{"items": [{"id": 7, "task": {"fullDisplayName": 3}}]}', "$.items[0].task.fullDisplayName"),
        (b'{"items": {"id": 7}}', "$.items"),
        (b'{"items": [', "truncated"),
        (b"<html>Please wait while Jenkins is restarting</html>", "JSON"),
    ],
)
def test_a_queue_answer_of_the_wrong_shape_is_a_bad_response_naming_the_field(
    body: bytes, named: str
) -> None:
    with _adapter_of(_answering(body)) as adapter, pytest.raises(JenkinsError) as caught:
        adapter.read_queue(())
    assert caught.value.kind is ErrorKind.BAD_RESPONSE
    assert "read queue: unexpected answer" in str(caught.value)
    assert named in str(caught.value)


def test_a_queue_answer_with_unknown_fields_and_nulls_is_read() -> None:
    """Fields a newer Jenkins adds are skipped; null where a value may be missing is tolerated."""
    body = json.dumps(
        {
            "_class": "hudson.model.Queue",
            "discoverableItems": [],
            "items": [
                {
                    "_class": "hudson.model.Queue$BuildableItem",
                    "id": 9,
                    "why": None,
                    "inQueueSince": None,
                    "buildable": True,
                    "params": "",
                    "task": {"_class": "hudson.model.FreeStyleProject", "name": "app", "labelExpression": 5},
                },
                {"id": 10, "task": None},
            ],
        }
    ).encode()
    with _adapter_of(_answering(body)) as adapter:
        first, second = adapter.read_queue(())
    assert (first.id, first.kind, first.task_name, first.why, first.in_queue_since) == (
        9,
        ItemKind.BUILDABLE,
        "app",
        "",
        0.0,
    )
    assert first.label is None  # a non-string labelExpression proves nothing, and `why` is empty
    assert (second.id, second.kind, second.task_name) == (10, ItemKind.WAITING, "")


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b'{"computer": [{"displayName": 7}]}', "$.computer[0].displayName"),
        (b'{"computer": [{"offline": false}]}', "displayName"),
        (
            b'{"computer": [{"displayName": "a", "executors": [{"idle": "yes"}]}]}',
            "$.computer[0].executors[0].idle",
        ),
        (b'{"computer": "none"}', "$.computer"),
    ],
)
def test_a_nodes_answer_of_the_wrong_shape_is_a_bad_response_naming_the_field(
    body: bytes, named: str
) -> None:
    with _adapter_of(_answering(b'{"items": []}', body)) as adapter, pytest.raises(JenkinsError) as caught:
        adapter.read_nodes()
    assert caught.value.kind is ErrorKind.BAD_RESPONSE
    assert "read nodes: unexpected answer" in str(caught.value) and named in str(caught.value)


def test_a_one_off_executor_that_does_not_say_it_is_idle_counts_as_busy() -> None:
    """Deleting a node whose Pipeline run holds its one-off executor would kill the run."""
    body = b'{"computer": [{"displayName": "n", "offline": false, "oneOffExecutors": [{}]}]}'
    with _adapter_of(_answering(b'{"items": []}', body)) as adapter:
        (node,) = adapter.read_nodes()
    assert node.busy and node.offline is False and node.labels == frozenset()
