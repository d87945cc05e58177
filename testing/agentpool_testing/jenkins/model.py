"""The controller's state and Jenkins' queue rules: nodes, jobs, queue items, builds.

Everything here runs on the controller's event loop thread; the HTTP layer only calls
into it. The scheduling and ``why`` rules follow Jenkins core (``Queue.maintain``,
``Queue.BuildableItem.getCauseOfBlockage``, ``Node.canTake``, ``Queue.JobOffer``) so
that a provisioner tested here reads the same queue a real controller shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import posixpath
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import quote

from agentpool import labels
from agentpool.labels import Expr, LabelSyntaxError

from . import texts
from .config import (
    FREESTYLE,
    WORKFLOW_JOB,
    Echo,
    JobConfig,
    PipelineSyntaxError,
    Sh,
    Stage,
    Statement,
    parse_pipeline,
)
from .config import Node as NodeStep

log = logging.getLogger(__name__)

JENKINS_VERSION = "2.462.3"
SLAVE_COMPUTER = "hudson.slaves.SlaveComputer"
MASTER_COMPUTER = "hudson.model.Hudson$MasterComputer"
DUMB_SLAVE = "hudson.slaves.DumbSlave"
JNLP_LAUNCHER = "hudson.slaves.JNLPLauncher"
USER_CAUSE = "hudson.slaves.OfflineCause$UserCause"
CHANNEL_TERMINATION = "hudson.slaves.OfflineCause$ChannelTermination"
PLACEHOLDER_TASK = "org.jenkinsci.plugins.workflow.support.steps.ExecutorStepExecution$PlaceholderTask"
PLACEHOLDER_EXECUTABLE = PLACEHOLDER_TASK + "$PlaceholderExecutable"
RUN_CLASS = {
    FREESTYLE: "hudson.model.FreeStyleBuild",
    WORKFLOW_JOB: "org.jenkinsci.plugins.workflow.job.WorkflowRun",
}
BUILTIN_NAME = "Built-In Node"
BUILTIN_URL_NAMES = ("(built-in)", "(master)")
LABEL_CLASS = {
    "Atom": "hudson.model.labels.LabelAtom",
    "Paren": "hudson.model.labels.LabelExpression$Paren",
    "Not": "hudson.model.labels.LabelExpression$Not",
    labels.Precedence.AND: "hudson.model.labels.LabelExpression$And",
    labels.Precedence.OR: "hudson.model.labels.LabelExpression$Or",
    labels.Precedence.IMPLIES: "hudson.model.labels.LabelExpression$Implies",
    labels.Precedence.IFF: "hudson.model.labels.LabelExpression$Iff",
}
COLORS = {"SUCCESS": "blue", "FAILURE": "red", "ABORTED": "aborted", "UNSTABLE": "yellow"}
ITEM_KINDS = {"waiting": "Waiting", "blocked": "Blocked", "buildable": "Buildable", "left": "Left"}
UNSAFE_NAME_CHARS = "?*/\\%!@#$^&|<>[]:;"


def now_ms() -> int:
    return int(time.time() * 1000)


class ChannelClosedError(Exception):
    """The agent's socket closed while a step was running on it."""


class StepSink(Protocol):
    def started(self, workspace: str, command: str) -> None: ...
    def output(self, text: str) -> None: ...


@dataclass
class StepRequest:
    """One shell step sent to an executor: the script, its environment and workspace."""

    script: str
    env: dict[str, str]
    workspace: str


class Channel(Protocol):
    """What runs shell steps on a node: an agent's WebSocket, or the built-in node."""

    async def run(self, step: StepRequest, sink: StepSink) -> int: ...
    async def close(self) -> None: ...


class Failure(Exception):
    """A request Jenkins refuses with 400 and the message in ``X-Error``."""


def check_good_name(name: str) -> None:
    """``Jenkins.checkGoodName``."""
    if not name:
        raise Failure("No name is specified")
    if name in (".", ".."):
        raise Failure(f"\u201c{name}\u201d is not an allowed name")
    for ch in name:
        if ch.isprintable() is False and ord(ch) < 0x20:
            raise Failure(f"No control code is allowed: {name!r}")
        if ch in UNSAFE_NAME_CHARS:
            raise Failure(f"{texts.q(ch)} is an unsafe character")


@dataclass
class Work:
    """What occupies an executor: a freestyle build, or a Pipeline ``node {}`` block."""

    run: Build
    placeholder: bool
    started: float = field(default_factory=time.monotonic)


@dataclass
class Computer:
    """A node and its computer (Jenkins keeps two objects; tests never need the split)."""

    name: str
    num_executors: int
    remote_fs: str = ""
    label_string: str = ""
    mode: str = "NORMAL"
    description: str = ""
    launcher: str = JNLP_LAUNCHER
    web_socket: bool = True
    builtin: bool = False
    temp_offline: bool = False
    offline_message: str = ""
    offline_cause: str | None = None
    channel: Channel | None = None
    executors: list[Work | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.resize(self.num_executors)

    def resize(self, n: int) -> None:
        self.num_executors = n
        while len(self.executors) < n:
            self.executors.append(None)
        while len(self.executors) > n and self.executors[-1] is None:
            self.executors.pop()

    @property
    def display_name(self) -> str:
        return BUILTIN_NAME if self.builtin else self.name

    @property
    def url_name(self) -> str:
        return BUILTIN_URL_NAMES[0] if self.builtin else self.name

    @property
    def labels(self) -> frozenset[str]:
        return labels.split_labels(self.label_string) | {"built-in" if self.builtin else self.name}

    @property
    def connected(self) -> bool:
        return self.builtin or self.channel is not None

    @property
    def offline(self) -> bool:
        return self.temp_offline or not self.connected

    def count_idle(self) -> int:
        return sum(1 for w in self.executors if w is None)

    def count_busy(self) -> int:
        return sum(1 for w in self.executors if w is not None)


@dataclass
class Job:
    name: str
    config: JobConfig
    next_build_number: int = 1
    builds: dict[int, Build] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def label_text(self) -> str | None:
        """``AbstractProject.getAssignedLabel``; Pipeline jobs run as flyweights without one."""
        if self.kind != FREESTYLE or self.config.can_roam:
            return None
        return self.config.assigned_node if self.config.assigned_node is not None else "built-in"

    def running(self) -> Build | None:
        return next((b for b in reversed(self.builds.values()) if b.result is None), None)

    def estimated_duration(self) -> int:
        done = [b.duration for b in reversed(self.builds.values()) if b.result == "SUCCESS"][:3]
        return sum(done) // len(done) if done else -1


@dataclass
class Build:
    job: Job
    number: int
    queue_id: int
    timestamp: int = field(default_factory=now_ms)
    started: float = field(default_factory=time.monotonic)
    duration: int = 0
    result: str | None = None
    built_on: str = ""
    console: list[str] = field(default_factory=list)
    user: str = "admin"
    task: asyncio.Task[None] | None = None

    def log(self, text: str) -> None:
        self.console.append(text)

    @property
    def url_path(self) -> str:
        return f"job/{quote(self.job.name)}/{self.number}/"


@dataclass
class Placeholder:
    """A Pipeline ``node {}`` block waiting for an executor (``ExecutorStepExecution.PlaceholderTask``)."""

    run: Build
    stage: str | None

    @property
    def name(self) -> str:
        run = f"{self.run.job.name} #{self.run.number}"
        return f"{run} ({self.stage})" if self.stage else f"part of {run}"


@dataclass
class QueueItem:
    id: int
    task: Job | Placeholder
    label: Expr | None
    state: str  # waiting, blocked, buildable, left
    due: int = 0
    in_queue_since: int = field(default_factory=now_ms)
    buildable_since: int = 0
    transient: list[str] | None = None
    cancelled: bool = False
    executable: Build | None = None
    left_at: float = 0.0
    user: str | None = "admin"
    assigned: asyncio.Future[tuple[Computer, int]] | None = None


class QueueCancelledError(Exception):
    pass


class Jenkins:
    """All controller state, mutated only on the event-loop thread."""

    def __init__(
        self,
        root_url: str,
        *,
        user: str = "admin",
        builtin_executors: int = 0,
        builtin_labels: str = "",
        builtin_channel: Channel | None = None,
        quiet_period: int = 5,
        left_item_ttl: float = 300.0,
        cloud: bool = False,
        instance_key: bytes | None = None,
    ) -> None:
        self.root_url = root_url
        self.user = user
        self.quiet_period = quiet_period
        self.left_item_ttl = left_item_ttl
        self.cloud = cloud
        self.instance_key = instance_key or secrets.token_bytes(32)
        self.builtin = Computer(
            "",
            builtin_executors,
            label_string=builtin_labels,
            description="the Jenkins controller's built-in node",
            builtin=True,
            launcher="",
            channel=builtin_channel,
        )
        self.nodes: dict[str, Computer] = {}
        self.jobs: dict[str, Job] = {}
        self.items: list[QueueItem] = []
        self.left: dict[int, QueueItem] = {}
        self.next_id = 1
        self.quieting_down = False
        self.changed: Callable[[], None] = lambda: None

    # --- nodes ---------------------------------------------------------------------

    def secret(self, name: str) -> str:
        return hmac.new(self.instance_key, name.encode(), hashlib.sha256).hexdigest()

    def computers(self) -> list[Computer]:
        return [self.builtin, *sorted(self.nodes.values(), key=lambda c: c.name)]

    def computer(self, url_name: str) -> Computer | None:
        if url_name in BUILTIN_URL_NAMES:
            return self.builtin
        return self.nodes.get(url_name)

    def create_node(self, name: str | None, form: dict[str, object]) -> Computer:
        """``ComputerSet.doDoCreateItem`` with a ``DumbSlave`` form."""
        if name is None:
            raise Failure("Query parameter 'name' is required")
        name = name.strip()
        check_good_name(name)
        if name in self.nodes:
            raise Failure(f"Agent called {texts.q(name)} already exists")
        node = Computer(name, 1)
        self._configure(node, form)
        self.nodes[name] = node
        self.changed()
        return node

    def _configure(self, node: Computer, form: dict[str, object]) -> None:
        try:
            executors = int(str(form.get("numExecutors", 1)))
        except ValueError:
            raise Failure(f"Invalid agent configuration for {node.name}. Invalid # of executors.") from None
        if executors <= 0:
            raise Failure(f"Invalid agent configuration for {node.name}. Invalid # of executors.")
        remote_fs = str(form.get("remoteFS") or "").strip()
        if not remote_fs:
            raise Failure(f"Invalid agent configuration for {node.name}. No remote directory given")
        mode = str(form.get("mode") or "NORMAL")
        if mode not in ("NORMAL", "EXCLUSIVE"):
            raise Failure(f"No enum constant hudson.model.Node.Mode.{mode}")
        launcher = form.get("launcher")
        launcher_class, web_socket = JNLP_LAUNCHER, False
        if isinstance(launcher, dict):
            launcher_class = str(launcher.get("stapler-class") or launcher.get("$class") or JNLP_LAUNCHER)
            web_socket = bool(launcher.get("webSocket", False))
        node.resize(executors)
        node.remote_fs = remote_fs
        node.label_string = str(form.get("labelString") or "")
        node.mode = mode
        node.description = str(form.get("nodeDescription") or "")
        node.launcher = launcher_class
        node.web_socket = web_socket

    def update_node(self, node: Computer, form: dict[str, object]) -> None:
        self._configure(node, form)
        self.changed()

    async def delete_node(self, node: Computer) -> None:
        del self.nodes[node.name]
        if node.channel is not None:
            channel, node.channel = node.channel, None
            await channel.close()
        self.changed()

    def toggle_offline(self, node: Computer, message: str) -> None:
        node.temp_offline = not node.temp_offline
        if node.temp_offline:
            node.offline_cause, node.offline_message = USER_CAUSE, message
        else:
            node.offline_cause, node.offline_message = None, ""
        self.changed()

    def change_offline_cause(self, node: Computer, message: str) -> None:
        """``Computer.doChangeOfflineCause``: temporarily offline with ``message``, whatever it was."""
        node.temp_offline = True
        node.offline_cause, node.offline_message = USER_CAUSE, message
        self.changed()

    def connected(self, node: Computer, channel: Channel) -> None:
        node.channel = channel
        if not node.temp_offline:
            node.offline_cause, node.offline_message = None, ""
        self.changed()

    def disconnected(self, node: Computer, channel: Channel) -> None:
        if node.channel is channel:
            node.channel = None
            if not node.temp_offline:
                node.offline_cause = CHANNEL_TERMINATION
                node.offline_message = "Connection was broken: java.nio.channels.ClosedChannelException"
        self.changed()

    # --- jobs and the queue --------------------------------------------------------

    def create_job(self, name: str | None, config: JobConfig) -> Job:
        if name is None:
            raise Failure("Query parameter 'name' is required")
        check_good_name(name)
        if name in self.jobs:
            raise Failure(f"A job already exists with the name {texts.q(name)}")
        job = Job(name, config)
        self.jobs[name] = job
        return job

    def active_item(self, task: Job | Placeholder) -> QueueItem | None:
        return next((i for i in self.items if i.task is task), None)

    def schedule(self, job: Job, delay: int | None, user: str) -> QueueItem:
        """``Queue.schedule2``: a job already in the queue is not queued twice."""
        existing = self.active_item(job)
        if existing is not None:
            return existing
        quiet = delay if delay is not None else self._quiet(job)
        label = labels.parse(job.label_text) if job.label_text is not None else None
        item = QueueItem(self.next_id, job, label, "waiting", user=user)
        item.due = item.in_queue_since + quiet * 1000
        self.next_id += 1
        self.items.append(item)
        self.maintain()
        return item

    def _quiet(self, job: Job) -> int:
        return job.config.quiet_period if job.config.quiet_period is not None else self.quiet_period

    def cancel(self, item_id: int) -> bool | None:
        """True when cancelled, False when it cannot be (already left), None when unknown."""
        item = next((i for i in self.items if i.id == item_id), None)
        if item is None:
            return False if item_id in self.left else None
        item.cancelled = True
        self._leave(item)
        if item.assigned is not None and not item.assigned.done():
            item.assigned.set_exception(QueueCancelledError())
        self.changed()
        return True

    def _leave(self, item: QueueItem) -> None:
        self.items.remove(item)
        item.state = "left"
        item.left_at = time.monotonic()
        self.left[item.id] = item

    def item(self, item_id: int) -> QueueItem | None:
        self._expire_left()
        return next((i for i in self.items if i.id == item_id), None) or self.left.get(item_id)

    def _expire_left(self) -> None:
        limit = time.monotonic() - self.left_item_ttl
        for item_id in [i for i, item in self.left.items() if item.left_at < limit]:
            del self.left[item_id]

    def queue_order(self) -> list[QueueItem]:
        """``Queue.getItems``: waiting (by due time), blocked, then buildable items newest first.

        Jenkins lists ``reverse(buildables)`` then ``reverse(pendings)``; this controller hands
        a buildable item to its executor at once, so it never shows a pending one.
        """
        waiting = sorted((i for i in self.items if i.state == "waiting"), key=lambda i: (i.due, i.id))
        blocked = [i for i in self.items if i.state == "blocked"]
        return waiting + blocked + self._buildables()[::-1]

    def _buildables(self) -> list[QueueItem]:
        """Buildable items oldest first: the order executors are offered to them."""
        buildable = (i for i in self.items if i.state == "buildable")
        return sorted(buildable, key=lambda i: (i.buildable_since, i.id))

    def _blocked(self, item: QueueItem) -> bool:
        task = item.task
        return isinstance(task, Job) and not task.config.concurrent and task.running() is not None

    def maintain(self) -> None:
        """``Queue.maintain``: move items along and hand buildable ones to idle executors."""
        now = now_ms()
        self._expire_left()
        for item in list(self.items):
            if item.state == "waiting" and item.due <= now:
                item.state = "blocked" if self._blocked(item) else "buildable"
                item.buildable_since = now
            elif item.state == "blocked" and not self._blocked(item):
                item.state = "buildable"
                item.buildable_since = now
            elif item.state == "buildable" and self._blocked(item):
                item.state = "blocked"
        if self.quieting_down:
            return
        for item in self._buildables():
            if isinstance(item.task, Job) and item.task.kind == WORKFLOW_JOB:
                self._start_pipeline(item, item.task)
                continue
            candidates: list[tuple[Computer, int]] = []
            reasons: list[str] = []
            for computer in self.computers():
                for slot, work in enumerate(computer.executors):
                    if work is not None:
                        continue
                    reason = self._offer_refusal(computer, item)
                    if reason is None:
                        candidates.append((computer, slot))
                    else:
                        reasons.append(reason)
            if candidates:
                self._assign(item, *candidates[0])
            else:
                item.transient = reasons or None

    def _offer_refusal(self, computer: Computer, item: QueueItem) -> str | None:
        """``Queue.JobOffer.getCauseOfBlockage`` (which starts with ``Node.canTake``)."""
        name = computer.display_name
        if item.label is not None and not item.label.matches(computer.labels):
            return texts.node_lacks_label(name, str(item.label))
        if item.label is None and computer.mode == "EXCLUSIVE":
            return texts.node_reserved(name)
        if computer.offline:
            return texts.node_offline(name)
        return None

    def why(self, item: QueueItem) -> str | None:
        """``Queue.Item.getWhy`` for every kind of item."""
        if item.state == "left":
            return None
        if item.state == "waiting":
            return texts.in_quiet_period(item.due - now_ms())
        if item.state == "blocked":
            assert isinstance(item.task, Job)
            running = item.task.running()
            number = running.number if running else 0
            return texts.build_in_progress(number, self._eta(item.task, running))
        if self.quieting_down:
            return texts.SHUTTING_DOWN
        label = item.label if self.nodes else None
        if label is not None:
            nodes = [c for c in self.computers() if label.matches(c.labels)]
            if all(c.offline for c in nodes):
                if len(nodes) == 1:
                    return texts.node_offline(nodes[0].display_name)
                if not nodes and not self.cloud:
                    return texts.label_has_no_nodes(str(label))
                return texts.all_nodes_of_label_offline(str(label))
            if item.transient and sum(c.count_idle() for c in nodes if not c.offline) > 0:
                return "; ".join(sorted(set(item.transient)))
            return texts.waiting_for_executor_on(nodes[0].display_name if len(nodes) == 1 else str(label))
        if item.transient and sum(c.count_idle() for c in self.computers() if not c.offline) > 0:
            return "; ".join(sorted(set(item.transient)))
        return texts.WAITING_FOR_EXECUTOR

    def _eta(self, job: Job, running: Build | None) -> str:
        estimate = job.estimated_duration()
        if running is None or estimate < 0:
            return "N/A"
        remaining = estimate - int((time.monotonic() - running.started) * 1000)
        return texts.time_span(remaining) if remaining > 0 else "N/A"

    def stuck(self, item: QueueItem) -> bool:
        if item.state != "buildable":
            return False
        if item.label is not None:
            nodes = [c for c in self.computers() if item.label.matches(c.labels)]
            if all(c.offline for c in nodes):
                return True
        estimate = item.task.estimated_duration() if isinstance(item.task, Job) else -1
        elapsed = now_ms() - item.buildable_since
        if estimate >= 0:
            return elapsed > max(estimate, 60000) * 10
        return elapsed > 24 * 3600 * 1000

    # --- builds --------------------------------------------------------------------

    def _new_build(self, job: Job, item: QueueItem) -> Build:
        build = Build(job, job.next_build_number, item.id, user=item.user or "anonymous")
        job.next_build_number += 1
        job.builds[build.number] = build
        build.log(f"Started by user {build.user}\n")
        item.executable = build
        self._leave(item)
        return build

    def _assign(self, item: QueueItem, computer: Computer, slot: int) -> None:
        if isinstance(item.task, Placeholder):
            computer.executors[slot] = Work(item.task.run, placeholder=True)
            item.executable = item.task.run
            self._leave(item)
            if item.assigned is not None and not item.assigned.done():
                item.assigned.set_result((computer, slot))
            return
        build = self._new_build(item.task, item)
        build.built_on = computer.name
        computer.executors[slot] = Work(build, placeholder=False)
        build.task = asyncio.get_running_loop().create_task(self._run_freestyle(build, computer, slot))

    def _start_pipeline(self, item: QueueItem, job: Job) -> None:
        build = self._new_build(job, item)
        build.task = asyncio.get_running_loop().create_task(self._run_pipeline(build))

    def _finish(self, build: Build, result: str) -> None:
        build.result = result
        build.duration = int((time.monotonic() - build.started) * 1000)
        build.log(f"Finished: {result}\n")
        self.changed()

    def _release(self, computer: Computer, slot: int) -> None:
        if slot < len(computer.executors):
            computer.executors[slot] = None
        computer.resize(computer.num_executors)
        self.changed()

    def _env(self, build: Build, computer: Computer, slot: int, workspace: str) -> dict[str, str]:
        job_url = self.root_url + f"job/{quote(build.job.name)}/"
        return {
            "BUILD_NUMBER": str(build.number),
            "BUILD_ID": str(build.number),
            "BUILD_DISPLAY_NAME": f"#{build.number}",
            "BUILD_TAG": f"jenkins-{build.job.name}-{build.number}",
            "BUILD_URL": self.root_url + build.url_path,
            "JOB_NAME": build.job.name,
            "JOB_BASE_NAME": build.job.name,
            "JOB_URL": job_url,
            "JENKINS_URL": self.root_url,
            "NODE_NAME": "built-in" if computer.builtin else computer.name,
            "NODE_LABELS": " ".join(sorted(computer.labels)),
            "EXECUTOR_NUMBER": str(slot),
            "WORKSPACE": workspace,
        }

    def _workspace(self, computer: Computer, job: Job) -> str:
        return posixpath.join(computer.remote_fs or "", "workspace", job.name)

    async def _run_step(self, computer: Computer, step: StepRequest, sink: StepSink) -> int:
        channel = computer.channel
        if channel is None:
            raise ChannelClosedError
        return await channel.run(step, sink)

    async def _run_freestyle(self, build: Build, computer: Computer, slot: int) -> None:
        result = "SUCCESS"
        try:
            workspace = self._workspace(computer, build.job)
            if computer.builtin:
                build.log(f"Building on the built-in node in workspace {workspace}\n")
            else:
                shown = f" ({computer.label_string})" if computer.label_string.strip() else ""
                build.log(f"Building remotely on {computer.name}{shown} in workspace {workspace}\n")
            env = self._env(build, computer, slot, workspace)
            for command in build.job.config.shells:
                sink = _ConsoleSink(build, f"[{build.job.name}] $ ")
                try:
                    code = await self._run_step(computer, StepRequest(command, env, workspace), sink)
                except ChannelClosedError:
                    build.log("FATAL: command execution failed\njava.nio.channels.ClosedChannelException\n")
                    code = -1
                if code != 0:
                    build.log("Build step 'Execute shell' marked build as failure\n")
                    result = "FAILURE"
                    break
        except asyncio.CancelledError:
            result = "ABORTED"
        except Exception:  # a broken controller must not leave a build running forever
            log.exception("freestyle build %s #%d crashed", build.job.name, build.number)
            result = "FAILURE"
        finally:
            self._release(computer, slot)
            self._finish(build, result)

    async def _run_pipeline(self, build: Build) -> None:
        result = "SUCCESS"
        try:
            statements = parse_pipeline(build.job.config.script)
        except PipelineSyntaxError as exc:
            build.log(f"org.codehaus.groovy.control.MultipleCompilationErrorsException: {exc}\n")
            self._finish(build, "FAILURE")
            return
        build.log("[Pipeline] Start of Pipeline\n")
        try:
            await self._statements(build, statements, stage=None, where=None)
        except _StepError as exc:
            result = exc.result
            build.log(f"[Pipeline] End of Pipeline\n{exc}\n")
        except asyncio.CancelledError:
            result = "ABORTED"
            build.log("[Pipeline] End of Pipeline\n")
        except Exception:
            log.exception("pipeline %s #%d crashed", build.job.name, build.number)
            result = "FAILURE"
        else:
            build.log("[Pipeline] End of Pipeline\n")
        finally:
            self._finish(build, result)

    async def _statements(
        self,
        build: Build,
        statements: list[Statement],
        stage: str | None,
        where: tuple[Computer, int, str] | None,
    ) -> None:
        for st in statements:
            if isinstance(st, Echo):
                build.log(f"[Pipeline] echo\n{st.text}\n")
            elif isinstance(st, Stage):
                build.log(f"[Pipeline] stage\n[Pipeline] {{ ({st.name})\n")
                try:
                    await self._statements(build, st.body, st.name, where)
                finally:
                    build.log("[Pipeline] }\n[Pipeline] // stage\n")
            elif isinstance(st, NodeStep):
                await self._node_block(build, st, stage)
            elif isinstance(st, Sh):
                build.log("[Pipeline] sh\n")
                if where is None:
                    raise _StepError(
                        "org.jenkinsci.plugins.workflow.steps.MissingContextVariableException: "
                        "Required context class hudson.FilePath is missing\nPerhaps you forgot to surround "
                        "the sh step with a step that provides this, such as: node"
                    )
                computer, slot, workspace = where
                env = self._env(build, computer, slot, workspace)
                if stage:
                    env["STAGE_NAME"] = stage
                try:
                    step = StepRequest(st.script, env, workspace)
                    code = await self._run_step(computer, step, _ConsoleSink(build))
                except ChannelClosedError:
                    raise _StepError(
                        f"Cannot contact {computer.name}: java.nio.channels.ClosedChannelException"
                    ) from None
                if code != 0:
                    raise _StepError(f"ERROR: script returned exit code {code}")

    async def _node_block(self, build: Build, st: NodeStep, stage: str | None) -> None:
        build.log("[Pipeline] node\n")
        try:
            label = labels.parse(st.label) if st.label else None
        except LabelSyntaxError as exc:
            raise _StepError(f"java.lang.IllegalArgumentException: {exc}") from None
        item = QueueItem(self.next_id, Placeholder(build, stage), label, "buildable", user=None)
        self.next_id += 1
        item.buildable_since = item.in_queue_since
        item.assigned = asyncio.get_running_loop().create_future()
        self.items.append(item)
        self.maintain()
        if not item.assigned.done():
            build.log(f"Still waiting to schedule task\n{self.why(item)}\n")
        try:
            computer, slot = await item.assigned
        except QueueCancelledError:
            raise _StepError("Queue task was cancelled", "ABORTED") from None
        except asyncio.CancelledError:
            if item.state != "left":
                self.cancel(item.id)
            raise
        try:
            workspace = self._workspace(computer, build.job)
            build.built_on = computer.name
            build.log(f"Running on {computer.display_name} in {workspace}\n[Pipeline] {{\n")
            await self._statements(build, st.body, stage, (computer, slot, workspace))
            build.log("[Pipeline] }\n[Pipeline] // node\n")
        finally:
            self._release(computer, slot)

    def stop_build(self, build: Build, user: str) -> None:
        """``Run.doStop``: abort a running build (its steps are killed on the agent)."""
        if build.result is None and build.task is not None and not build.task.done():
            build.log(f"Aborted by {user}\n")
            build.task.cancel()

    async def shutdown(self) -> None:
        builds = [b for job in self.jobs.values() for b in job.builds.values()]
        tasks = [b.task for b in builds if b.task is not None and not b.task.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task


class _StepError(Exception):
    def __init__(self, message: str, result: str = "FAILURE") -> None:
        super().__init__(message)
        self.result = result


class _ConsoleSink:
    def __init__(self, build: Build, command_prefix: str | None = None) -> None:
        self.build = build
        self.command_prefix = command_prefix

    def started(self, workspace: str, command: str) -> None:
        if self.command_prefix is not None:
            self.build.log(f"{self.command_prefix}{command}\n")

    def output(self, text: str) -> None:
        self.build.log(text)
