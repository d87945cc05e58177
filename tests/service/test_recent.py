"""Recent history: the decisions ring, queued → online percentiles, agents' lifecycle phases."""

from __future__ import annotations

from agentpool.model import AgentMemory, Executor, Memory, Node, PoolMemory, Provision, Reap, Reason
from agentpool.service.metrics import Metrics
from agentpool.service.recent import FIRST_BUILD, LAUNCHING, LIFETIME, WORKING, Recent, percentile


def node(name: str, busy: bool) -> Node:
    return Node(name, frozenset({name}), False, False, "", (Executor(idle=not busy),))


def test_percentiles_by_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert percentile(values, 0.5) == 10.0
    assert percentile(values, 0.95) == 19.0
    assert percentile([7.0], 0.95) == 7.0


def test_waits_keep_one_hour_per_pool() -> None:
    recent = Recent()
    recent.online("a", 100.0, now=0.0)
    for i, waited in enumerate([4.0, 6.0, 8.0, 30.0]):
        recent.online("a" if i % 2 else "b", waited, now=3000.0 + i)
    waits = recent.waits(now=3700.0)  # the first one is older than an hour
    assert waits["count"] == 4
    assert (waits["p50"], waits["p95"], waits["max"]) == (6.0, 30.0, 30.0)
    assert waits["pools"]["a"]["count"] == 2 and waits["pools"]["b"]["p50"] == 4.0


def test_decisions_ring_is_bounded_newest_first_and_names_backoff() -> None:
    recent = Recent(keep=3)
    memory = Memory(pools={"p": PoolMemory(consecutive_failures=2, backoff_until=140.0)})
    action = Provision("p", "local", "ap-p-1", Reason.DEMAND, "1 item(s) waiting")
    recent.outcome(action, False, True, "image not found", memory, now=100.0)
    got = recent.decisions()
    assert [d["event"] for d in got] == ["backoff", "launch failed"]
    assert got[0]["detail"] == "40s after 2 consecutive launch failures"
    assert got[1]["error"] == "image not found"
    for i in range(5):
        recent.decision(200.0 + i, "x", detail=str(i))
    assert [d["detail"] for d in recent.decisions()] == ["4", "3", "2"]


def test_pass_errors_are_recorded_when_they_change() -> None:
    recent = Recent()
    for error in ("", "jenkins down", "jenkins down", ""):
        recent.pass_error(error, now=1.0)
    assert [d["event"] for d in recent.decisions()] == ["pass complete", "pass incomplete"]


def test_lifecycle_phases_reach_the_histogram() -> None:
    metrics = Metrics(["p"])
    recent = Recent(phase=metrics.observe_phase)
    memory = Memory()
    provision = Provision("p", "local", "ap-p-1", Reason.DEMAND, "")
    recent.outcome(provision, True, True, "", memory, now=100.0)
    agent = AgentMemory("ap-p-1", "p", "local", launched_at=100.0)
    recent.pass_seen({agent.name: agent}, [], now=105.0)
    agent.online_at = 112.0
    recent.pass_seen({agent.name: agent}, [node(agent.name, busy=False)], now=113.0)
    recent.pass_seen({agent.name: agent}, [node(agent.name, busy=True)], now=130.0)
    reap = Reap("ap-p-1", "p", "local", Reason.IDLE_TIMEOUT, "idle 5m")
    recent.outcome(reap, True, True, "", memory, now=400.0)
    text = metrics.exposition().decode()

    def total(phase: str) -> float:
        line = f'agentpool_agent_lifecycle_seconds_sum{{phase="{phase}",pool="p"}}'
        return float(next(x for x in text.splitlines() if x.startswith(line)).split()[-1])

    assert total(LAUNCHING) == 12.0
    assert total(FIRST_BUILD) == 18.0
    assert total(WORKING) == 270.0
    assert total(LIFETIME) == 300.0
    assert [d["event"] for d in recent.decisions()] == ["reaped", "online", "provisioned"]
