"""In-memory fakes of the backend and of Jenkins, with failure switches and call counters.

In the spirit of nodepool's fake cloud: they keep just enough state (nodes, agents,
volumes) to check what an action leaves behind, count every call, and fail on demand:
``fail("create_volume")`` makes the next call raise an ExternalError of the given kind
(or any exception given), ``times`` calls in a row. They implement
:class:`agentpool.backend.Backend` and :class:`agentpool.backend.JenkinsPort` structurally.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from agentpool.backend import AgentSpec
from agentpool.errors import DockerError, ErrorKind, JenkinsError
from agentpool.model import (
    LABEL_AGENT,
    LABEL_POOL,
    AgentResource,
    Executor,
    HostView,
    Node,
    QueueItem,
    ResourceState,
    Volume,
)


class Switches:
    """Failure switches, slow steps and call counters shared by both fakes.

    ``hold("start_agent")`` makes every call of the method block until the returned event is
    set (a slow step the test releases when it wants); ``running`` counts calls inside it.
    """

    def __init__(self, error: type[DockerError] | type[JenkinsError]) -> None:
        self._error = error
        self._faults: dict[str, list[BaseException]] = {}
        self._holds: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.running: Counter[str] = Counter()
        self.most_running: Counter[str] = Counter()

    def hold(self, method: str) -> threading.Event:
        event = self._holds[method] = threading.Event()
        return event

    def fail(
        self,
        method: str,
        exc: BaseException | None = None,
        *,
        kind: ErrorKind = ErrorKind.SERVER_ERROR,
        times: int = 1,
    ) -> None:
        fault = exc if exc is not None else self._error(kind, f"{method}: injected failure")
        self._faults.setdefault(method, []).extend([fault] * times)

    def _enter(self, method: str) -> None:
        with self._lock:
            self.calls[method] += 1
            pending = self._faults.get(method)
            fault = pending.pop(0) if pending else None
            hold = self._holds.get(method)
            self.running[method] += 1
            self.most_running[method] = max(self.most_running[method], self.running[method])
        try:
            if hold is not None and not hold.wait(10.0):
                raise AssertionError(f"{method} held for 10 s: the test never released it")
        finally:
            with self._lock:
                self.running[method] -= 1
        if fault is not None:
            raise fault


@dataclass
class FakeAgent:
    id: str
    spec: AgentSpec
    running: bool = True


class FakeBackend(Switches):
    """One in-memory host: agents by name and volumes by name."""

    def __init__(self, name: str = "local") -> None:
        super().__init__(DockerError)
        self._name = name
        self.agents: dict[str, FakeAgent] = {}
        self.volumes: dict[str, dict[str, str]] = {}
        self.closed = 0
        self._ids = 0
        self.stop_timeouts: list[float] = []
        self.completed_with = ""  # the secret of the last complete_agent call

    @property
    def name(self) -> str:
        return self._name

    def observe(self, instance: str, /) -> HostView:
        self._enter("observe")
        with self._lock:
            agents, volumes = list(self.agents.values()), dict(self.volumes)
        containers = tuple(
            AgentResource(
                self._name,
                a.id,
                a.spec.name,
                a.spec.name,
                a.spec.pool,
                ResourceState.RUNNING if a.running else ResourceState.EXITED,
                created=0.0,
                volume=a.spec.volume,
            )
            for a in agents
        )
        mounted = {a.spec.volume for a in agents}
        views = tuple(
            Volume(
                self._name,
                name,
                labels.get(LABEL_POOL, ""),
                labels.get(LABEL_AGENT, ""),
                free=name not in mounted,
                created=0.0,
                last_used=0.0,
            )
            for name, labels in volumes.items()
        )
        return HostView(name=self._name, reachable=True, containers=containers, volumes=views)

    def ping(self) -> None:
        self._enter("ping")

    def image_present(self, image: str, /) -> bool:
        self._enter("image_present")
        return True

    def logs_tail(self, agent: str, lines: int = 20, /) -> str:
        self.calls["logs_tail"] += 1  # never raises, like the real one
        return f"last lines of {agent}" if self._find(agent) else ""

    def create_volume(self, name: str, labels: Mapping[str, str], /) -> None:
        self._enter("create_volume")
        if name in self.volumes:
            raise DockerError(ErrorKind.CONFLICT, f"volume {name} exists")
        self.volumes[name] = dict(labels)

    def remove_volume(self, name: str, /) -> None:
        self._enter("remove_volume")
        self.volumes.pop(name, None)

    def volume_in_use(self, name: str, /) -> bool:
        self._enter("volume_in_use")
        return any(a.spec.volume == name for a in self.agents.values())

    def agent_volume(self, agent: str, /) -> str | None:
        self._enter("agent_volume")
        found = self._find(agent)
        return found.spec.volume if found else None

    def start_agent(self, spec: AgentSpec, /) -> str:
        self._enter("start_agent")
        if spec.name in self.agents:
            raise DockerError(ErrorKind.CONFLICT, f"container {spec.name} exists")
        self._ids += 1
        agent = FakeAgent(id=f"id{self._ids:04d}", spec=spec)
        self.agents[spec.name] = agent
        return agent.id

    def complete_agent(self, container: str, secret: str, /) -> None:
        self._enter("complete_agent")
        found = self._find(container)
        if found is None:
            raise DockerError(ErrorKind.NOT_FOUND, f"container {container}: not found")
        found.running = True
        self.completed_with = secret

    def remove_agent(self, agent: str, stop_timeout: float = 10.0, /) -> None:
        self._enter("remove_agent")
        self.stop_timeouts.append(stop_timeout)
        found = self._find(agent)
        if found is not None:
            del self.agents[found.spec.name]

    def close(self) -> None:
        self.closed += 1

    def _find(self, agent: str) -> FakeAgent | None:
        return self.agents.get(agent) or next((a for a in self.agents.values() if a.id == agent), None)


@dataclass
class FakeNode:
    name: str
    labels: list[str]
    executors: int
    temporarily_offline: bool = False
    busy: int = 0  # executors running a build
    connected: bool = True
    history: list[str] = field(default_factory=list)  # "offline" / "online" toggles, in order
    description: str = ""


class FakeJenkins(Switches):
    """Nodes by name; an agent's secret is derived from its name."""

    def __init__(self) -> None:
        super().__init__(JenkinsError)
        self.nodes: dict[str, FakeNode] = {}
        self.queue: list[QueueItem] = []  # what read_queue answers
        # nodes an admin (or a monitor) brings back online right after they are taken offline
        self.racing: set[str] = set()

    def read_nodes(self) -> tuple[Node, ...]:
        self._enter("read_nodes")
        return tuple(self._node(n) for n in self.nodes.values())

    def read_queue(self, nodes: tuple[Node, ...], /) -> tuple[QueueItem, ...]:
        self._enter("read_queue")
        return tuple(self.queue)

    def read_node(self, name: str, /) -> Node:
        self._enter("read_node")
        return self._node(self._get(name))

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
        self._enter("create_node")
        if name in self.nodes:
            raise JenkinsError(ErrorKind.CONFLICT, f"create node {name}: already exists")
        self.nodes[name] = FakeNode(name, labels, executors, description=description)

    def agent_secret(self, name: str, /) -> str:
        self._enter("agent_secret")
        return f"secret-of-{self._get(name).name}"

    def set_temporarily_offline(self, name: str, offline: bool, message: str = "", /) -> Node:
        self._enter("set_temporarily_offline")
        node = self._get(name)
        if node.temporarily_offline != offline:
            node.temporarily_offline = offline
            node.history.append("offline" if offline else "online")
        if offline and name in self.racing:
            node.temporarily_offline = False
            node.history.append("online")
        return self._node(node)

    def delete_node(self, name: str, /) -> None:
        self._enter("delete_node")
        self.nodes.pop(name, None)

    def _get(self, name: str) -> FakeNode:
        node = self.nodes.get(name)
        if node is None:
            raise JenkinsError(ErrorKind.NOT_FOUND, f"node {name}: not found")
        return node

    @staticmethod
    def _node(n: FakeNode) -> Node:
        executors = tuple(Executor(idle=i >= n.busy) for i in range(n.executors))
        offline = n.temporarily_offline or not n.connected
        labels = frozenset([*n.labels, n.name])
        return Node(n.name, labels, offline, n.temporarily_offline, "", executors, n.description)
