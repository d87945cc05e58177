"""What an agent's container is, from its pool's config: labels, environment, limits, security.

Kept apart from the executor, which only carries out the steps of a launch: this is pure
translation of configuration into the backend's :class:`~agentpool.backend.AgentSpec`,
with no Jenkins or backend call, so it reads (and changes) on its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentpool.backend import AgentSpec
from agentpool.model import LABEL_AGENT, LABEL_BOOT, LABEL_INSTANCE, LABEL_POOL

if TYPE_CHECKING:
    from agentpool.config import Config, PoolConfig

__all__ = ["agent_labels", "agent_spec"]


def agent_labels(instance: str, boot: str, pool: str, agent: str) -> dict[str, str]:
    """The labels on an agent's container and volume; ``boot`` (this run of the daemon) when known."""
    labels = {LABEL_INSTANCE: instance, LABEL_POOL: pool, LABEL_AGENT: agent}
    return labels | ({LABEL_BOOT: boot} if boot else {})


def agent_spec(
    config: Config, pool: PoolConfig, agent: str, volume: str, secret: str, labels: dict[str, str]
) -> AgentSpec:
    """The container of ``agent`` of ``pool``, using ``volume`` and connecting with ``secret``."""
    jenkins = config.jenkins
    env = {str(k): str(v) for k, v in pool.env.items()}
    env.update(
        {
            "JENKINS_URL": jenkins.agent_url or jenkins.url,
            "JENKINS_AGENT_NAME": agent,
            "JENKINS_SECRET": secret,
            "JENKINS_AGENT_WORKDIR": pool.remote_fs,
        }
    )
    if jenkins.websocket:
        env["JENKINS_WEB_SOCKET"] = "true"
    return AgentSpec(
        name=agent,
        pool=pool.name,
        image=pool.image,
        volume=volume,
        env=env,
        security=pool.security,
        cap_drop=tuple(pool.cap_drop),
        cpus=pool.cpus or None,
        memory=pool.memory or None,
        labels=labels,
    )
