"""The Jenkins adapter: every HTTP call agentpool makes to the controller, over python-jenkins.

It asks only for what real Jenkins exports (see docs and ``jenkins-api.md``): one
``tree=``-filtered request for the queue and one for the nodes per pass, so a pass costs two
requests however many agents exist. python-jenkins' convenience calls that read more than
they need (``get_nodes`` then ``get_node_info`` per node) or that misbehave on inbound
agents (``disable_node`` on a disconnected agent does nothing) are avoided; its session,
auth and crumb handling are used as they are. Every failure leaves as :class:`JenkinsError`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

import jenkins
import msgspec
import requests
from defusedxml import ElementTree as ET

from agentpool.errors import ErrorKind, JenkinsError
from agentpool.model import Executor, Node, QueueItem
from agentpool.why import QUEUE_TREE, ambiguous, decode_queue, items_from_raw, with_exact_labels

T = TypeVar("T")

NODES_TREE = (
    "computer[_class,displayName,description,offline,temporarilyOffline,offlineCauseReason,"
    "assignedLabels[name],executors[idle,currentExecutable[url]],"
    "oneOffExecutors[idle,currentExecutable[url]]]"
)
_BUILT_IN_CLASSES = ("hudson.model.Hudson$MasterComputer", "jenkins.model.Jenkins$MasterComputer")
_ALREADY_EXISTS = re.compile(r"already exists", re.IGNORECASE)
# Built-in agents and their labels are never ours; the JNLP launcher is the only one that
# works for containers dialing in.
LAUNCHER_JNLP = "hudson.slaves.JNLPLauncher"
# The reference's script: one "ID<TAB>LABEL" line per queued item ("null" when it has none).
SCRIPT_LABELS = 'Jenkins.instance.queue.items.each{println "${it.id}\\t${it.assignedLabel}"}'


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


class JenkinsAdapter:
    """One Jenkins controller, reached with a user and an API token."""

    def __init__(self, url: str, user: str, token: str, timeout: float = 10.0) -> None:
        self.url = url if url.endswith("/") else url + "/"
        self._server = jenkins.Jenkins(self.url, username=user, password=token, timeout=timeout)
        # Why texts are localised: ask for the English templates we parse.
        self._server._session.headers["Accept-Language"] = "en"
        # May this account run /scriptText (Overall/Administer)? None: not asked yet.
        self.scripts_allowed: bool | None = None

    # -- plumbing ---------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one python-jenkins call, translating every failure into JenkinsError."""
        try:
            return fn()
        except jenkins.NotFoundException as exc:
            raise JenkinsError(ErrorKind.NOT_FOUND, f"{what}: not found") from exc
        except jenkins.TimeoutException as exc:
            raise JenkinsError(ErrorKind.TIMEOUT, f"{what}: timed out") from exc
        except jenkins.JenkinsException as exc:
            text = str(exc)
            match = re.search(r"\[(\d{3})\]", text)
            status = int(match.group(1)) if match else 0
            kind = {401: ErrorKind.AUTH, 403: ErrorKind.FORBIDDEN}.get(
                status, ErrorKind.SERVER_ERROR if status >= 500 else ErrorKind.OTHER
            )
            if status == 0 and "Error in request" in text:
                kind = ErrorKind.UNREACHABLE
            first_line = text.splitlines()[0] if text else type(exc).__name__
            raise JenkinsError(kind, f"{what}: {_short(first_line)}") from exc
        except requests.HTTPError as exc:
            response = exc.response
            status = response.status_code if response is not None else 0
            detail = response.headers.get("X-Error", "") if response is not None else ""
            kind = (
                ErrorKind.CONFLICT
                if _ALREADY_EXISTS.search(detail)
                else (ErrorKind.BAD_REQUEST if status < 500 else ErrorKind.SERVER_ERROR)
            )
            raise JenkinsError(kind, f"{what}: HTTP {status} {_short(detail)}".rstrip()) from exc
        except requests.Timeout as exc:
            raise JenkinsError(ErrorKind.TIMEOUT, f"{what}: timed out") from exc
        except requests.ConnectionError as exc:
            raise JenkinsError(ErrorKind.UNREACHABLE, f"{what}: cannot connect to {self.url}") from exc
        except requests.RequestException as exc:
            raise JenkinsError(ErrorKind.UNREACHABLE, f"{what}: {type(exc).__name__}") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise JenkinsError(
                ErrorKind.BAD_RESPONSE, f"{what}: unexpected answer ({_short(str(exc))})"
            ) from exc

    def _get(self, path: str) -> str:
        return str(self._server.jenkins_open(requests.Request("GET", self.url + path)))

    def _get_bytes(self, path: str) -> bytes:
        """The body undecoded: the queue's megabytes go to the JSON decoder as they came."""
        return bytes(self._server.jenkins_request(requests.Request("GET", self.url + path)).content)

    def _get_json(self, what: str, path: str) -> Any:
        return self._call(what, lambda: json.loads(self._get(path)))

    def _post(self, what: str, path: str, data: dict[str, str] | None = None) -> None:
        def post() -> None:
            self._server.jenkins_open(requests.Request("POST", self.url + path, data=data))

        try:
            self._call(what, post)
        except JenkinsError as exc:
            # python-jenkins fetches the crumb once; with a password (not an API token) it is
            # tied to a session that a controller restart ends. Fetch a new one, try again once.
            if exc.kind is not ErrorKind.FORBIDDEN or "crumb" not in str(exc.__cause__).lower():
                raise
            self._server.crumb = None
            self._call(what, post)

    @staticmethod
    def _node_path(name: str) -> str:
        return "computer/" + quote(name, safe="")

    # -- reads -----------------------------------------------------------------------------

    def ping(self) -> str:
        """The controller's version (``X-Jenkins``); proves reachability and credentials."""

        def version() -> str:
            self._server.get_whoami()  # resolves auth first: get_version alone sends none
            return str(self._server.get_version())

        return self._call("read version", version)

    def read_nodes(self) -> tuple[Node, ...]:
        """Every agent node (the built-in node left out), in one request."""
        answer = self._call(
            "read nodes", lambda: _COMPUTERS.decode(self._get_bytes(f"computer/api/json?tree={NODES_TREE}"))
        )
        return tuple(node_from_raw(raw) for raw in answer.computer if raw.cls not in _BUILT_IN_CLASSES)

    def visible_jobs(self) -> int:
        """How many top-level jobs this user may read (Jenkins lists no other: doctor's Job/Read)."""
        data = self._get_json("read jobs", "api/json?tree=jobs[name]")
        return len(data.get("jobs") or ())

    def read_node(self, name: str) -> Node:
        tree = NODES_TREE[len("computer[") : -1]
        path = f"{self._node_path(name)}/api/json?tree={tree}"
        return node_from_raw(self._call(f"read node {name}", lambda: _COMPUTER.decode(self._get_bytes(path))))

    def read_queue(self, nodes: tuple[Node, ...]) -> tuple[QueueItem, ...]:
        """Every queued item, in one request; labels recovered with the nodes' help.

        When some buildable item's label is ambiguous (hidden, or a node named in its place)
        and the account may run scripts, one more request reads the exact labels
        (:meth:`exact_labels`). Whether it may is learnt once: the first 403 turns it off for
        good, so an account without Overall/Administer never pays for it again.
        """
        raw = self._call(
            "read queue", lambda: decode_queue(self._get_bytes(f"queue/api/json?tree={QUEUE_TREE}"))
        )
        items = items_from_raw(raw, nodes)
        if self.scripts_allowed is not False and any(ambiguous(item) for item in items):
            try:
                exact = self.exact_labels()
            except JenkinsError:
                return items  # a failed extra read costs the exact labels of this pass, not the pass
            self.scripts_allowed = exact is not None
            if exact is not None:
                items = with_exact_labels(items, exact)
        return items

    # -- writes ----------------------------------------------------------------------------

    def create_node(
        self,
        name: str,
        *,
        labels: list[str],
        executors: int,
        remote_fs: str,
        exclusive: bool,
        websocket: bool,
        description: str,
    ) -> None:
        """Create an inbound agent node; one of that name exists already → JenkinsError "conflict".

        An existing node is never taken as ours: it may be another daemon's or an admin's, and
        a failed provision would delete it.
        """
        payload = {
            "nodeDescription": description,
            "numExecutors": executors,
            "remoteFS": remote_fs,
            "labelString": " ".join(labels),
            "mode": "EXCLUSIVE" if exclusive else "NORMAL",
            "retentionStrategy": {"stapler-class": "hudson.slaves.RetentionStrategy$Always"},
            "nodeProperties": {"stapler-class-bag": "true"},
            "launcher": {"stapler-class": LAUNCHER_JNLP, "webSocket": websocket},
        }
        form = {"name": name, "type": "hudson.slaves.DumbSlave$DescriptorImpl", "json": json.dumps(payload)}
        self._post(f"create node {name}", "computer/doCreateItem", form)

    def agent_secret(self, name: str) -> str:
        """The node's inbound secret, read from its JNLP file (python-jenkins has no call for it)."""
        path = self._node_path(name)

        def fetch() -> str:
            try:
                return self._get(f"{path}/jenkins-agent.jnlp")
            except jenkins.NotFoundException:
                return self._get(f"{path}/slave-agent.jnlp")

        text = self._call(f"read secret of {name}", fetch)
        try:
            arguments = [a.text or "" for a in ET.fromstring(text).iter("argument")]
        except ET.ParseError as exc:
            raise JenkinsError(
                ErrorKind.BAD_RESPONSE, f"read secret of {name}: JNLP file is not XML"
            ) from exc
        if not arguments or not re.fullmatch(r"[0-9a-f]{64}", arguments[0]):
            raise JenkinsError(ErrorKind.BAD_RESPONSE, f"read secret of {name}: no secret in the JNLP file")
        return arguments[0]

    def set_temporarily_offline(self, name: str, offline: bool, message: str = "") -> Node:
        """Take a node temporarily offline (or back), whatever its connection state; return it re-read.

        Taking offline is idempotent (``changeOfflineCause`` sets it, whatever it was), so
        racing an admin or a monitor never brings a node back online. ``toggleOffline`` is
        sent only to bring back a node just read temporarily offline. The node returned is
        read after the call: the caller checks it is what it asked for.
        """
        path = self._node_path(name)
        if offline:
            query = "?offlineMessage=" + quote(message, safe="")
            self._post(f"take {name} offline", f"{path}/changeOfflineCause{query}")
            return self.read_node(name)
        node = self.read_node(name)
        if node.temporarily_offline:
            self._post(f"bring {name} back online", f"{path}/toggleOffline")
            node = self.read_node(name)
        return node

    def exact_labels(self) -> dict[int, str] | None:
        """Every queued item's assigned label via ``/scriptText``; None without Overall/Administer.

        Answers ``{item id: label}`` ("" for none). Only accounts with Overall/Administer may
        run scripts: a 403 (or 404, no script console) is "not available", anything else
        raises :class:`JenkinsError` like any read.
        """
        data = {"script": SCRIPT_LABELS}

        def post() -> str:
            request = requests.Request("POST", self.url + "scriptText", data=data)
            return str(self._server.jenkins_open(request))

        try:
            text = self._call("read exact labels", post)
        except JenkinsError as exc:
            if exc.kind in (ErrorKind.FORBIDDEN, ErrorKind.NOT_FOUND, ErrorKind.BAD_REQUEST):
                return None
            raise
        labels: dict[int, str] = {}
        for line in text.splitlines():
            item, sep, label = line.partition("\t")
            if not sep or not item.strip().isdigit():
                continue
            label = label.strip()
            labels[int(item)] = "" if label == "null" else label
        return labels

    def delete_node(self, name: str) -> None:
        """Delete a node; one that is already gone counts as deleted."""
        try:
            self._post(f"delete node {name}", f"{self._node_path(name)}/doDelete")
        except JenkinsError as exc:
            if exc.kind is not ErrorKind.NOT_FOUND:
                raise

    @property
    def request_session(self) -> requests.Session:
        session: requests.Session = self._server._session
        return session


class _Executable(msgspec.Struct, frozen=True, gc=False):
    url: str | None = None


class _Executor(msgspec.Struct, frozen=True, gc=False):
    idle: bool = True
    currentExecutable: _Executable | None = None


class _OneOffExecutor(_Executor, frozen=True, gc=False):
    idle: bool = False  # unsaid: taken as running (a node is never deleted on a guess)


class _Label(msgspec.Struct, frozen=True, gc=False):
    name: str


class RawComputer(msgspec.Struct, frozen=True, gc=False):
    """One computer of ``/computer/api/json?tree=`` + :data:`NODES_TREE`, decoded typed (a field
    of the wrong type is a bad-response error naming its path, like the queue's)."""

    displayName: str
    cls: str = msgspec.field(name="_class", default="")
    description: str | None = None
    offline: bool = True
    temporarilyOffline: bool = False
    offlineCauseReason: str | None = None
    assignedLabels: list[_Label] | None = None
    executors: list[_Executor] | None = None
    oneOffExecutors: list[_OneOffExecutor] | None = None


class _Computers(msgspec.Struct, frozen=True, gc=False):
    computer: list[RawComputer] = msgspec.field(default_factory=list)


_COMPUTERS = msgspec.json.Decoder(_Computers)
_COMPUTER = msgspec.json.Decoder(RawComputer)


def _url(executor: _Executor) -> str | None:
    return executor.currentExecutable.url if executor.currentExecutable is not None else None


def node_from_raw(raw: RawComputer) -> Node:
    executors = tuple(Executor(idle=e.idle, build_url=_url(e)) for e in raw.executors or ())
    # A Pipeline run (a flyweight task) holds a one-off executor, on an agent when the built-in
    # node cannot take it: a busy one makes the node busy (deleting it would kill the run),
    # but it is no slot for queued items.
    executors += tuple(
        Executor(idle=False, build_url=_url(e)) for e in raw.oneOffExecutors or () if not e.idle
    )
    return Node(
        name=raw.displayName,
        labels=frozenset(label.name for label in raw.assignedLabels or ()),
        offline=raw.offline,
        temporarily_offline=raw.temporarilyOffline,
        offline_reason=raw.offlineCauseReason or "",
        executors=executors,
        description=raw.description or "",
    )
