"""The controller's HTTP and WebSocket face: routes, auth, headers, faults, counts.

Every path, status code and header here is one a real Jenkins answers (see
``docs/jenkins-controller.md``); python-jenkins and the provisioner are pointed at it
unmodified. Handlers run on the controller's event loop and call into
:class:`~agentpool_testing.jenkins.model.Jenkins`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import logging
import os
import re
import secrets
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from aiohttp import WSMsgType, web

from .auth import ALL, ANONYMOUS_READ, AccessDeniedError, Account, Permission
from .beans import Exporter
from .config import ConfigError, parse_job_config
from .export import Bean, TreeSyntaxError, pruner_for, serialise
from .model import (
    JNLP_LAUNCHER,
    ChannelClosedError,
    Computer,
    Failure,
    Jenkins,
    Job,
    QueueItem,
    StepRequest,
    StepSink,
)
from .stub import agent_jar_path

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
UNPROTECTED = ("/login", "/wsagents", "/jnlpJars/", "/tcpSlaveAgentListener")
NODE_TYPES = ("hudson.slaves.DumbSlave$DescriptorImpl", "hudson.slaves.DumbSlave")


class Faults:
    """Failure switches for tests; safe to flip from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fail_left = 0
        self._fail_status = 500
        self._latency = 0.0
        self._reject_until = 0.0
        self._dropper: Callable[[], None] = lambda: None

    def fail_next(self, n: int, status: int = 500) -> None:
        """The next ``n`` HTTP requests (any path) answer ``status``."""
        with self._lock:
            self._fail_left, self._fail_status = n, status

    def latency(self, seconds: float) -> None:
        """Add ``seconds`` to every request (0 clears it)."""
        with self._lock:
            self._latency = max(0.0, seconds)

    def reject_credentials(self, seconds: float) -> None:
        """Answer 401 to every request carrying credentials for ``seconds``."""
        with self._lock:
            self._reject_until = time.monotonic() + seconds

    def drop_agents(self) -> None:
        """Close every agent's WebSocket now (their builds fail, nodes go offline)."""
        self._dropper()

    def _take_failure(self) -> int | None:
        with self._lock:
            if self._fail_left <= 0:
                return None
            self._fail_left -= 1
            return self._fail_status

    def _current_latency(self) -> float:
        with self._lock:
            return self._latency

    def _rejecting(self) -> bool:
        with self._lock:
            return time.monotonic() < self._reject_until


class AgentChannel:
    """An agent's WebSocket, speaking the JSON protocol of ``docs/jenkins-controller.md``."""

    def __init__(self, ws: web.WebSocketResponse, name: str) -> None:
        self.ws = ws
        self.name = name
        self._ids = itertools.count(1)
        self._pending: dict[str, tuple[StepSink, asyncio.Future[int]]] = {}

    async def run(self, step: StepRequest, sink: StepSink) -> int:
        if self.ws.closed:
            raise ChannelClosedError
        step_id = str(next(self._ids))
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending[step_id] = (sink, future)
        message = {
            "type": "exec",
            "id": step_id,
            "script": step.script,
            "env": step.env,
            "workspace": step.workspace,
        }
        try:
            await self.ws.send_str(json.dumps(message))
            return await future
        except (ConnectionError, RuntimeError):
            raise ChannelClosedError from None
        except asyncio.CancelledError:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_str(json.dumps({"type": "kill", "id": step_id}))
            raise
        finally:
            self._pending.pop(step_id, None)

    def receive(self, message: dict[str, Any]) -> None:
        entry = self._pending.get(str(message.get("id")))
        if entry is None:
            return
        sink, future = entry
        kind = message.get("type")
        if kind == "started":
            sink.started(str(message.get("workspace", "")), str(message.get("command", "")))
        elif kind == "output":
            sink.output(str(message.get("data", "")))
        elif kind == "exit" and not future.done():
            future.set_result(int(message.get("code", -1)))

    def closed(self) -> None:
        for _, future in list(self._pending.values()):
            if not future.done():
                future.set_exception(ChannelClosedError())

    async def close(self) -> None:
        await self.ws.close(code=1001, message=b"agent disconnected by the controller")


class LocalChannel:
    """Runs the built-in node's steps as local processes (only when it has executors)."""

    async def run(self, step: StepRequest, sink: StepSink) -> int:
        workspace = Path(step.workspace)
        workspace.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="jenkins", delete=False) as f:
            f.write(step.script)
        try:
            argv = shell_argv(step.script, f.name)
            sink.started(str(workspace), " ".join(argv))
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=workspace,
                env={**os.environ, **step.env},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            assert proc.stdout is not None
            try:
                while chunk := await proc.stdout.read(4096):
                    sink.output(chunk.decode(errors="replace"))
                return await proc.wait()
            except asyncio.CancelledError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                raise
        finally:
            Path(f.name).unlink(missing_ok=True)

    async def close(self) -> None:
        return None


def shell_argv(script: str, path: str) -> list[str]:
    """``hudson.tasks.Shell``: a ``#!`` line names the interpreter, else ``/bin/sh -xe``."""
    if script.startswith("#!"):
        return [*script[2:].split("\n", 1)[0].split(), path]
    return ["/bin/sh", "-xe", path]


def _html(title: str, body: str = "", status: int = 200) -> web.Response:
    text = f"<html><head><title>{escape(title)}</title></head><body>{body or escape(title)}</body></html>"
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _error(status: int, message: str) -> web.Response:
    return _html(f"Error {status} {message}", f"<h2>HTTP ERROR {status} {escape(message)}</h2>", status)


def _not_found() -> web.Response:
    return _error(404, "Not Found")


def _failure(message: str) -> web.Response:
    """``hudson.model.Failure`` as the error page renders it: 400 and ``X-Error``."""
    response = _error(400, message)
    response.headers["X-Error"] = message
    return response


def _redirect(request: web.Request, path: str, status: int = 302) -> web.Response:
    """Jetty turns relative redirects into absolute ones from the request's own host."""
    return web.Response(status=status, headers={"Location": f"{request.url.origin()}/{path.lstrip('/')}"})


def _denied(exc: AccessDeniedError) -> web.Response:
    """``AccessDeniedException3`` as Jenkins renders it: 403, and who lacks which permission."""
    response = _html("Access Denied [Jenkins]", f"<h1>Access Denied</h1><p>{escape(str(exc))}</p>", 403)
    response.headers["X-You-Are-Authenticated-As"] = exc.user
    response.headers["X-You-Are-In-Group-Disabled"] = (
        "JENKINS-39402: use -Dhudson.security.AccessDeniedException2.REPORT_GROUP_HEADERS=true "
        "or use /whoAmI to diagnose"
    )
    response.headers["X-Required-Permission"] = exc.permission.id
    if exc.permission is not Permission.ADMINISTER:
        response.headers["X-Permission-Implied-By"] = Permission.ADMINISTER.id
    return response


def job_of(item: QueueItem) -> Job:
    """The job whose Job/Read decides whether ``item`` is listed (a Pipeline item's run's job)."""
    return item.task if isinstance(item.task, Job) else item.task.run.job


# What ``POST /scriptText`` runs: the exact label of every queued item (the reference's script),
# and plain string prints (python-jenkins' ``run_script`` appends ``print(")]}.")``).
QUEUE_LABELS_SCRIPT = re.compile(
    r"(?:jenkins\.model\.)?Jenkins\s*\.\s*(?:instance|getInstance\(\)|get\(\))\s*\.\s*queue\s*\.\s*items"
    r"\s*\.\s*each\s*\{\s*println\s*\(?\s*\"\$\{it\.id\}(?:\\t|\t)\$\{it\.assignedLabel\}\"\s*\)?\s*;?\s*\}\s*;?"
)
PRINT_LITERAL = re.compile(r"(print|println)\s*\(?\s*(?:'([^'\\]*)'|\"([^\"\\$]*)\")\s*\)?\s*;?")


def run_script(script: str, queue_labels: Callable[[], str]) -> str | None:
    """The output of ``script`` if it is made only of statements this controller knows, else None."""
    out: list[str] = []
    for line in script.splitlines():
        statement = line.strip()
        if not statement:
            continue
        if QUEUE_LABELS_SCRIPT.fullmatch(statement):
            out.append(queue_labels())
        elif printed := PRINT_LITERAL.fullmatch(statement):
            text = printed.group(2) if printed.group(2) is not None else printed.group(3)
            out.append(text + ("\n" if printed.group(1) == "println" else ""))
        else:
            return None
    return "".join(out)


async def _requires_post(request: web.Request) -> web.Response:
    response = _html("This URL requires POST", "<h1>This URL requires POST</h1>", 405)
    response.headers["Allow"] = "POST"
    return response


class Server:
    """Builds the aiohttp application around one :class:`Jenkins`."""

    def __init__(
        self,
        jenkins: Jenkins,
        *,
        user: str,
        token: str,
        password: str | None,
        anonymous_read: bool,
        version: str,
        faults: Faults,
        agent_jar: Path | None = None,
    ) -> None:
        self.j = jenkins
        self.jar_path = agent_jar
        self.export = Exporter(jenkins)
        self.accounts: dict[str, Account] = {user: Account(user, token, password, ALL)}
        self.anonymous = Account(
            "anonymous", "", permissions=ANONYMOUS_READ if anonymous_read else frozenset()
        )
        self.version = version
        self.faults = faults
        self.session = secrets.token_hex(4)
        self.counts: Counter[str] = Counter()
        self.counts_lock = threading.Lock()
        self.channels: set[AgentChannel] = set()

    # --- plumbing ------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        r = app.router
        get, post = r.add_get, r.add_post

        def post_only(path: str, handler: Handler) -> None:
            post(path, handler)
            get(path, _requires_post, allow_head=False)

        get("/", self.root)
        get("/api/json", self.root_api)
        get("/login", self.login)
        get("/crumbIssuer/api/json", self.crumb)
        get("/me/api/json", self.me)
        get("/whoAmI/api/json", self.who_am_i)
        post_only("/quietDown", self.quiet_down)
        post_only("/cancelQuietDown", self.cancel_quiet_down)
        get("/queue/api/json", self.queue)
        get("/queue/item/{id}/api/json", self.queue_item)
        post_only("/queue/cancelItem", self.cancel_item)
        get("/computer/", self.computers_page)
        get("/computer/api/json", self.computers)
        post_only("/computer/doCreateItem", self.create_node)
        get("/computer/{name}/", self.computer_page)
        get("/computer/{name}/api/json", self.computer)
        post_only("/computer/{name}/doDelete", self.delete_node)
        post_only("/computer/{name}/toggleOffline", self.toggle_offline)
        post_only("/computer/{name}/changeOfflineCause", self.change_offline_cause)
        get("/computer/{name}/config.xml", self.node_config)
        post("/computer/{name}/config.xml", self.update_node_config)
        get("/computer/{name}/jenkins-agent.jnlp", self.jnlp)
        get("/computer/{name}/slave-agent.jnlp", self.jnlp)
        get("/label/{expr:.+}/api/json", self.label)
        get("/jnlpJars/{jar}", self.agent_jar)
        get("/wsagents/", self.wsagents)
        get("/wsagents", self.wsagents)
        post_only("/createItem", self.create_job)
        get("/job/{name}/", self.job_page)
        get("/job/{name}/api/json", self.job)
        get("/job/{name}/config.xml", self.job_config)
        post("/job/{name}/config.xml", self.update_job_config)
        post_only("/job/{name}/build", self.build)
        post_only("/job/{name}/doDelete", self.delete_job)
        get("/job/{name}/{number}/", self.build_page)
        get("/job/{name}/{number}/api/json", self.build_api)
        get("/job/{name}/{number}/consoleText", self.console_text)
        post_only("/job/{name}/{number}/stop", self.stop_build)
        post_only("/scriptText", self.script_text)
        return app

    def count_key(self, request: web.Request) -> str:
        resource = request.match_info.route.resource
        path = resource.canonical if resource is not None else request.path
        return f"{request.method} {path}"

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        with self.counts_lock:
            self.counts[self.count_key(request)] += 1
        delay = self.faults._current_latency()
        if delay > 0:
            await asyncio.sleep(delay)
        status = self.faults._take_failure()
        response: web.StreamResponse
        if status is not None:
            response = _error(status, "Injected fault")
        else:
            try:
                response = await self._authorised(request, handler)
            except web.HTTPNotFound:
                response = _not_found()
            except web.HTTPMethodNotAllowed as exc:
                response = _error(405, "Method Not Allowed")
                response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
            except Failure as exc:
                response = _failure(str(exc))
            except AccessDeniedError as exc:
                response = _denied(exc)
            except web.HTTPException as exc:
                response = _error(exc.status, exc.reason)
            except Exception:  # answer like Jenkins' oops page, headers included
                log.exception("error answering %s %s", request.method, request.path)
                response = _error(500, "Server Error")
        if not response.prepared:
            response.headers["X-Jenkins"] = self.version
            response.headers["X-Hudson"] = "1.395"
            response.headers["X-Jenkins-Session"] = self.session
        return response

    async def _authorised(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        account = self.anonymous
        by_password = False
        unprotected = request.path.startswith(UNPROTECTED)
        if header.lower().startswith("basic "):
            try:
                user, _, secret = base64.b64decode(header[6:].strip()).decode().partition(":")
            except ValueError:
                user, secret = "", ""
            found = self.accounts.get(user)
            token_ok = found is not None and hmac.compare_digest(secret.encode(), found.token.encode())
            password_ok = (
                found is not None
                and found.password is not None
                and hmac.compare_digest(secret.encode(), found.password.encode())
            )
            if found is None or self.faults._rejecting() or not (token_ok or password_ok):
                response = _error(401, f"Invalid password/token for user: {user}")
                response.headers["WWW-Authenticate"] = 'Basic realm="Jenkins"'
                return response
            account, by_password = found, not token_ok
        elif self.faults._rejecting() and not unprotected:
            response = _error(401, "Unauthorized")
            response.headers["WWW-Authenticate"] = 'Basic realm="Jenkins"'
            return response
        if account is self.anonymous and not account.has(Permission.READ) and not unprotected:
            response = _html("Authentication required", "<h1>Authentication required</h1>", 403)
            response.headers["X-You-Are-Authenticated-As"] = "anonymous"
            response.headers["X-You-Are-In-Group-Disabled"] = (
                "JENKINS-39402: use -Dhudson.security.AccessDeniedException2.REPORT_GROUP_HEADERS=true "
                "or use /whoAmI to diagnose"
            )
            response.headers["X-Required-Permission"] = Permission.READ.id
            return response
        if not unprotected:
            account.check(Permission.READ)
        if by_password and request.method == "POST" and not self._crumb_ok(request, account.name):
            return _error(403, "No valid crumb was included in the request")
        return await handler(request)

    def _account(self, request: web.Request) -> Account:
        """Who the (already authorised: its credentials were checked) request is from."""
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("basic "):
            try:
                user = base64.b64decode(header[6:].strip()).decode().partition(":")[0]
            except ValueError:
                return self.anonymous
            return self.accounts.get(user, self.anonymous)
        return self.anonymous

    def _user(self, request: web.Request) -> str:
        return self._account(request).name

    def _session_of(self, request: web.Request) -> str:
        return request.cookies.get(self._cookie_name, "")

    @property
    def _cookie_name(self) -> str:
        return f"JSESSIONID.{self.session}"

    def _crumb_for(self, user: str, session: str) -> str:
        return hmac.new(self.j.instance_key, f"crumb:{user}:{session}".encode(), hashlib.sha256).hexdigest()

    def _crumb_ok(self, request: web.Request, user: str) -> bool:
        sent = request.headers.get("Jenkins-Crumb", "")
        expected = self._crumb_for(user, self._session_of(request))
        return bool(sent) and hmac.compare_digest(sent, expected)

    def api(self, request: web.Request, bean: Bean) -> web.Response:
        try:
            depth = int(request.query.get("depth", "0") or 0)
        except ValueError:
            depth = 0
        try:
            pruner = pruner_for(request.query.get("tree"), depth)
        except TreeSyntaxError as exc:
            return _error(400, str(exc))
        indent = 2 if request.query.get("pretty") == "true" else None
        separators = None if indent else (",", ":")
        body = json.dumps(serialise(bean, pruner), ensure_ascii=False, indent=indent, separators=separators)
        return web.Response(text=body, content_type="application/json", charset="utf-8")

    def _computer(self, request: web.Request) -> Computer:
        computer = self.j.computer(request.match_info["name"])
        if computer is None:
            raise web.HTTPNotFound
        return computer

    # --- root, auth ----------------------------------------------------------------

    async def root(self, request: web.Request) -> web.Response:
        return _html("Dashboard [Jenkins]")

    async def root_api(self, request: web.Request) -> web.Response:
        return self.api(request, self.export.hudson(self._account(request).may_read_job))

    async def login(self, request: web.Request) -> web.Response:
        return _html("Sign in [Jenkins]", "<form method='post' action='j_spring_security_check'></form>")

    async def crumb(self, request: web.Request) -> web.Response:
        session = self._session_of(request) or secrets.token_hex(12)
        bean = Bean("hudson.security.csrf.DefaultCrumbIssuer")
        bean.add("crumb", self._crumb_for(self._user(request), session)).add(
            "crumbRequestField", "Jenkins-Crumb"
        )
        response = self.api(request, bean)
        if not self._session_of(request):
            response.set_cookie(self._cookie_name, session, path="/", httponly=True)
        return response

    async def me(self, request: web.Request) -> web.Response:
        user = self._user(request)
        bean = Bean("hudson.model.User").add("absoluteUrl", f"{self.j.root_url}user/{user}")
        bean.add("description", None).add("fullName", user).add("id", user).add("property", [])
        return self.api(request, bean)

    async def who_am_i(self, request: web.Request) -> web.Response:
        user = self._user(request)
        bean = Bean("hudson.security.WhoAmI").add("anonymous", user == "anonymous")
        bean.add("authenticated", user != "anonymous").add("authorities", ["authenticated"])
        bean.add("details", None).add("name", user)
        return self.api(request, bean)

    async def quiet_down(self, request: web.Request) -> web.Response:
        self._account(request).check(Permission.ADMINISTER)
        self.j.quieting_down = True
        self.j.changed()
        return _redirect(request, "/")

    async def cancel_quiet_down(self, request: web.Request) -> web.Response:
        self._account(request).check(Permission.ADMINISTER)
        self.j.quieting_down = False
        self.j.changed()
        return _redirect(request, "/")

    # --- queue ---------------------------------------------------------------------

    async def queue(self, request: web.Request) -> web.Response:
        account = self._account(request)
        return self.api(request, self.export.queue(lambda item: account.may_read_job(job_of(item).name)))

    async def queue_item(self, request: web.Request) -> web.Response:
        try:
            item = self.j.item(int(request.match_info["id"]))
        except ValueError:
            item = None
        if item is None:
            return _not_found()
        return self.api(request, self.export.item(item))

    async def cancel_item(self, request: web.Request) -> web.Response:
        raw = request.query.get("id", "0")
        try:
            item_id = int(raw)
        except ValueError:
            return _error(400, f"Invalid id: {raw}")
        outcome = self.j.cancel(item_id)
        if outcome is True:
            return web.Response(status=204)
        if outcome is False:
            return _error(422, f"Item for id ({item_id}) is not cancellable")
        return _error(404, f"Provided id ({item_id}) not found")

    # --- computers -----------------------------------------------------------------

    async def computers_page(self, request: web.Request) -> web.Response:
        return _html("Nodes [Jenkins]")

    async def computers(self, request: web.Request) -> web.Response:
        return self.api(request, self.export.computer_set())

    async def computer_page(self, request: web.Request) -> web.Response:
        return _html(f"{self._computer(request).display_name} [Jenkins]")

    async def computer(self, request: web.Request) -> web.Response:
        return self.api(request, self.export.computer(self._computer(request)))

    async def create_node(self, request: web.Request) -> web.Response:
        self._account(request).check(Permission.AGENT_CREATE)
        form = await request.post()
        params = {**request.query, **{k: str(v) for k, v in form.items()}}
        kind = params.get("type")
        if kind not in NODE_TYPES:
            raise Failure(f"No such node type: {kind}")
        try:
            submitted = json.loads(params.get("json", "{}"))
        except ValueError as exc:
            raise Failure(f"Malformed json= form field: {exc}") from None
        if not isinstance(submitted, dict):
            raise Failure("Malformed json= form field: not an object")
        self.j.create_node(params.get("name"), submitted)
        return _redirect(request, "/computer/")

    async def delete_node(self, request: web.Request) -> web.Response:
        computer = self._computer(request)
        self._account(request).check(Permission.AGENT_DELETE)
        if computer.builtin:
            return _error(400, "Bad Request")
        await self.j.delete_node(computer)
        return _redirect(request, "/computer/")

    async def toggle_offline(self, request: web.Request) -> web.Response:
        computer = self._computer(request)
        # taking offline needs Agent/Disconnect, bringing back online Agent/Connect
        wanted = Permission.AGENT_CONNECT if computer.temp_offline else Permission.AGENT_DISCONNECT
        self._account(request).check(wanted)
        self.j.toggle_offline(computer, request.query.get("offlineMessage", "").strip())
        return _redirect(request, f"/computer/{request.match_info['name']}/")

    async def change_offline_cause(self, request: web.Request) -> web.Response:
        computer = self._computer(request)
        self._account(request).check(Permission.AGENT_DISCONNECT)
        form = await request.post()
        message = request.query.get("offlineMessage") or str(form.get("offlineMessage", ""))
        self.j.change_offline_cause(computer, message.strip())
        return _redirect(request, f"/computer/{request.match_info['name']}/")

    async def node_config(self, request: web.Request) -> web.Response:
        c = self._computer(request)
        if c.builtin:
            return _error(400, "Bad Request")
        launcher = (
            f'  <launcher class="{c.launcher}">\n'
            "    <workDirSettings>\n      <disabled>false</disabled>\n"
            "      <internalDir>remoting</internalDir>\n"
            "      <failIfWorkDirIsMissing>false</failIfWorkDirIsMissing>\n    </workDirSettings>\n"
            f"    <webSocket>{str(c.web_socket).lower()}</webSocket>\n  </launcher>\n"
        )
        xml = (
            "<?xml version='1.1' encoding='UTF-8'?>\n<slave>\n"
            f"  <name>{escape(c.name)}</name>\n  <description>{escape(c.description)}</description>\n"
            f"  <remoteFS>{escape(c.remote_fs)}</remoteFS>\n"
            f"  <numExecutors>{c.num_executors}</numExecutors>\n"
            f"  <mode>{c.mode}</mode>\n"
            '  <retentionStrategy class="hudson.slaves.RetentionStrategy$Always"/>\n'
            f"{launcher}  <label>{escape(c.label_string)}</label>\n  <nodeProperties/>\n</slave>\n"
        )
        return web.Response(text=xml, content_type="application/xml", charset="utf-8")

    async def update_node_config(self, request: web.Request) -> web.Response:
        c = self._computer(request)
        if c.builtin:
            return _error(400, "Bad Request")
        try:
            root = ET.fromstring(await request.text())  # noqa: S314 - posted by the test's own client
        except ET.ParseError as exc:
            return _error(400, f"Failed to parse config.xml: {exc}")
        name = root.findtext("name")
        if name is not None and name.strip() != c.name:
            raise Failure("Renaming a node through config.xml is not supported by this controller")
        launcher = root.find("launcher")
        launcher_class = launcher.get("class", JNLP_LAUNCHER) if launcher is not None else JNLP_LAUNCHER
        form: dict[str, object] = {
            "numExecutors": root.findtext("numExecutors", str(c.num_executors)),
            "remoteFS": root.findtext("remoteFS", c.remote_fs),
            "labelString": root.findtext("label", ""),
            "mode": root.findtext("mode", "NORMAL"),
            "nodeDescription": root.findtext("description", ""),
            "launcher": {
                "stapler-class": launcher_class,
                "webSocket": launcher is not None and launcher.findtext("webSocket", "false") == "true",
            },
        }
        self.j.update_node(c, form)
        return web.Response(status=200)

    async def jnlp(self, request: web.Request) -> web.Response:
        c = self._computer(request)
        if c.builtin or c.launcher != JNLP_LAUNCHER:
            return _not_found()
        self._account(request).check(Permission.AGENT_CONNECT)
        args = [self.j.secret(c.name), c.name]
        if c.web_socket:
            args.append("-webSocket")
        args += ["-workDir", c.remote_fs, "-internalDir", "remoting", "-url", self.j.root_url]
        arguments = "".join(f"    <argument>{escape(a)}</argument>\n" for a in args)
        root = self.j.root_url
        xml = (
            f'<jnlp codebase="{escape(root)}computer/{escape(c.name)}/" spec="1.0+">\n'
            f"  <information>\n    <title>Agent for {escape(c.name)}</title>\n"
            "    <vendor>Jenkins project</vendor>\n  </information>\n"
            f'  <resources>\n    <jar href="{escape(root)}jnlpJars/remoting.jar"/>\n  </resources>\n'
            f'  <application-desc main-class="hudson.remoting.jnlp.Main">\n{arguments}'
            "  </application-desc>\n</jnlp>\n"
        )
        return web.Response(body=xml.encode(), headers={"Content-Type": "application/x-java-jnlp-file"})

    async def label(self, request: web.Request) -> web.Response:
        return self.api(request, self.export.label(request.match_info["expr"]))

    # --- agents --------------------------------------------------------------------

    async def agent_jar(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["jar"] not in ("agent.jar", "remoting.jar", "slave.jar"):
            return _not_found()
        path = agent_jar_path(self.jar_path)
        if not path.is_file():
            message = f"agent.jar is not built: {path} does not exist (run scripts/build-agent-jar)"
            return _error(404, message)
        return web.FileResponse(path, headers={"Content-Type": "application/java-archive"})

    async def wsagents(self, request: web.Request) -> web.StreamResponse:
        name = request.headers.get("Node-Name")
        secret = request.headers.get("Secret-Key")
        capability = request.headers.get("X-Remoting-Capability")
        if name is None or secret is None or capability is None:
            return _error(400, "This endpoint is only for use from agent.jar in WebSocket mode")
        computer = self.j.nodes.get(name)
        if computer is None:
            return _error(400, "no such agent")
        if not hmac.compare_digest(secret.encode(), self.j.secret(name).encode()):
            return _error(403, "Forbidden")
        if computer.channel is not None:
            return _error(400, f"{name} is already connected to this controller. Rejecting this connection.")
        ws = web.WebSocketResponse(heartbeat=15.0, max_msg_size=16 * 1024 * 1024)
        ws.headers["X-Jenkins"] = self.version
        ws.headers["X-Remoting-Capability"] = capability
        ws.headers["X-Remoting-Minimum-Version"] = "3.14"
        await ws.prepare(request)
        channel = AgentChannel(ws, name)
        if computer.channel is not None or self.j.nodes.get(name) is not computer:
            await ws.close(code=1008, message=b"already connected or deleted")
            return ws
        self.channels.add(channel)
        self.j.connected(computer, channel)
        log.info("agent %s connected", name)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    with contextlib.suppress(ValueError, TypeError, AttributeError):
                        channel.receive(json.loads(msg.data))
        finally:
            self.channels.discard(channel)
            channel.closed()
            self.j.disconnected(computer, channel)
            log.info("agent %s disconnected", name)
        return ws

    async def drop_agents(self) -> None:
        for channel in list(self.channels):
            await channel.close()

    # --- jobs ----------------------------------------------------------------------

    def _job(self, request: web.Request) -> Any:
        """The job named in the URL; one the caller may not read does not exist for it."""
        job = self.j.jobs.get(request.match_info["name"])
        if job is None or not self._account(request).may_read_job(job.name):
            raise web.HTTPNotFound
        return job

    async def create_job(self, request: web.Request) -> web.Response:
        if request.query.get("mode"):
            raise Failure(f"Unsupported mode: {request.query['mode']}")
        body = await request.text()
        if not body.strip():
            raise Failure("No mode given")
        try:
            config = parse_job_config(body)
        except ConfigError as exc:
            return _error(500, str(exc))
        self.j.create_job(request.query.get("name"), config)
        return web.Response(status=200)

    async def job_page(self, request: web.Request) -> web.Response:
        return _html(f"{self._job(request).name} [Jenkins]")

    async def job(self, request: web.Request) -> web.Response:
        return self.api(request, self.export.job(self._job(request)))

    async def job_config(self, request: web.Request) -> web.Response:
        xml = self._job(request).config.xml
        return web.Response(text=xml, content_type="application/xml", charset="utf-8")

    async def update_job_config(self, request: web.Request) -> web.Response:
        job = self._job(request)
        try:
            config = parse_job_config(await request.text())
        except ConfigError as exc:
            return _error(500, str(exc))
        if config.kind != job.kind:
            return _error(400, f"Expecting {job.kind} but got {config.kind} instead")
        job.config = config
        return web.Response(status=200)

    async def build(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if job.config.disabled:
            return _error(409, f"{job.name} is disabled")
        delay = None
        raw = request.query.get("delay")
        if raw:
            match = re.fullmatch(r"(\d+)\s*(sec|secs|s)?", raw.strip())
            if match is None:
                return _error(400, f"Invalid delay: {raw}")
            delay = int(match.group(1))
        item = self.j.schedule(job, delay, self._user(request))
        return _redirect(request, f"/queue/item/{item.id}/", status=201)

    async def delete_job(self, request: web.Request) -> web.Response:
        job = self._job(request)
        queued = self.j.active_item(job)
        if queued is not None:
            self.j.cancel(queued.id)
        for b in job.builds.values():
            if b.task is not None and not b.task.done():
                b.task.cancel()
        del self.j.jobs[job.name]
        return _redirect(request, "/")

    def _build(self, request: web.Request) -> Any:
        job = self._job(request)
        ref = request.match_info["number"]
        builds = list(reversed(job.builds.values()))
        done = [b for b in builds if b.result is not None]
        permalinks = {
            "lastBuild": builds[:1],
            "lastCompletedBuild": done[:1],
            "lastSuccessfulBuild": [b for b in done if b.result == "SUCCESS"][:1],
            "lastStableBuild": [b for b in done if b.result == "SUCCESS"][:1],
            "lastFailedBuild": [b for b in done if b.result == "FAILURE"][:1],
            "lastUnsuccessfulBuild": [b for b in done if b.result != "SUCCESS"][:1],
        }
        if ref in permalinks:
            found = permalinks[ref]
            if not found:
                raise web.HTTPNotFound
            return found[0]
        build = job.builds.get(int(ref)) if ref.isdigit() else None
        if build is None:
            raise web.HTTPNotFound
        return build

    async def build_page(self, request: web.Request) -> web.Response:
        build = self._build(request)
        return _html(f"{build.job.name} #{build.number} [Jenkins]")

    async def build_api(self, request: web.Request) -> web.Response:
        return self.api(request, self.export.run(self._build(request)))

    async def stop_build(self, request: web.Request) -> web.Response:
        build = self._build(request)
        self.j.stop_build(build, self._user(request))
        return _redirect(request, f"/{build.url_path}")

    async def console_text(self, request: web.Request) -> web.Response:
        build = self._build(request)
        return web.Response(text="".join(build.console), content_type="text/plain", charset="utf-8")

    # --- script console --------------------------------------------------------------

    async def script_text(self, request: web.Request) -> web.Response:
        """``Jenkins.doScriptText``, for the one script a provisioner sends (Overall/Administer)."""
        self._account(request).check(Permission.ADMINISTER)
        form = await request.post()
        script = str(form.get("script") or request.query.get("script") or "")

        def queue_labels() -> str:
            items = self.j.queue_order()
            return "".join(f"{i.id}\t{'null' if i.label is None else i.label}\n" for i in items)

        output = run_script(script, queue_labels)
        if output is None:
            text = (
                "groovy.lang.MissingMethodException: this Jenkins-compatible test controller runs only "
                'Jenkins.instance.queue.items.each{println "${it.id}\\t${it.assignedLabel}"} '
                "and print of a string literal\n"
            )
            return web.Response(status=400, text=text, content_type="text/plain", charset="utf-8")
        return web.Response(text=output, content_type="text/plain", charset="utf-8")
