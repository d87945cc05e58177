"""The pure decision core: from what one pass observed, what to start, reap and clean up.

Everything the provisioner decides is decided here, from values only: the observation,
the config, the memory carried from the previous pass and the time, all passed in. No
I/O, no clock, no logging, so the whole decision table is unit-tested without Docker or
Jenkins. The rules are written down in docs/planner.md. The package holds one module per
phase (see :mod:`agentpool.planner.core` for their order); the executor performs the
returned actions and the engine reports their outcomes through the ``record_*`` functions
of :mod:`agentpool.planner.memory`, which are pure as well (they return a new memory).
"""

from __future__ import annotations

from agentpool.model import UnservedReason
from agentpool.planner.assess import ORPHAN_GRACE, agent_state
from agentpool.planner.capacity import HostCapacity, PoolCapacity
from agentpool.planner.core import plan
from agentpool.planner.demand import WHY_UNKNOWN
from agentpool.planner.memory import (
    BACKOFF_BASE,
    BACKOFF_MAX,
    backoff_delay,
    copy_memory,
    orphan_key,
    record_launch_failure,
    record_orphan_removed,
    record_pool_success,
    record_provisioned,
    record_reaped,
    set_draining,
    set_host_draining,
)
from agentpool.planner.names import agent_name, agent_pattern
from agentpool.planner.routing import UNKNOWN_LABEL, matching_pools

WHY_NO_POOL = UnservedReason.NO_POOL.value
WHY_CAP = UnservedReason.CAP.value
WHY_BACKOFF = UnservedReason.BACKOFF.value
WHY_DRAINING = UnservedReason.DRAINING.value
WHY_NO_HOST = UnservedReason.NO_HOST.value
WHY_NO_IMAGE = UnservedReason.NO_IMAGE.value

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_MAX",
    "ORPHAN_GRACE",
    "UNKNOWN_LABEL",
    "WHY_BACKOFF",
    "WHY_CAP",
    "WHY_DRAINING",
    "WHY_NO_HOST",
    "WHY_NO_IMAGE",
    "WHY_NO_POOL",
    "WHY_UNKNOWN",
    "HostCapacity",
    "PoolCapacity",
    "agent_name",
    "agent_pattern",
    "agent_state",
    "backoff_delay",
    "copy_memory",
    "matching_pools",
    "orphan_key",
    "plan",
    "record_launch_failure",
    "record_orphan_removed",
    "record_pool_success",
    "record_provisioned",
    "record_reaped",
    "set_draining",
    "set_host_draining",
]
