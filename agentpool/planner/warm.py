"""The warm pool: ``min_idle`` as a deficit — agents' worth of idle or starting executors short of it."""

from __future__ import annotations

from agentpool.model import Provision, Reason
from agentpool.planner.launch import Budget, Context, blocked, launch


def warm_pool(ctx: Context, budget: Budget) -> tuple[list[Provision], Budget]:
    actions: list[Provision] = []
    for pool in ctx.config.pools:
        have = budget.pools[pool.name].warm(pool.executors)
        for _ in range(pool.min_idle - have):
            if blocked(ctx, pool, budget) is not None:
                break
            action, budget = launch(ctx, pool, budget, Reason.MIN_IDLE, f"keep {pool.min_idle} idle agent(s)")
            actions.append(action)
    return actions, budget
