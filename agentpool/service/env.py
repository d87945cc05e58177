"""Kept so that ``agentpool.service.env`` still imports: the code lives in :mod:`agentpool.env`.

The config loader needs it, and the decision core (which imports the config) must not
depend on the service layer.
"""

from __future__ import annotations

from agentpool.env import expand_env

__all__ = ["expand_env"]
