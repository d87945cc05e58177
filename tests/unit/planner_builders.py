"""Small builders of observations, configs and memories for the planner's tests (no Docker, no HTTP)."""

from __future__ import annotations

from typing import Any

from agentpool.config import Config
from agentpool.model import (
    AgentMemory,
    Container,
    ContainerState,
    Executor,
    HostView,
    ItemKind,
    Memory,
    Node,
    Observed,
    PoolMemory,
    QueueItem,
    Volume,
)
from agentpool.planner.ownership import node_marker

INSTANCE = "ap"
T0 = 1_000_000.0
# Memory() is daemon "" at boot "": our nodes carry this marker in their description.
OURS = node_marker(INSTANCE, "")


def config(*pools: dict[str, Any], hosts: list[dict[str, Any]] | None = None, **top: Any) -> Config:
    """A config with the given pools (defaults: one pool `dind` for docker+linux)."""
    if not pools:
        pools = ({},)
    data: dict[str, Any] = {
        "jenkins": {"url": "http://j:8080/", "user": "u", "token": "t"},
        "instance": INSTANCE,
        "docker_hosts": hosts or [{"name": "h1", "url": "unix:///x", "max_agents": 20}],
        "pools": [
            {"name": "dind", "labels": ["docker", "linux"], "image": "img", "idle_timeout": 60, **p}
            for p in pools
        ],
        **top,
    }
    return Config.model_validate(data)


def item(
    id: int, label: str | None = "docker&&linux", kind: ItemKind = ItemKind.BUILDABLE, since: float = 0
) -> QueueItem:
    return QueueItem(
        id=id,
        kind=kind,
        task_name=f"job-{id}",
        why="",
        in_queue_since=T0 - 100 + since + id * 0.001,
        label=label,
    )


def items(n: int, label: str | None = "docker&&linux", start: int = 1) -> list[QueueItem]:
    return [item(i, label) for i in range(start, start + n)]


def node(
    name: str,
    labels: tuple[str, ...] = ("docker", "linux"),
    *,
    online: bool = True,
    busy: int = 0,
    executors: int = 1,
    temp_offline: bool = False,
    description: str | None = None,
) -> Node:
    """A node; one named like our agents carries our marker unless ``description`` says otherwise."""
    execs = tuple(
        Executor(idle=i >= busy, build_url=None if i >= busy else f"job/x/{i}/") for i in range(executors)
    )
    return Node(
        name=name,
        labels=frozenset({name, *labels}),
        offline=not online or temp_offline,
        temporarily_offline=temp_offline,
        offline_reason="",
        executors=execs,
        description=(OURS if name.startswith(f"{INSTANCE}-") else "") if description is None else description,
    )


def agent_name(pool: str, n: int) -> str:
    return f"{INSTANCE}-{pool}-{n:06x}"


def container(
    agent: str,
    pool: str = "dind",
    host: str = "h1",
    state: ContainerState = ContainerState.RUNNING,
    created: float = T0 - 3600,
) -> Container:
    return Container(
        host=host, id=f"id-{agent}", name=agent, agent=agent, pool=pool, state=state, created=created
    )


def volume(
    name: str,
    agent: str = "",
    pool: str = "dind",
    host: str = "h1",
    free: bool = False,
    created: float = T0 - 3600,
    last_used: float = T0 - 3600,
) -> Volume:
    return Volume(
        host=host, name=name, pool=pool, agent=agent, free=free, created=created, last_used=last_used
    )


def observed(
    queue: list[QueueItem] | None = None,
    nodes: list[Node] | None = None,
    containers: list[Container] | None = None,
    volumes: list[Volume] | None = None,
    *,
    hosts: tuple[str, ...] = ("h1",),
    unreachable: tuple[str, ...] = (),
    jenkins_down: bool = False,
) -> Observed:
    views = tuple(
        HostView(
            name=h,
            reachable=h not in unreachable,
            containers=tuple(c for c in containers or () if c.host == h) if h not in unreachable else (),
            volumes=tuple(v for v in volumes or () if v.host == h) if h not in unreachable else (),
        )
        for h in hosts
    )
    if jenkins_down:
        return Observed(queue=None, nodes=None, hosts=views, jenkins_error="connection refused")
    return Observed(queue=tuple(queue or ()), nodes=tuple(nodes or ()), hosts=views)


def memory(*agents: AgentMemory, pools: dict[str, PoolMemory] | None = None) -> Memory:
    return Memory(agents={a.name: a for a in agents}, pools=dict(pools or {}))


def known(
    name: str,
    pool: str = "dind",
    host: str = "h1",
    *,
    launched_at: float = T0 - 3600,
    online_at: float | None = T0 - 3500,
    idle_since: float | None = None,
    builds_started: int = 0,
    volume: str = "",
) -> AgentMemory:
    return AgentMemory(
        name=name,
        pool=pool,
        host=host,
        launched_at=launched_at,
        online_at=online_at,
        idle_since=idle_since,
        builds_started=builds_started,
        volume=volume or f"{name}-docker",
    )
