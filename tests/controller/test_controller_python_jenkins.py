"""python-jenkins 1.8.3, unmodified, against the controller over real HTTP.

Each call is checked for the answer a real controller gives, and each error case for
the exception type and message shape real Jenkins causes in python-jenkins.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable

import jenkins
import pytest
import requests

from agentpool_testing.jenkins import Controller, freestyle_config, pipeline_config

pytestmark = pytest.mark.timeout(60)

USER = "admin"
TOKEN = "11d2c5e0a7f34b5c9a1e0f00c0ffee42"
AgentFactory = Callable[..., None]


def test_get_version_needs_resolved_auth_first(controller: Controller) -> None:
    fresh = jenkins.Jenkins(controller.url, username=USER, password=TOKEN)
    with pytest.raises(jenkins.BadHTTPException):
        fresh.get_version()  # python-jenkins sends no credentials on its very first call
    assert fresh.get_whoami()["id"] == USER
    assert fresh.get_version() == "2.462.3"


def test_get_version_with_anonymous_read() -> None:
    with Controller(token=TOKEN, anonymous_read=True, version="2.479.1") as ctl:
        assert jenkins.Jenkins(ctl.url).get_version() == "2.479.1"


def test_wrong_token_is_refused_with_401(controller: Controller) -> None:
    bad = jenkins.Jenkins(controller.url, username=USER, password="wrong")
    with pytest.raises(jenkins.JenkinsException, match=r"Possibly authentication failed \[401\]"):
        bad.get_nodes()
    assert bad.node_exists("Built-In Node") is False
    r = requests.get(controller.url + "api/json", auth=(USER, "wrong"), timeout=5)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == 'Basic realm="Jenkins"'
    assert r.headers["X-Jenkins"] == "2.462.3"


def test_anonymous_is_forbidden(controller: Controller) -> None:
    r = requests.get(controller.url + "queue/api/json", timeout=5)
    assert r.status_code == 403
    assert r.headers["X-You-Are-Authenticated-As"] == "anonymous"
    assert requests.get(controller.url + "login", timeout=5).status_code == 200


def test_crumb_issuer(http: requests.Session, controller: Controller) -> None:
    body = http.get(controller.url + "crumbIssuer/api/json").json()
    assert body["_class"] == "hudson.security.csrf.DefaultCrumbIssuer"
    assert body["crumbRequestField"] == "Jenkins-Crumb"
    assert re.fullmatch(r"[0-9a-f]{64}", body["crumb"])


def test_password_logins_need_the_session_crumb() -> None:
    with Controller(token=TOKEN, password="pw") as ctl:
        s = requests.Session()
        s.auth = (USER, "pw")
        url = ctl.url + "computer/doCreateItem"
        refused = s.post(url, data={"name": "a", "type": "hudson.slaves.DumbSlave$DescriptorImpl"})
        assert refused.status_code == 403
        assert "No valid crumb" in refused.text
        crumb = s.get(ctl.url + "crumbIssuer/api/json").json()["crumb"]
        form = {"name": "a", "type": "hudson.slaves.DumbSlave$DescriptorImpl", "json": '{"remoteFS": "/w"}'}
        ok = s.post(url, data=form, headers={"Jenkins-Crumb": crumb}, allow_redirects=False)
        assert ok.status_code == 302
        # and python-jenkins, which fetches the crumb itself, works with the password too
        assert jenkins.Jenkins(ctl.url, username=USER, password="pw").node_exists("a")


def test_nodes_lifecycle(add_agent: AgentFactory, server: jenkins.Jenkins, controller: Controller) -> None:
    assert server.get_nodes() == [{"name": "Built-In Node", "offline": False}]
    add_agent("agent-1", "docker linux", exclusive=True)
    assert server.node_exists("agent-1")
    assert not server.node_exists("agent-2")
    info = server.get_node_info("agent-1")
    assert info["_class"] == "hudson.slaves.SlaveComputer"
    assert sorted(a["name"] for a in info["assignedLabels"]) == ["agent-1", "docker", "linux"]
    assert info["executors"] == [{}]
    assert info["offline"] is True and info["temporarilyOffline"] is False
    assert info["offlineCause"] is None and info["jnlpAgent"] is True
    assert server.get_nodes() == [
        {"name": "Built-In Node", "offline": False},
        {"name": "agent-1", "offline": True},
    ]
    deep = server.get_node_info("agent-1", depth=1)
    assert deep["executors"] == [
        {"currentExecutable": None, "idle": True, "likelyStuck": False, "number": 0, "progress": -1}
    ]
    with pytest.raises(jenkins.JenkinsException, match=r"node\[agent-1\] already exists"):
        add_agent("agent-1")
    server.delete_node("agent-1")
    assert not server.node_exists("agent-1")
    with pytest.raises(jenkins.JenkinsException, match=r"node\[agent-1\] does not exist"):
        server.delete_node("agent-1")


def test_disable_and_enable_follow_python_jenkins_traps(
    add_agent: AgentFactory, server: jenkins.Jenkins
) -> None:
    add_agent("agent-1", "docker")
    server.disable_node("agent-1", "maint")  # disconnected: already offline, nothing happens
    assert server.get_node_info("agent-1")["temporarilyOffline"] is False
    server.enable_node("agent-1")  # offline because disconnected: this toggles it *offline*
    info = server.get_node_info("agent-1")
    assert info["temporarilyOffline"] is True
    assert info["offlineCause"] == {"_class": "hudson.slaves.OfflineCause$UserCause"}
    assert info["icon"] == "symbol-computer-disconnected"


def test_toggle_offline_with_a_message(
    add_agent: AgentFactory, http: requests.Session, server: jenkins.Jenkins, controller: Controller
) -> None:
    add_agent("agent-1")
    r = http.post(
        controller.url + "computer/agent-1/toggleOffline?offlineMessage=maint", allow_redirects=False
    )
    assert r.status_code == 302
    info = server.get_node_info("agent-1")
    assert info["temporarilyOffline"] is True and info["offlineCauseReason"] == "maint"
    http.post(controller.url + "computer/agent-1/toggleOffline")
    info = server.get_node_info("agent-1")
    assert info["temporarilyOffline"] is False and info["offlineCause"] is None


def test_create_node_errors_carry_x_error(
    add_agent: AgentFactory, server: jenkins.Jenkins, http: requests.Session, controller: Controller
) -> None:
    add_agent("agent-1")
    form = {"name": "agent-1", "type": "hudson.slaves.DumbSlave$DescriptorImpl", "json": '{"remoteFS": "/w"}'}
    r = http.post(controller.url + "computer/doCreateItem", data=form)
    assert r.status_code == 400
    assert "already exists" in r.headers["X-Error"]
    # UTF-8 on the wire; requests decodes headers as ISO-8859-1, as with a real Jetty
    assert (
        r.headers["X-Error"].encode("latin-1").decode() == "Agent called \u2018agent-1\u2019 already exists"
    )
    r = http.post(controller.url + "computer/doCreateItem", data={**form, "name": ""})
    assert (r.status_code, r.headers["X-Error"]) == (400, "No name is specified")
    with pytest.raises(requests.HTTPError) as err:
        add_agent("a/b")
    assert err.value.response.status_code == 400
    assert (
        err.value.response.headers["X-Error"].encode("latin-1").decode()
        == "\u2018/\u2019 is an unsafe character"
    )


def test_post_only_actions_answer_405_to_get(
    add_agent: AgentFactory, http: requests.Session, server: jenkins.Jenkins, controller: Controller
) -> None:
    add_agent("agent-1")
    for path in (
        "computer/doCreateItem",
        "computer/agent-1/doDelete",
        "computer/agent-1/toggleOffline",
        "queue/cancelItem",
    ):
        r = http.get(controller.url + path)
        assert r.status_code == 405, path
        assert r.headers["Allow"] == "POST"
        assert r.headers["X-Jenkins"]


def test_unknown_things_are_404(http: requests.Session, controller: Controller) -> None:
    for path in ("computer/nope/api/json", "queue/item/999/api/json", "job/nope/api/json", "no/such/page"):
        r = http.get(controller.url + path)
        assert r.status_code == 404, path
        assert r.headers["X-Jenkins"]
    assert http.post(controller.url + "computer/nope/doDelete").status_code == 404


def test_computer_set_lists_the_built_in_node(http: requests.Session, controller: Controller) -> None:
    body = http.get(controller.url + "computer/api/json").json()
    assert body["_class"] == "hudson.model.ComputerSet"
    assert body["displayName"] == "Nodes"
    builtin = body["computer"][0]
    assert builtin["_class"] == "hudson.model.Hudson$MasterComputer"
    assert builtin["displayName"] == "Built-In Node"
    assert builtin["numExecutors"] == 0
    assert http.get(controller.url + "computer/(built-in)/api/json").json()["displayName"] == "Built-In Node"


def test_jnlp_file_hands_out_a_stable_hmac_secret(
    add_agent: AgentFactory, http: requests.Session, server: jenkins.Jenkins, controller: Controller
) -> None:
    add_agent("agent-1", remote_fs="/home/jenkins/agent")
    r = http.get(controller.url + "computer/agent-1/jenkins-agent.jnlp")
    assert r.headers["Content-Type"] == "application/x-java-jnlp-file"
    args = re.findall(r"<argument>(.*?)</argument>", r.text)
    assert re.fullmatch(r"[0-9a-f]{64}", args[0])
    assert args[0] == controller.secret("agent-1")
    assert args[1:] == [
        "agent-1",
        "-webSocket",
        "-workDir",
        "/home/jenkins/agent",
        "-internalDir",
        "remoting",
        "-url",
        controller.url,
    ]
    assert (
        re.findall(
            r"<argument>(.*?)</argument>", http.get(controller.url + "computer/agent-1/slave-agent.jnlp").text
        )
        == args
    )
    server.delete_node("agent-1")
    add_agent("agent-1")
    assert controller.secret("agent-1") == args[0]


def test_node_config_xml_round_trip(
    add_agent: AgentFactory, http: requests.Session, server: jenkins.Jenkins
) -> None:
    add_agent("agent-1", "docker")
    xml = server.get_node_config("agent-1")
    assert '<launcher class="hudson.slaves.JNLPLauncher">' in xml
    assert "<label>docker</label>" in xml
    server.reconfig_node("agent-1", xml.replace("<label>docker</label>", "<label>docker arm</label>"))
    labels = {a["name"] for a in server.get_node_info("agent-1")["assignedLabels"]}
    assert labels == {"agent-1", "docker", "arm"}


def test_label_api(
    add_agent: AgentFactory, http: requests.Session, server: jenkins.Jenkins, controller: Controller
) -> None:
    add_agent("agent-1", "docker linux")
    body = http.get(controller.url + "label/docker%20%26%26%20linux/api/json").json()
    assert body["_class"] == "hudson.model.labels.LabelExpression$And"
    assert body["name"] == "docker&&linux"
    assert body["nodes"] == [{"_class": "hudson.slaves.DumbSlave", "nodeName": "agent-1"}]
    assert body["offline"] is True and body["totalExecutors"] == 0
    unknown = http.get(controller.url + "label/nosuch/api/json").json()
    assert unknown["nodes"] == [] and unknown["offline"] is True


def test_freestyle_queue_item_shapes(
    add_agent: AgentFactory, server: jenkins.Jenkins, http: requests.Session, controller: Controller
) -> None:
    add_agent("agent-1", "docker linux")
    server.create_job("app", freestyle_config("docker && linux"))
    with pytest.raises(jenkins.JenkinsException, match=r"job\[app\] already exists"):
        server.create_job("app", freestyle_config("docker"))
    number = server.build_job("app")
    item = server.get_queue_item(number)
    assert item["_class"] == "hudson.model.Queue$BuildableItem"
    assert item["why"] == "\u2018agent-1\u2019 is offline"
    assert item["url"] == f"queue/item/{number}/"
    assert item["task"] == {
        "_class": "hudson.model.FreeStyleProject",
        "name": "app",
        "url": controller.url + "job/app/",
        "color": "notbuilt",
    }
    assert "labelExpression" not in item["task"]
    (listed,) = server.get_queue_info()
    assert listed["id"] == number and listed["stuck"] is True
    deep = http.get(controller.url + "queue/api/json?depth=1").json()["items"][0]
    assert deep["task"]["labelExpression"] == "docker && linux"
    tree = http.get(controller.url + "queue/api/json?tree=items[id,why,task[labelExpression]]").json()
    assert tree == {
        "_class": "hudson.model.Queue",
        "items": [
            {
                "_class": "hudson.model.Queue$BuildableItem",
                "id": number,
                "task": {"_class": "hudson.model.FreeStyleProject", "labelExpression": "docker && linux"},
                "why": "\u2018agent-1\u2019 is offline",
            }
        ],
    }
    assert server.build_job("app") == number  # already queued: Jenkins hands back the same item
    server.cancel_queue(number)
    left = server.get_queue_item(number)
    assert left["_class"] == "hudson.model.Queue$LeftItem"
    assert left["cancelled"] is True and left["executable"] is None and left["why"] is None
    assert server.get_queue_info() == []
    assert http.post(controller.url + f"queue/cancelItem?id={number}").status_code == 422
    server.cancel_queue(12345)  # unknown: 404, which python-jenkins swallows
    with pytest.raises(jenkins.JenkinsException, match=r"queue number\[12345\] does not exist"):
        server.get_queue_item(12345)


def test_quiet_period_makes_a_waiting_item(server: jenkins.Jenkins) -> None:
    server.create_job("slow", freestyle_config("docker", quiet_period=30))
    item = server.get_queue_item(server.build_job("slow"))
    assert item["_class"] == "hudson.model.Queue$WaitingItem"
    assert re.fullmatch(r"In the quiet period\. Expires in (29|30) sec", item["why"])
    assert item["timestamp"] > item["inQueueSince"]


def test_default_quiet_period_is_five_seconds() -> None:
    with Controller(token=TOKEN) as ctl:
        server = jenkins.Jenkins(ctl.url, username=USER, password=TOKEN)
        server.create_job("app", freestyle_config(None))
        item = server.get_queue_item(server.build_job("app"))
        assert item["_class"] == "hudson.model.Queue$WaitingItem"
        assert re.fullmatch(r"In the quiet period\. Expires in [1-5](\.\d)? sec", item["why"])


def test_job_errors(server: jenkins.Jenkins) -> None:
    with pytest.raises(jenkins.NotFoundException):
        server.build_job("nope")
    with pytest.raises(jenkins.JenkinsException, match=r"\[500\]"):
        server.create_job("broken", "<project><unclosed></project>")
    server.create_job("app", freestyle_config(None))
    with pytest.raises(jenkins.JenkinsException, match=r"job\[app\] number\[9\] does not exist"):
        server.get_build_info("app", 9)
    with pytest.raises(jenkins.JenkinsException, match=r"job\[app\] number\[9\] does not exist"):
        server.get_build_console_output("app", 9)
    assert server.get_running_builds() == []


def test_pipeline_placeholder_items(
    add_agent: AgentFactory, server: jenkins.Jenkins, http: requests.Session, controller: Controller
) -> None:
    add_agent("agent-1", "linux")
    server.create_job("p", pipeline_config("stage('Build') { node('docker && linux') { sh 'true' } }"))
    number = server.build_job("p")
    left = server.get_queue_item(number)
    assert left["_class"] == "hudson.model.Queue$LeftItem"
    assert left["executable"]["_class"] == "org.jenkinsci.plugins.workflow.job.WorkflowRun"
    assert left["executable"]["number"] == 1
    deadline = time.monotonic() + 5
    while not (items := server.get_queue_info()) and time.monotonic() < deadline:
        time.sleep(0.05)
    (item,) = items
    assert item["task"] == {
        "_class": "org.jenkinsci.plugins.workflow.support.steps.ExecutorStepExecution$PlaceholderTask"
    }
    assert item["why"] == "There are no nodes with the label \u2018docker&&linux\u2019"
    tree = http.get(
        controller.url + "queue/api/json?tree=items[task[name,url,fullDisplayName,labelExpression]]"
    )
    assert tree.json()["items"][0]["task"] == {
        "_class": "org.jenkinsci.plugins.workflow.support.steps.ExecutorStepExecution$PlaceholderTask",
        "fullDisplayName": "p #1 (Build)",
        "name": "p #1 (Build)",
        "url": "job/p/1/",
    }
    info = server.get_build_info("p", 1)
    assert info["building"] is True and info["result"] is None
    server.cancel_queue(item["id"])
    deadline = time.monotonic() + 5
    while server.get_build_info("p", 1)["building"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.get_build_info("p", 1)["result"] == "ABORTED"
    assert "Queue task was cancelled" in server.get_build_console_output("p", 1)


def test_pipeline_outside_a_stage_is_part_of_the_run(
    add_agent: AgentFactory, server: jenkins.Jenkins, http: requests.Session, controller: Controller
) -> None:
    add_agent("agent-1", "linux")
    server.create_job("p", pipeline_config('node("docker") {\n  sh "true"\n}'))
    server.build_job("p")
    deadline = time.monotonic() + 5
    while (
        not (items := http.get(controller.url + "queue/api/json?depth=1").json()["items"])
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert items[0]["task"]["name"] == "part of p #1"


def test_request_counts_and_faults(
    server: jenkins.Jenkins, http: requests.Session, controller: Controller
) -> None:
    controller.reset_counts()
    server.get_queue_info()
    server.get_queue_info()
    server.get_node_info("Built-In Node")
    counts = controller.request_counts
    assert counts["GET /queue/api/json"] == 2
    assert counts["GET /computer/{name}/api/json"] == 1
    controller.faults.fail_next(2, status=503)
    assert http.get(controller.url + "api/json").status_code == 503
    assert http.get(controller.url + "api/json").status_code == 503
    assert http.get(controller.url + "api/json").status_code == 200
    controller.faults.latency(0.3)
    started = time.monotonic()
    http.get(controller.url + "api/json")
    assert time.monotonic() - started >= 0.3
    controller.faults.latency(0)
    controller.faults.reject_credentials(0.5)
    assert http.get(controller.url + "api/json").status_code == 401
    time.sleep(0.6)
    assert http.get(controller.url + "api/json").status_code == 200


def test_root_api(http: requests.Session, server: jenkins.Jenkins, controller: Controller) -> None:
    server.create_job("app", freestyle_config(None))
    body = http.get(controller.url + "api/json").json()
    assert body["_class"] == "hudson.model.Hudson"
    assert body["jobs"] == [
        {
            "_class": "hudson.model.FreeStyleProject",
            "name": "app",
            "url": controller.url + "job/app/",
            "color": "notbuilt",
        }
    ]
    assert json.loads(http.get(controller.url + "api/json?tree=jobs[name]").text) == {
        "_class": "hudson.model.Hudson",
        "jobs": [{"_class": "hudson.model.FreeStyleProject", "name": "app"}],
    }


def test_read_helpers(add_agent: AgentFactory, server: jenkins.Jenkins, controller: Controller) -> None:
    add_agent("agent-1", "docker", exclusive=True)
    server.create_job("app", freestyle_config("docker"))
    number = server.build_job("app")
    assert controller.nodes() == [
        {
            "name": "agent-1",
            "labels": ["agent-1", "docker"],
            "mode": "EXCLUSIVE",
            "num_executors": 1,
            "connected": False,
            "offline": True,
            "temporarily_offline": False,
            "busy": 0,
        }
    ]
    assert controller.queue_items() == [
        {
            "id": number,
            "state": "buildable",
            "task": "app",
            "label": "docker",
            "why": "\u2018agent-1\u2019 is offline",
        }
    ]
    with pytest.raises(KeyError):
        controller.build_result("app", 1)
