"""The interfaces the engine, the executor and ``doctor`` use to reach the outside world.

:class:`Backend` is one place agents run (today a Docker engine:
:class:`agentpool.adapters.docker.DockerHost`); :class:`JenkinsPort` is the part of the
Jenkins adapter the executor and the engine call. Both are structural (``typing.Protocol``):
an implementation only has to have the methods, so the unit tests' in-memory fakes stand in
for the real adapters without inheriting from them, and a second backend is one more class
with these methods. Every method raises :class:`agentpool.errors.ExternalError` on failure;
"not found" on a removal counts as done.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from agentpool.model import HostView, Node, QueueItem


@dataclass(frozen=True)
class AgentSpec:
    """Everything needed to start one agent (the secret travels only in ``env``)."""

    name: str
    pool: str
    image: str
    volume: str  # the agent's storage (its inner /var/lib/docker)
    env: Mapping[str, str]
    # What the agent may do and use, in the config's words: each backend turns them into its
    # own settings (Docker: agentpool.security's host-config keywords, NanoCpus, Memory).
    security: str = "privileged"  # privileged, capabilities or sysbox
    cap_drop: tuple[str, ...] = ()  # with security "capabilities": the capabilities withheld
    cpus: float | None = None
    memory: int | None = None  # bytes
    labels: Mapping[str, str] = field(default_factory=dict)


class Backend(Protocol):
    """One host agents run on, with the resources each agent owns there (its volume)."""

    @property
    def name(self) -> str: ...

    def observe(self, instance: str, /) -> HostView:
        """This instance's agents and volumes; an unreachable host gives ``reachable=False``."""
        ...

    def ping(self) -> None: ...

    def image_present(self, image: str, /) -> bool: ...

    def logs_tail(self, agent: str, lines: int = 20, /) -> str:
        """The last lines an agent printed; "" when it is gone (never raises)."""
        ...

    def create_volume(self, name: str, labels: Mapping[str, str], /) -> None: ...

    def remove_volume(self, name: str, /) -> None: ...

    def volume_in_use(self, name: str, /) -> bool: ...

    def agent_volume(self, agent: str, /) -> str | None:
        """The volume the agent runs on, None when the agent is gone."""
        ...

    def start_agent(self, spec: AgentSpec, /) -> str:
        """Create and start the agent; return its id. One that fails to start is removed."""
        ...

    def complete_agent(self, container: str, secret: str, /) -> None:
        """Hand a created, never started agent container its secret and start it."""
        ...

    def remove_agent(self, agent: str, stop_timeout: float = 10.0, /) -> None:
        """Stop the agent (by name or id; killed after ``stop_timeout`` s), remove it and its anonymous resources."""
        ...

    def close(self) -> None: ...


class JenkinsPort(Protocol):
    """The Jenkins calls the engine and the executor make (:class:`agentpool.adapters.jenkins.JenkinsAdapter`)."""

    def read_nodes(self) -> tuple[Node, ...]: ...

    def read_queue(self, nodes: tuple[Node, ...], /) -> tuple[QueueItem, ...]: ...

    def read_node(self, name: str, /) -> Node: ...

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
    ) -> None: ...

    def agent_secret(self, name: str, /) -> str: ...

    def set_temporarily_offline(self, name: str, offline: bool, message: str = "", /) -> Node: ...

    def delete_node(self, name: str, /) -> None: ...
