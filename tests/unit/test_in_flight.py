"""Actions in flight: the planner never issues one twice and counts launches as capacity; the
engine's passes do not wait for them, launches run at most ``max_parallel_launches`` at once
per host, a slow removal never delays a launch, and outcomes land in memory as they finish."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from agentpool.config import Config, load_config_text
from agentpool.engine import Engine
from agentpool.errors import ErrorKind
from agentpool.executor import Executor, action_key
from agentpool.logs import clear_secrets
from agentpool.model import (
    InFlight,
    ItemKind,
    Observed,
    Provision,
    QueueItem,
    Reap,
    Reason,
    RemoveOrphan,
    ResourceKind,
)
from agentpool.planner import orphan_key, plan
from tests.unit.fakes import FakeBackend, FakeJenkins
from tests.unit.planner_builders import (
    T0,
    agent_name,
    config,
    container,
    items,
    known,
    memory,
    node,
    observed,
    volume,
)


def with_flight(obs: Observed, flight: InFlight) -> Observed:
    return Observed(obs.queue, obs.nodes, obs.hosts, obs.jenkins_error, in_flight=flight)


def provision(n: int, pool: str = "dind", lease: str | None = None) -> Provision:
    return Provision(pool, "h1", agent_name(pool, n), Reason.DEMAND, "", lease_volume=lease)


# -- the planner -----------------------------------------------------------------------------


def test_launches_in_flight_count_as_starting_capacity() -> None:
    cfg = config({"max_agents": 10})
    flight = InFlight(provisions=(provision(1), provision(2)))
    p, _ = plan(with_flight(observed(items(3)), flight), cfg, memory(), T0)
    made = [a for a in p.actions if isinstance(a, Provision)]
    assert len(made) == 1
    assert made[0].agent not in flight.launching


def test_launches_in_flight_count_against_the_pool_and_host_caps() -> None:
    cfg = config({"max_agents": 2})
    flight = InFlight(provisions=(provision(1), provision(2)))
    p, _ = plan(with_flight(observed(items(5)), flight), cfg, memory(), T0)
    assert [a for a in p.actions if isinstance(a, Provision)] == []
    assert {u.reason.value for u in p.unserved} == {"cap reached"}
    cfg = config({"max_agents": 10}, hosts=[{"name": "h1", "url": "unix:///x", "max_agents": 2}])
    p, _ = plan(with_flight(observed(items(5)), flight), cfg, memory(), T0)
    assert [a for a in p.actions if isinstance(a, Provision)] == []


def test_what_a_launch_in_flight_made_is_neither_adopted_nor_an_orphan() -> None:
    """Its node and container exist before the executor reports: two passes long past every
    grace still leave them alone, and memory gets them only from the outcome."""
    cfg = config()
    name = agent_name("dind", 1)
    flight = InFlight(provisions=(provision(1),))
    obs = observed([], [node(name, online=False)], [container(name)], [volume(f"{name}-docker", agent=name)])
    mem = memory()
    for now in (T0, T0 + 3600, T0 + 7200):
        p, mem = plan(with_flight(obs, flight), cfg, mem, now)
        assert p.actions == (), now
        assert name not in mem.agents
    # once it is no longer in flight (the outcome was lost: a crash), the usual rules apply
    p, mem = plan(obs, cfg, mem, T0 + 7300)
    assert name in mem.agents  # adopted: a container with a node


def test_an_agent_being_reaped_gets_no_second_action_and_serves_nothing() -> None:
    cfg = config({"idle_timeout": 60})
    name = agent_name("dind", 1)
    agent = known(name, idle_since=T0 - 600)
    obs = observed(items(1), [node(name)], [container(name)])
    p, _ = plan(obs, cfg, memory(agent), T0)
    assert [type(a) for a in p.actions] == []  # idle, but an item is about to take it
    flight = InFlight(reaping=frozenset({name}))
    p, mem = plan(with_flight(obs, flight), cfg, memory(agent), T0)
    # being removed: no capacity, so the waiting item gets a new agent; no second Reap
    assert [type(a) for a in p.actions] == [Provision]
    assert name in mem.agents  # forgotten only when its Reap's outcome says it is gone
    gone = observed(items(1), [], [])
    p, _ = plan(with_flight(gone, flight), cfg, memory(agent), T0)
    assert not any(isinstance(a, Reap) for a in p.actions)


def test_a_cordon_in_flight_is_not_issued_again() -> None:
    cfg = config({"one_shot": True})
    name = agent_name("dind", 1)
    obs = observed([], [node(name, busy=1)], [container(name)])
    p, _ = plan(obs, cfg, memory(known(name)), T0)
    assert [a.reason for a in p.actions] == [Reason.ONE_SHOT_BUSY]
    p, _ = plan(with_flight(obs, InFlight(cordoning=frozenset({name}))), cfg, memory(known(name)), T0)
    assert p.actions == ()


def test_an_orphan_being_removed_is_not_removed_twice_nor_leased() -> None:
    cfg = config({"docker_volume": "reuse", "max_agents": 1})
    stray = container(agent_name("dind", 9))
    free = volume("ap-dind-000001-docker", agent=agent_name("dind", 1), free=True)
    extra = volume("ap-dind-000002-docker", agent=agent_name("dind", 2), free=True, last_used=T0 - 7200)
    obs = observed([], [], [stray], [free, extra])
    _, mem = plan(obs, cfg, memory(), T0)
    p, _ = plan(obs, cfg, mem, T0 + 120)
    removals = {orphan_key(a.kind, a.host, a.name) for a in p.actions if isinstance(a, RemoveOrphan)}
    assert removals == {f"container:h1/{stray.id}", f"volume:h1/{extra.name}"}
    p, _ = plan(with_flight(obs, InFlight(orphans=frozenset(removals))), cfg, mem, T0 + 120)
    assert p.actions == ()
    # a free volume being removed is not handed to a new agent
    busy = frozenset({f"volume:h1/{free.name}"})
    p, _ = plan(with_flight(observed(items(1), [], [], [free]), InFlight(orphans=busy)), cfg, mem, T0)
    assert [(type(a), getattr(a, "lease_volume", None)) for a in p.actions] == [(Provision, None)]


def test_a_volume_leased_by_a_launch_in_flight_is_not_leased_again() -> None:
    cfg = config({"docker_volume": "reuse"})
    free = volume("ap-dind-000001-docker", agent=agent_name("dind", 1), free=True)
    flight = InFlight(provisions=(provision(2, lease=free.name),))
    p, _ = plan(with_flight(observed(items(2), [], [], [free]), flight), cfg, memory(), T0)
    made = [a for a in p.actions if isinstance(a, Provision)]
    assert len(made) == 1 and made[0].lease_volume is None


# -- the engine and the executor over fakes --------------------------------------------------

CONFIG = """jenkins:
  url: http://127.0.0.1:9/
  user: agentpool
  token: not-used
docker_hosts:
  - name: local
    url: unix:///nonexistent.sock
    max_parallel_launches: 2
pools:
  - name: a
    labels: [alpha]
    image: agentpool/dind-agent:latest
    max_agents: 20
    stop_timeout: 3s
  - name: b
    labels: [beta]
    image: agentpool/dind-agent:latest
"""


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    yield
    clear_secrets()


@pytest.fixture
def cfg() -> Config:
    return load_config_text(CONFIG, "agentpool.yaml")


def engine_with(cfg: Config, jenkins: FakeJenkins, backend: FakeBackend) -> Engine:
    return Engine(cfg, backend=lambda host: backend, jenkins=lambda c: jenkins)


def queued(n: int, label: str, start: int = 1) -> list[QueueItem]:
    now = time.time()
    return [QueueItem(i, ItemKind.BUILDABLE, f"job-{i}", "", now, label) for i in range(start, start + n)]


def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_a_pass_does_not_wait_and_launches_run_at_most_max_parallel_launches_at_once(cfg: Config) -> None:
    jenkins, backend = FakeJenkins(), FakeBackend("local")
    jenkins.queue = queued(6, "alpha")
    engine = engine_with(cfg, jenkins, backend)
    release = backend.hold("start_agent")
    try:
        first = engine.run_pass(wait=False)
        launched = [a for a in first.plan.actions if isinstance(a, Provision)]
        assert len(launched) == 6 and first.outcomes == []
        until(lambda: backend.running["start_agent"] == 2)
        time.sleep(0.1)  # a third would have entered by now
        assert backend.running["start_agent"] == 2
        # the next pass sees the six in flight: nothing new, nothing twice
        second = engine.run_pass(wait=False)
        assert second.plan.actions == ()
        assert len(second.observed.in_flight.provisions) == 6
    finally:
        release.set()
    assert engine.finish(5.0)
    assert set(engine.memory.agents) == {a.agent for a in launched} == set(backend.agents)
    assert backend.most_running["start_agent"] == 2
    assert engine.executor.launch_stats()["local"].high_water == 2
    assert jenkins.calls["create_node"] == 6  # each agent's node created once
    engine.close()


def test_a_slow_reap_does_not_delay_a_launch_for_another_pool(cfg: Config) -> None:
    jenkins, backend = FakeJenkins(), FakeBackend("local")
    jenkins.queue = queued(1, "alpha")
    engine = engine_with(cfg, jenkins, backend)
    engine.run_pass()
    (old,) = engine.memory.agents
    jenkins.queue = []
    engine.set_draining("a", True)
    stopping = backend.hold("remove_agent")  # a container deaf to SIGTERM: stop takes its grace
    try:
        reaping = engine.run_pass(wait=False)
        assert [type(a) for a in reaping.plan.actions] == [Reap]
        until(lambda: backend.running["remove_agent"] == 1)
        jenkins.queue = queued(1, "beta", start=10)
        started = time.monotonic()
        launch = engine.run_pass(wait=False)
        assert [a.pool for a in launch.plan.actions if isinstance(a, Provision)] == ["b"]
        assert launch.observed.in_flight.reaping == {old}
        until(lambda: any(a.spec.pool == "b" for a in backend.agents.values()), timeout=2.0)
        assert time.monotonic() - started < 1.0
        assert backend.running["remove_agent"] == 1  # still stopping
        again = engine.run_pass(wait=False)
        assert not any(isinstance(a, Reap) for a in again.plan.actions)
    finally:
        stopping.set()
    assert engine.finish(5.0)
    assert [a.pool for a in engine.memory.agents.values()] == ["b"]
    assert backend.stop_timeouts == [3.0]  # pool a's stop_timeout
    engine.close()


def test_a_background_launch_failure_lands_in_memory_on_the_next_pass(cfg: Config) -> None:
    jenkins, backend = FakeJenkins(), FakeBackend("local")
    jenkins.queue = queued(1, "alpha")
    engine = engine_with(cfg, jenkins, backend)
    backend.fail("start_agent", kind=ErrorKind.SERVER_ERROR)
    engine.run_pass(wait=False)
    assert engine.executor.wait(5.0)
    assert engine.memory.pools["a"].consecutive_failures == 0  # not collected yet
    report = engine.run_pass(wait=False)
    assert [o.ok for o in report.outcomes] == [False]
    assert engine.memory.pools["a"].consecutive_failures == 1
    assert [a for a in report.plan.actions if isinstance(a, Provision)] == []  # backing off
    assert jenkins.nodes == {} and backend.volumes == {}  # undone in the background
    engine.close()


def test_sigterm_bound_the_engine_stops_waiting_and_says_so(cfg: Config) -> None:
    jenkins, backend = FakeJenkins(), FakeBackend("local")
    jenkins.queue = queued(1, "alpha")
    engine = engine_with(cfg, jenkins, backend)
    release = backend.hold("create_volume")
    try:
        engine.run_pass(wait=False)
        assert engine.finish(0.2) is False
        assert len(engine.executor.in_flight().provisions) == 1
    finally:
        release.set()
    assert engine.finish(5.0) and len(engine.memory.agents) == 1
    engine.close()


def test_the_executor_refuses_an_action_whose_subject_is_in_flight(cfg: Config) -> None:
    jenkins, backend = FakeJenkins(), FakeBackend("local")
    executor = Executor(cfg, jenkins, {"local": backend})
    release = backend.hold("start_agent")
    action = Provision("a", "local", "agentpool-a-000001", Reason.DEMAND, "")
    reap = Reap("agentpool-a-000001", "a", "local", Reason.LOST, "", check_idle=False)
    try:
        assert executor.submit(action)
        assert not executor.submit(action) and not executor.submit(reap)
        assert action_key(action) == action_key(reap) == "agent:agentpool-a-000001"
    finally:
        release.set()
    assert executor.wait(5.0)
    done, left = executor.collect()
    assert [o.ok for o in done] == [True] and left == InFlight()
    assert backend.calls["start_agent"] == 1
    orphan = RemoveOrphan(ResourceKind.VOLUME, "local", "v", Reason.ORPHAN, "")
    assert action_key(orphan) == "volume:local/v"
    executor.close()
