"""One full pass at scale: read Jenkins' answers, read the engines' answers, plan.

The scenario of ``planner_bench.py`` (10,000 queued items, 1,000 agents of ours plus 50 static
nodes, 20 pools, 5 Docker hosts) is turned into the answers real Jenkins and Docker send, in
their shapes: ``/computer/api/json`` and ``/queue/api/json`` with agentpool's ``tree=``
(freestyle items export ``labelExpression``, a Pipeline third only ``why``), and the engines'
``GET /containers/json`` and ``GET /volumes`` lists. The Jenkins answers are served over real
HTTP on loopback to the real ``JenkinsAdapter`` (python-jenkins, JSON decoding, parsing); each
engine's answer is decoded and parsed by the real ``DockerHost.observe`` with its socket
replaced by the pre-serialised bytes. Then ``planner.plan``; all of it with the cyclic
garbage collector paused, as ``Engine.run_pass`` does (``--collector`` leaves it running),
and with the previous pass' answers and plan still alive, as the daemon keeps its last report
until the pass ends; freeing them is reported on its own line.
Target: ≤ 150 ms.
Run: python3 bench/full_pass.py [--runs N] [--collector]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from planner_bench import NOW, scenario

from agentpool.adapters.docker import DOCKER_DIR, DockerHost
from agentpool.adapters.jenkins import JenkinsAdapter
from agentpool.gcpause import collector_paused
from agentpool.model import (
    LABEL_AGENT,
    LABEL_INSTANCE,
    LABEL_POOL,
    ItemKind,
    Node,
    Observed,
    QueueItem,
)
from agentpool.planner import plan

_CLASSES = {
    ItemKind.BUILDABLE: "hudson.model.Queue$BuildableItem",
    ItemKind.BLOCKED: "hudson.model.Queue$BlockedItem",
    ItemKind.WAITING: "hudson.model.Queue$WaitingItem",
    ItemKind.PENDING: "hudson.model.Queue$BuildableItem",
}
PLACEHOLDER = "org.jenkinsci.plugins.workflow.support.steps.ExecutorStepExecution$PlaceholderTask"


def computer_json(nodes: tuple[Node, ...]) -> bytes:
    computers: list[dict[str, Any]] = [
        {
            "_class": "hudson.model.Hudson$MasterComputer",
            "displayName": "Built-In Node",
            "offline": False,
            "temporarilyOffline": False,
            "offlineCauseReason": "",
            "assignedLabels": [{"name": "built-in"}],
            "executors": [{"currentExecutable": None, "idle": True}] * 2,
            "oneOffExecutors": [],
        }
    ]
    for n in sorted(nodes, key=lambda n: n.name):
        computers.append(
            {
                "_class": "hudson.slaves.SlaveComputer",
                "displayName": n.name,
                "offline": n.offline,
                "temporarilyOffline": n.temporarily_offline,
                "offlineCauseReason": n.offline_reason,
                "assignedLabels": [{"name": label} for label in sorted(n.labels)],
                "executors": [
                    {
                        "currentExecutable": None
                        if e.idle
                        else {
                            "_class": "hudson.model.FreeStyleBuild",
                            "url": f"http://j:8080/job/{n.name}/1/",
                        },
                        "idle": e.idle,
                    }
                    for e in n.executors
                ],
                "oneOffExecutors": [],
            }
        )
    return json.dumps({"_class": "hudson.model.ComputerSet", "computer": computers}).encode()


def queue_json(queue: tuple[QueueItem, ...]) -> bytes:
    items = []
    for q in sorted(queue, key=lambda q: -q.id):
        pipeline = q.id % 3 == 0 and q.label
        label = q.label or ""
        if q.kind is ItemKind.BUILDABLE:
            why = (
                f"There are no nodes with the label ‘{label}’"
                if label
                else "Waiting for next available executor"
            )
        elif q.kind is ItemKind.BLOCKED:
            why = "Build #7 is already in progress (ETA: 1 min)"
        else:
            why = "In the quiet period. Expires in 4.9 sec"
        task: dict[str, Any]
        if pipeline:
            name = f"job-{q.id}"
            task = {"_class": PLACEHOLDER, "name": f"part of {name} #3", "url": f"job/{name}/3/"}
            task["fullDisplayName"] = f"{name} #3 (build)"
        else:
            task = {
                "_class": "hudson.model.FreeStyleProject",
                "name": q.task_name,
                "url": f"http://j:8080/job/{q.task_name}/",
                "labelExpression": label or None,
            }
        items.append(
            {
                "_class": _CLASSES[q.kind],
                "id": q.id,
                "why": why,
                "inQueueSince": int(q.in_queue_since * 1000),
                "buildable": q.kind is ItemKind.BUILDABLE,
                "blocked": q.kind is ItemKind.BLOCKED,
                "pending": False,
                "stuck": False,
                "task": task,
            }
        )
    return json.dumps({"_class": "hudson.model.Queue", "discoverableItems": [], "items": items}).encode()


def engine_json(observed: Observed) -> dict[str, tuple[bytes, bytes]]:
    answers = {}
    for view in observed.hosts:
        containers = [
            {
                "Id": f"{c.id:0<64}",
                "Names": [f"/{c.name}"],
                "Image": "agentpool/dind-agent:latest",
                "Command": "/usr/local/bin/entrypoint.sh",
                "Created": int(c.created),
                "State": c.state.value,
                "Status": "Up 10 minutes",
                "Labels": {LABEL_INSTANCE: "ap", LABEL_POOL: c.pool, LABEL_AGENT: c.agent},
                "Mounts": [
                    {
                        "Type": "volume",
                        "Name": f"{c.name}-docker",
                        "Source": f"/var/lib/docker/volumes/{c.name}-docker/_data",
                        "Destination": DOCKER_DIR,
                        "Driver": "local",
                        "RW": True,
                    }
                ],
            }
            for c in view.containers
        ]
        created = datetime.fromtimestamp(NOW - 600, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        volumes = {
            "Volumes": [
                {
                    "Name": v.name,
                    "Driver": "local",
                    "Mountpoint": f"/var/lib/docker/volumes/{v.name}/_data",
                    "CreatedAt": created,
                    "Labels": {LABEL_INSTANCE: "ap", LABEL_POOL: v.pool, LABEL_AGENT: v.agent},
                    "Scope": "local",
                }
                for v in view.volumes
            ],
            "Warnings": None,
        }
        answers[view.name] = (json.dumps(containers).encode(), json.dumps(volumes).encode())
    return answers


class _Api:
    """The docker SDK's low-level calls observe makes, answering with decoded bytes."""

    def __init__(self, containers: bytes, volumes: bytes) -> None:
        self._containers, self._volumes = containers, volumes

    def containers(self, **_: Any) -> Any:
        return json.loads(self._containers)

    def volumes(self, **_: Any) -> Any:
        return json.loads(self._volumes)


class _Client:
    def __init__(self, api: _Api) -> None:
        self.api = api

    def close(self) -> None:
        pass


def serve(nodes: bytes, queue: bytes) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = nodes if self.path.startswith("/computer/api/json") else queue
            if not self.path.startswith(("/computer/api/json", "/queue/api/json")):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json;charset=utf-8")
            self.send_header("X-Jenkins", "2.462.3")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument(
        "--collector",
        action="store_true",
        help="leave the cyclic garbage collector running (the engine pauses it for a pass)",
    )
    args = parser.parse_args()
    observed, config, memory = scenario()
    assert observed.queue is not None and observed.nodes is not None
    nodes_bytes, queue_bytes = computer_json(observed.nodes), queue_json(observed.queue)
    engines = engine_json(observed)
    server = serve(nodes_bytes, queue_bytes)
    jenkins = JenkinsAdapter(f"http://127.0.0.1:{server.server_port}/", "u", "t")
    hosts = []
    for name, (containers, volumes) in engines.items():
        host = DockerHost(name, f"tcp://{name}:2375")
        host._client = _Client(_Api(containers, volumes))  # type: ignore[assignment]
        hosts.append(host)
    print(
        f"answers: nodes {len(nodes_bytes) / 1e6:.1f} MB, queue {len(queue_bytes) / 1e6:.1f} MB, "
        f"engines {sum(len(c) + len(v) for c, v in engines.values()) / 1e6:.1f} MB"
    )
    phases: dict[str, list[float]] = {"jenkins": [], "engines": [], "plan": [], "total": []}
    cpu: list[float] = []
    dropped: list[float] = []

    def one_pass() -> tuple[tuple[Any, ...], tuple[float, float, float, float, float]]:
        t0, c0 = time.perf_counter(), time.process_time()
        with collector_paused() if not args.collector else contextlib.nullcontext():
            nodes = jenkins.read_nodes()
            queue = jenkins.read_queue(nodes)
            t1 = time.perf_counter()
            views = tuple(h.observe("ap") for h in hosts)
            t2 = time.perf_counter()
            result, next_memory = plan(Observed(queue, nodes, views), config, memory, NOW)
            t3, c3 = time.perf_counter(), time.process_time()
        return (nodes, queue, views, result, next_memory), (t1 - t0, t2 - t1, t3 - t2, t3 - t0, c3 - c0)

    # As in the daemon, the previous pass' answers and plan stay alive (its last report) while a
    # pass reads and plans; dropping them is timed on its own ("previous pass dropped").
    previous: tuple[Any, ...] | None = None
    for run in range(args.runs + 1):
        t_drop = time.perf_counter()
        previous = None
        drop = time.perf_counter() - t_drop
        previous, (jenkins_s, engines_s, plan_s, total_s, cpu_s) = one_pass()
        if run == 0:
            continue  # warm-up: the session's connection, the label-parsing cache
        for key, value in (
            ("jenkins", jenkins_s),
            ("engines", engines_s),
            ("plan", plan_s),
            ("total", total_s),
        ):
            phases[key].append(value * 1000)
        cpu.append(cpu_s * 1000)
        if run > 1:
            dropped.append(drop * 1000)
    assert previous is not None
    nodes, queue, _, result, _ = previous
    server.shutdown()
    print(
        f"full pass: {len(queue)} queued items, {len(nodes)} nodes, {len(config.pools)} pools, "
        f"{len(hosts)} hosts; {len(result.actions)} actions, {len(result.unserved)} unserved"
    )
    phases["previous pass dropped"] = dropped
    for key, times in (*phases.items(), ("cpu (total)", cpu)):
        times.sort()
        print(
            f"{key}: median {statistics.median(times):.1f} ms, min {times[0]:.1f} ms, "
            f"max {times[-1]:.1f} ms over {args.runs} runs"
        )


if __name__ == "__main__":
    main()
