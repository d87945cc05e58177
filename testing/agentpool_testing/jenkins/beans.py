"""The beans ``/api/json`` writes for the controller's objects, with Jenkins' visibilities.

Each method mirrors one Jenkins class's ``@Exported`` properties (name, visibility,
inlining) so that :mod:`.export` can prune them by ``depth`` and ``tree=`` exactly as
Stapler does; values that would make the object graph cyclic are computed lazily.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import quote

from agentpool import labels
from agentpool.labels import Expr, LabelSyntaxError

from .config import FREESTYLE
from .export import Bean, Value
from .model import (
    COLORS,
    DUMB_SLAVE,
    ITEM_KINDS,
    JNLP_LAUNCHER,
    LABEL_CLASS,
    MASTER_COMPUTER,
    PLACEHOLDER_EXECUTABLE,
    PLACEHOLDER_TASK,
    RUN_CLASS,
    SLAVE_COMPUTER,
    Build,
    Computer,
    Jenkins,
    Job,
    Placeholder,
    QueueItem,
)


def label_bean_class(expr: Expr) -> str:
    if isinstance(expr, labels.Atom):
        return LABEL_CLASS["Atom"]
    if isinstance(expr, labels.Paren):
        return LABEL_CLASS["Paren"]
    if isinstance(expr, labels.Not):
        return LABEL_CLASS["Not"]
    assert isinstance(expr, labels.Binary)
    return LABEL_CLASS[expr.op]


# Queue.Item is @ExportedBean(defaultVisibility = 999)
ITEM_VISIBILITY = 999


class Exporter:
    """Builds the exported beans of :class:`Jenkins` objects (what ``/api/json`` writes)."""

    def __init__(self, jenkins: Jenkins) -> None:
        self.j = jenkins

    @property
    def root(self) -> str:
        return self.j.root_url

    def causes(self, user: str | None) -> list[Value]:
        if user is None:
            return []
        cause = Bean("hudson.model.Cause$UserIdCause")
        cause.add("shortDescription", f"Started by user {user}", 3)
        cause.add("userId", user, 3).add("userName", user, 3)
        return [Bean("hudson.model.CauseAction").add("causes", [cause], 2)]

    def run_ref(self, build: Build) -> Bean:
        return self.run(build)

    def run(self, build: Build) -> Bean:
        job = build.job
        b = Bean(RUN_CLASS[job.kind])
        b.add("actions", self.causes(build.user))
        b.add("artifacts", []).add("building", build.result is None).add("description", None)
        b.add("displayName", f"#{build.number}")
        running = build.result is None
        duration = 0 if running else build.duration
        b.add("duration", duration).add("estimatedDuration", job.estimated_duration())
        b.add("executor", Bean(None) if running else None)
        b.add("fullDisplayName", f"{job.name} #{build.number}").add("id", str(build.number))
        b.add("keepLog", False).add("number", build.number, 2).add("queueId", build.queue_id)
        b.add("result", build.result).add("timestamp", build.timestamp)
        b.add("url", self.root + build.url_path, 2)
        if job.kind == FREESTYLE:
            b.add("builtOn", build.built_on)
            b.add("changeSet", Bean("hudson.scm.EmptyChangeLogSet").add("items", []).add("kind", None))
            b.add("culprits", [])
        else:
            b.add("changeSets", []).add("culprits", []).add("inProgress", running)
            prev = job.builds.get(build.number - 1)
            nxt = job.builds.get(build.number + 1)
            b.add("nextBuild", self.run_short(nxt) if nxt else None)
            b.add("previousBuild", self.run_short(prev) if prev else None)
        return b

    def run_short(self, build: Build) -> Bean:
        b = Bean(RUN_CLASS[build.job.kind])
        return b.add("number", build.number, 2).add("url", self.root + build.url_path, 2)

    def color(self, job: Job) -> str:
        if job.config.disabled:
            return "disabled"
        done = [b for b in job.builds.values() if b.result is not None]
        base = "notbuilt"
        if done:
            base = COLORS[done[-1].result or ""]
        return base + "_anime" if job.running() else base

    def job(self, job: Job) -> Bean:
        j = self.j
        url = self.root + f"job/{quote(job.name)}/"
        builds = list(reversed(job.builds.values()))
        completed = [b for b in builds if b.result is not None]

        def first(pred: Callable[[Build], bool]) -> Value:
            found = next((b for b in completed if pred(b)), None)
            return self.run_short(found) if found else None

        b = Bean(job.kind)
        b.add("actions", [])
        b.add("description", job.config.description).add("displayName", job.name)
        b.add("displayNameOrNull", None).add("fullDisplayName", job.name).add("fullName", job.name)
        b.add("name", job.name, 2).add("url", url, 2)
        b.add("buildable", not job.config.disabled)
        b.add("builds", [self.run_short(x) for x in builds[:100]])
        b.add("allBuilds", [self.run_short(x) for x in builds], -2)
        b.add("color", self.color(job), 2)
        b.add("firstBuild", self.run_short(builds[-1]) if builds else None)
        b.add("healthReport", [])
        queued = j.active_item(job)
        b.add("inQueue", queued is not None).add("keepDependencies", False)
        b.add("lastBuild", self.run_short(builds[0]) if builds else None)
        b.add("lastCompletedBuild", first(lambda x: True))
        b.add("lastFailedBuild", first(lambda x: x.result == "FAILURE"))
        b.add("lastStableBuild", first(lambda x: x.result == "SUCCESS"))
        b.add("lastSuccessfulBuild", first(lambda x: x.result == "SUCCESS"))
        b.add("lastUnstableBuild", None)
        b.add("lastUnsuccessfulBuild", first(lambda x: x.result != "SUCCESS"))
        b.add("nextBuildNumber", job.next_build_number).add("property", [])
        b.add("queueItem", (lambda: self.item(queued)) if queued else None)
        b.add("concurrentBuild", job.config.concurrent)
        if job.kind == FREESTYLE:
            b.add("disabled", job.config.disabled).add("downstreamProjects", [])
            b.add("labelExpression", None if job.config.can_roam else job.config.assigned_node)
            b.add("scm", Bean("hudson.scm.NullSCM")).add("upstreamProjects", [])
        else:
            b.add("disabled", job.config.disabled).add("resumeBlocked", False)
        return b

    def task(self, task: Job | Placeholder) -> Bean:
        if isinstance(task, Job):
            return self.job(task)
        name = task.name
        b = Bean(PLACEHOLDER_TASK)
        return b.add("fullDisplayName", name).add("name", name).add("url", task.run.url_path)

    def item(self, item: QueueItem) -> Bean:
        """``Queue.Item`` is ``@ExportedBean(defaultVisibility = 999)``: its own fields show at
        any nesting (a job's ``queueItem`` at depth 0); ``actions`` (from ``Actionable``) do not."""
        v = ITEM_VISIBILITY
        b = Bean(f"hudson.model.Queue${ITEM_KINDS[item.state]}Item")
        b.add("actions", self.causes(item.user))
        b.add("blocked", item.state == "blocked", v).add("buildable", item.state == "buildable", v)
        b.add("id", item.id, v).add("inQueueSince", item.in_queue_since, v).add("params", "", v)
        b.add("stuck", self.j.stuck(item), v).add("task", lambda: self.task(item.task), v)
        b.add("url", f"queue/item/{item.id}/", v).add("why", self.j.why(item), v)
        if item.state == "waiting":
            b.add("timestamp", item.due, v)
        elif item.state in ("blocked", "buildable"):
            b.add("buildableStartMilliseconds", item.buildable_since, v)
            if item.state == "buildable":
                b.add("pending", False, v)
        else:
            b.add("cancelled", item.cancelled, v)
            executable: Value = None
            if item.executable is not None:
                if isinstance(item.task, Placeholder):
                    executable = self.placeholder_executable(item.executable)
                else:
                    executable = self.run(item.executable)
            b.add("executable", executable, v)
        return b

    def queue(self, visible: Callable[[QueueItem], bool] = lambda item: True) -> Bean:
        """``Queue.getItems``: only the items ``visible`` to the caller (Job/Read on their job)."""
        b = Bean("hudson.model.Queue").add("discoverableItems", [])
        items: list[Value] = [self.item(i) for i in self.j.queue_order() if visible(i)]
        return b.add("items", items, inline=True)

    def placeholder_executable(self, run: Build) -> Bean:
        """What runs a Pipeline ``node {}`` block: it answers for its run (number, names, times)."""
        job = run.job
        b = Bean(PLACEHOLDER_EXECUTABLE)
        b.add("displayName", f"#{run.number}").add("estimatedDuration", job.estimated_duration())
        b.add("fullDisplayName", f"{job.name} #{run.number}").add("number", run.number, 2)
        return b.add("timestamp", run.timestamp).add("url", self.root + run.url_path, 2)

    def executor(self, computer: Computer, index: int) -> Bean:
        work = computer.executors[index] if index < len(computer.executors) else None
        current: Value = None
        progress = -1
        if work is not None:
            current = self.placeholder_executable(work.run) if work.placeholder else self.run(work.run)
            estimate = work.run.job.estimated_duration()
            if estimate > 0:
                progress = min(99, int((time.monotonic() - work.started) * 1000 * 100 / estimate))
        b = Bean(None).add("currentExecutable", current).add("idle", work is None)
        return b.add("likelyStuck", False).add("number", index).add("progress", progress)

    def computer(self, c: Computer) -> Bean:
        b = Bean(MASTER_COMPUTER if c.builtin else SLAVE_COMPUTER)
        b.add("actions", [])
        b.add("assignedLabels", self.assigned_labels(c.labels))
        b.add("description", c.description).add("displayName", c.display_name)
        b.add("executors", [self.executor(c, i) for i in range(len(c.executors))])
        if c.temp_offline:
            icon = "computer-disconnected"
        elif c.offline:
            icon = "computer-x"
        else:
            icon = "computer"
        b.add("icon", f"symbol-{icon}").add("iconClassName", f"icon-{icon}")
        b.add("idle", c.count_busy() == 0)
        jnlp = not c.builtin and c.launcher == JNLP_LAUNCHER
        b.add("jnlpAgent", jnlp).add("launchSupported", c.builtin or not jnlp)
        b.add("loadStatistics", Bean("hudson.model.Label$1")).add("manualLaunchAllowed", True)
        b.add("monitorData", {}).add("numExecutors", c.num_executors).add("offline", c.offline)
        b.add("offlineCause", Bean(c.offline_cause) if c.offline_cause else None)
        b.add("offlineCauseReason", c.offline_message).add("oneOffExecutors", [])
        b.add("temporarilyOffline", c.temp_offline)
        if not c.builtin:
            b.add("absoluteRemotePath", c.remote_fs if c.connected else None)
        return b

    def computer_set(self) -> Bean:
        computers = self.j.computers()
        online = [c for c in computers if not c.offline]
        b = Bean("hudson.model.ComputerSet")
        b.add("busyExecutors", sum(c.count_busy() for c in online))
        b.add("computer", [self.computer(c) for c in computers], inline=True)
        b.add("displayName", "Nodes").add("totalExecutors", sum(c.num_executors for c in online))
        return b

    def assigned_labels(self, names: frozenset[str]) -> list[Value]:
        """``Node.getAssignedLabels``: ``{name}`` at depth 0, whole label objects deeper; the
        declared type is ``LabelAtom``, so no ``_class``."""
        return [self.label_bean(labels.Atom(name), cls=None) for name in sorted(names)]

    def label(self, text: str) -> Bean:
        try:
            expr: Expr = labels.parse(text)
        except LabelSyntaxError:
            expr = labels.Atom(text.strip())
        return self.label_bean(expr, cls=label_bean_class(expr))

    def label_bean(self, expr: Expr, cls: str | None) -> Bean:
        """A ``Label``'s exported properties; computed only when written (lazy values)."""

        def nodes() -> list[Computer]:
            return [c for c in self.j.computers() if expr.matches(c.labels)]

        def online() -> list[Computer]:
            return [c for c in nodes() if not c.offline]

        def node_beans() -> Value:
            return [
                Bean("hudson.model.Hudson" if c.builtin else DUMB_SLAVE).add("nodeName", c.name, 999)
                for c in nodes()
            ]

        b = Bean(cls).add("actions", [])
        b.add("busyExecutors", lambda: sum(c.count_busy() for c in online())).add("clouds", [])
        b.add("description", None)
        b.add("idleExecutors", lambda: sum(c.count_idle() for c in online()))
        b.add("loadStatistics", Bean("hudson.model.Label$1")).add("name", str(expr), 2)
        b.add("nodes", node_beans).add("offline", lambda: not online()).add("tiedJobs", [])
        b.add("totalExecutors", lambda: sum(c.num_executors for c in online())).add("propertiesList", [])
        return b

    def hudson(self, may_read_job: Callable[[str], bool] = lambda name: True) -> Bean:
        j = self.j
        view = Bean("hudson.model.AllView").add("name", "all", 2).add("url", self.root, 2)
        b = Bean("hudson.model.Hudson")
        b.add("assignedLabels", self.assigned_labels(j.builtin.labels))
        b.add("mode", j.builtin.mode).add("nodeDescription", j.builtin.description).add("nodeName", "")
        b.add("numExecutors", j.builtin.num_executors).add("description", None)
        readable = [job for job in sorted(j.jobs.values(), key=lambda x: x.name) if may_read_job(job.name)]
        b.add("jobs", [self.job(job) for job in readable])
        b.add("overallLoad", Bean(None)).add("primaryView", view)
        b.add("quietDownReason", None).add("quietingDown", j.quieting_down).add("slaveAgentPort", -1)
        b.add("unlabeledLoad", Bean("jenkins.model.UnlabeledLoadStatistics"))
        b.add("url", self.root).add("useCrumbs", True).add("useSecurity", True).add("views", [view])
        return b
