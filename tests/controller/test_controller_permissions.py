"""Accounts with restricted permissions: 403 on exactly the call whose permission is missing,
and a queue that lists only the items whose job the caller may read (as Jenkins does).

Calls go over HTTP through python-jenkins wherever it has a method, since that is how
agentpool talks to Jenkins.
"""

from __future__ import annotations

from collections.abc import Callable

import jenkins
import pytest
import requests

from agentpool_testing.jenkins import Controller, Permission, freestyle_config, pipeline_config
from agentpool_testing.jenkins.__main__ import parse_account

SVC, SVC_TOKEN = "svc", "5e7c0ffee5e7c0ffee5e7c0ffee5e7c0"
# What agentpool's loop needs (README): no Overall/Administer
LOOP = frozenset(
    {
        Permission.READ,
        Permission.JOB_READ,
        Permission.AGENT_CREATE,
        Permission.AGENT_DELETE,
        Permission.AGENT_CONNECT,
        Permission.AGENT_DISCONNECT,
    }
)
QUEUE_LABELS = 'Jenkins.instance.queue.items.each{println "${it.id}\\t${it.assignedLabel}"}'


def client(controller: Controller, user: str = SVC, token: str = SVC_TOKEN) -> jenkins.Jenkins:
    return jenkins.Jenkins(controller.url, username=user, password=token, timeout=10)


def session(user: str = SVC, token: str = SVC_TOKEN) -> requests.Session:
    s = requests.Session()
    s.auth = (user, token)
    return s


def make_node(server: jenkins.Jenkins, name: str) -> None:
    server.create_node(
        name,
        numExecutors=1,
        remoteFS="/w",
        labels="docker",
        launcher=jenkins.LAUNCHER_JNLP,
        launcher_params={},
    )


def assert_denied(response: requests.Response, permission: Permission, user: str = SVC) -> None:
    assert response.status_code == 403, response.text
    assert f"{user} is missing the {permission.title} permission" in response.text
    assert response.headers["X-Required-Permission"] == permission.id
    assert response.headers["X-You-Are-Authenticated-As"] == user


# Each loop call, made with requests so that its answer can be read whatever it is.
Call = Callable[[Controller, requests.Session], requests.Response]


def create(ctl: Controller, s: requests.Session) -> requests.Response:
    form = {
        "name": "made-by-svc",
        "type": "hudson.slaves.DumbSlave$DescriptorImpl",
        "json": '{"numExecutors": 1, "remoteFS": "/w", "labelString": "docker", "mode": "EXCLUSIVE",'
        ' "launcher": {"stapler-class": "hudson.slaves.JNLPLauncher", "webSocket": true}}',
    }
    return s.post(ctl.url + "computer/doCreateItem", data=form, allow_redirects=False)


def secret(ctl: Controller, s: requests.Session) -> requests.Response:
    return s.get(ctl.url + "computer/target/jenkins-agent.jnlp")


def take_offline(ctl: Controller, s: requests.Session) -> requests.Response:
    return s.post(ctl.url + "computer/target/changeOfflineCause?offlineMessage=reap", allow_redirects=False)


def toggle_offline(ctl: Controller, s: requests.Session) -> requests.Response:
    return s.post(ctl.url + "computer/toggler/toggleOffline", allow_redirects=False)


def toggle_online(ctl: Controller, s: requests.Session) -> requests.Response:
    return s.post(ctl.url + "computer/offline-one/toggleOffline", allow_redirects=False)


def delete(ctl: Controller, s: requests.Session) -> requests.Response:
    return s.post(ctl.url + "computer/doomed/doDelete", allow_redirects=False)


CALLS: dict[str, tuple[Call, Permission]] = {
    "create": (create, Permission.AGENT_CREATE),
    "secret": (secret, Permission.AGENT_CONNECT),
    "take offline (changeOfflineCause)": (take_offline, Permission.AGENT_DISCONNECT),
    "take offline (toggleOffline)": (toggle_offline, Permission.AGENT_DISCONNECT),
    "bring online (toggleOffline)": (toggle_online, Permission.AGENT_CONNECT),
    "delete": (delete, Permission.AGENT_DELETE),
}


@pytest.mark.parametrize(
    "missing", sorted(LOOP - {Permission.READ, Permission.JOB_READ}, key=lambda p: p.name)
)
def test_each_missing_agent_permission_refuses_exactly_its_calls(
    controller: Controller, server: jenkins.Jenkins, missing: Permission
) -> None:
    for name in ("target", "toggler", "offline-one", "doomed"):
        make_node(server, name)
    server.enable_node("offline-one")  # disconnected agent: python-jenkins' enable toggles it offline
    assert server.get_node_info("offline-one")["temporarilyOffline"] is True
    controller.add_user(SVC, SVC_TOKEN, LOOP - {missing})
    with session() as s:
        for what, (call, needs) in CALLS.items():
            response = call(controller, s)
            if needs is missing:
                assert_denied(response, missing)
            else:
                assert response.status_code in (200, 302), (what, response.status_code, response.text)
    nodes = {n["name"]: n for n in controller.nodes()}
    assert ("made-by-svc" in nodes) is (missing is not Permission.AGENT_CREATE)
    assert ("doomed" in nodes) is (missing is Permission.AGENT_DELETE)
    assert nodes["target"]["temporarily_offline"] is (missing is not Permission.AGENT_DISCONNECT)


def test_the_loop_permissions_do_everything_through_python_jenkins(
    controller: Controller, server: jenkins.Jenkins
) -> None:
    controller.add_user(SVC, SVC_TOKEN, LOOP)
    svc = client(controller)
    svc.create_node(
        "agent-1",
        numExecutors=1,
        remoteFS="/w",
        labels="docker",
        launcher=jenkins.LAUNCHER_JNLP,
        launcher_params={},
    )
    assert svc.node_exists("agent-1")
    svc.enable_node("agent-1")  # toggles the disconnected agent offline: Agent/Disconnect
    svc.enable_node("agent-1")  # and back online: Agent/Connect
    assert svc.get_node_info("agent-1")["temporarilyOffline"] is False
    svc.delete_node("agent-1")
    assert not server.node_exists("agent-1")
    with pytest.raises(jenkins.JenkinsException, match=r"\[403\]"):
        svc.run_script(QUEUE_LABELS)  # /scriptText needs Overall/Administer


def test_python_jenkins_sees_a_missing_permission_as_403(
    controller: Controller, server: jenkins.Jenkins
) -> None:
    controller.add_user(SVC, SVC_TOKEN, LOOP - {Permission.AGENT_CREATE, Permission.AGENT_DELETE})
    svc = client(controller)
    with pytest.raises(jenkins.JenkinsException, match=r"Possibly authentication failed \[403\]"):
        svc.create_node("agent-1", launcher=jenkins.LAUNCHER_JNLP, launcher_params={})
    make_node(server, "agent-2")
    with pytest.raises(jenkins.JenkinsException, match=r"\[403\]"):
        svc.delete_node("agent-2")
    assert server.node_exists("agent-2") and not server.node_exists("agent-1")


def test_without_overall_read_every_call_is_refused(controller: Controller) -> None:
    controller.add_user(SVC, SVC_TOKEN, LOOP - {Permission.READ})
    with session() as s:
        for path in ("api/json", "queue/api/json", "computer/api/json", "crumbIssuer/api/json"):
            assert_denied(s.get(controller.url + path), Permission.READ)
        assert s.get(controller.url + "login").status_code == 200  # what agents need stays open
    with pytest.raises(jenkins.JenkinsException, match=r"\[403\]"):
        client(controller).get_queue_info()


def queued(server: jenkins.Jenkins) -> dict[str, int]:
    """Three items: freestyle ``a`` and ``b``, and the ``node {}`` block of Pipeline ``p``."""
    make_node(server, "static-1")
    server.create_job("a", freestyle_config("docker"))
    server.create_job("b", freestyle_config("docker"))
    server.create_job("p", pipeline_config("node('docker') { sh 'true' }"))
    ids = {name: server.build_job(name) for name in ("a", "b")}
    server.build_job("p")
    for _ in range(100):
        items = server.get_queue_info()
        if len(items) == 3:
            break
    [ids["p"]] = [i["id"] for i in server.get_queue_info() if i["task"].get("name") not in ("a", "b")]
    return ids


def listed(controller: Controller) -> list[int]:
    return [i["id"] for i in client(controller).get_queue_info()]


def test_without_job_read_the_queue_is_empty(controller: Controller, server: jenkins.Jenkins) -> None:
    ids = queued(server)
    assert sorted(i["id"] for i in server.get_queue_info()) == sorted(ids.values())
    controller.add_user(SVC, SVC_TOKEN, LOOP - {Permission.JOB_READ})
    assert listed(controller) == []
    svc = client(controller)
    with pytest.raises(jenkins.JenkinsException, match=r"job\[a\] does not exist"):  # unreadable: absent
        svc.get_job_info("a")
    assert svc.get_jobs() == []
    # everything else of the loop still works
    assert {n["name"] for n in svc.get_nodes()} == {"Built-In Node", "static-1"}


def test_job_read_on_some_jobs_lists_their_items_pipeline_ones_by_the_runs_job(
    controller: Controller, server: jenkins.Jenkins
) -> None:
    ids = queued(server)
    controller.add_user(SVC, SVC_TOKEN, LOOP - {Permission.JOB_READ}, readable_jobs={"a", "p"})
    assert sorted(listed(controller)) == sorted([ids["a"], ids["p"]])
    assert [j["name"] for j in client(controller).get_jobs()] == ["a", "p"]
    controller.add_user(SVC, SVC_TOKEN, LOOP)  # replaced: Job/Read on every job
    assert sorted(listed(controller)) == sorted(ids.values())


def test_administer_implies_everything_and_runs_the_label_script(
    controller: Controller, server: jenkins.Jenkins
) -> None:
    ids = queued(server)
    controller.add_user("boss", "b0ss-token", [Permission.ADMINISTER])
    boss = client(controller, "boss", "b0ss-token")
    output = boss.run_script(QUEUE_LABELS)
    assert sorted(output.splitlines()) == sorted(f"{i}\tdocker" for i in ids.values())
    make_node(boss, "by-boss")
    boss.delete_node("by-boss")


def test_users_are_named_and_checked(controller: Controller) -> None:
    with pytest.raises(ValueError, match="needs an API token"):
        controller.add_user("svc", "")
    with pytest.raises(ValueError, match="unknown permission 'Agent/Fly'"):
        controller.add_user("svc", "t", ["Agent/Fly"])
    account = controller.add_user(
        "svc", "t", ["Overall/Read", "AGENT_CREATE", "hudson.model.Computer.Delete"]
    )
    assert account.permissions == {Permission.READ, Permission.AGENT_CREATE, Permission.AGENT_DELETE}
    with session("svc", "wrong") as s:
        assert s.get(controller.url + "api/json").status_code == 401


def test_cli_accounts_are_parsed_without_echoing_the_token() -> None:
    assert parse_account("svc:t0k:Overall/Read,Agent/Create") == (
        "svc",
        "t0k",
        ["Overall/Read", "Agent/Create"],
    )
    assert parse_account("ro:t0k:") == ("ro", "t0k", [])
    with pytest.raises(ValueError, match="NAME:TOKEN:PERMISSION") as caught:
        parse_account("svc-only-s3cr3t")
    assert "s3cr3t" not in str(caught.value)
