"""Where the stub inbound agent lives: its Java source and the jar built from it.

Both are package data of this distribution (not files of the repository root), so an
installed controller serves the same jar a checkout does; ``scripts/build-agent-jar``
writes the jar beside its source, and ``$AGENTPOOL_AGENT_JAR`` points elsewhere.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

AGENT_DIR = Path(str(resources.files(__package__ or "agentpool_testing.jenkins").joinpath("agent")))
AGENT_SOURCE = AGENT_DIR / "src"
BUILT_JAR = AGENT_DIR / "agent.jar"


def agent_jar_path(explicit: Path | None = None) -> Path:
    """The jar to serve: ``explicit``, else ``$AGENTPOOL_AGENT_JAR``, else the built one."""
    if explicit is not None:
        return explicit
    from_env = os.environ.get("AGENTPOOL_AGENT_JAR")
    return Path(from_env) if from_env else BUILT_JAR
