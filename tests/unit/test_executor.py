"""The executor's undo paths against in-memory fakes (no Docker, no Jenkins): a failure at
each step of a launch and of a reap, expected (ExternalError) or not (any exception),
leaves nothing behind, or only what the next pass removes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentpool.config import Config, load_config_text
from agentpool.errors import ErrorKind, System
from agentpool.executor import Executor
from agentpool.logs import clear_secrets
from agentpool.model import CompleteLaunch, Cordon, Provision, Reap, Reason, RemoveOrphan, ResourceKind
from tests.unit.fakes import FakeBackend, FakeJenkins, FakeNode

CONFIG = """jenkins:
  url: http://127.0.0.1:9/
  user: agentpool
  token: not-used
docker_hosts:
  - name: local
    url: unix:///nonexistent.sock
pools:
  - name: dind
    labels: [docker]
    image: agentpool/dind-agent:latest
  - name: warm
    labels: [docker, warm]
    image: agentpool/dind-agent:latest
    docker_volume: reuse
"""

AGENT = "agentpool-dind-abc123"
LAUNCH_STEPS = ["create_node", "agent_secret", "create_volume", "start_agent"]
LEASE_STEPS = ["create_node", "agent_secret", "volume_in_use", "start_agent"]
# the reap's steps before the node is deleted (undone), then after (left for the next pass)
REAP_STEPS_UNDONE = ["read_node", "agent_volume", "delete_node"]
REAP_STEPS_AFTER = ["remove_agent", "remove_volume"]
FAULTS = ["external", "unexpected"]


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    yield
    clear_secrets()


@pytest.fixture
def config() -> Config:
    return load_config_text(CONFIG, "agentpool.yaml")


@pytest.fixture
def jenkins() -> FakeJenkins:
    return FakeJenkins()


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend("local")


@pytest.fixture
def executor(config: Config, jenkins: FakeJenkins, backend: FakeBackend) -> Executor:
    return Executor(config, jenkins, {"local": backend})


def inject(fake: FakeJenkins | FakeBackend, method: str, fault: str) -> None:
    if fault == "external":
        fake.fail(method, kind=ErrorKind.SERVER_ERROR)
    else:
        fake.fail(method, RuntimeError(f"{method} broke"))


def target(method: str, jenkins: FakeJenkins, backend: FakeBackend) -> FakeJenkins | FakeBackend:
    return jenkins if hasattr(FakeJenkins, method) and method not in vars(FakeBackend) else backend


def check_failure(
    outcome_error_kind: ErrorKind | None, system: System | None, fault: str, expected: System
) -> None:
    if fault == "external":
        assert (outcome_error_kind, system) == (ErrorKind.SERVER_ERROR, expected)
    else:
        assert (outcome_error_kind, system) == (ErrorKind.UNEXPECTED, None)


def provision(pool: str = "dind", lease: str | None = None) -> Provision:
    return Provision(pool, "local", AGENT, Reason.DEMAND, "test", lease_volume=lease)


# -- launch -----------------------------------------------------------------------------------


def test_a_launch_creates_node_volume_and_agent(
    executor: Executor, jenkins: FakeJenkins, backend: FakeBackend
) -> None:
    outcome = executor.perform(provision())
    assert outcome.ok and outcome.volume == f"{AGENT}-docker"
    assert set(jenkins.nodes) == {AGENT} and set(backend.volumes) == {f"{AGENT}-docker"}
    assert backend.agents[AGENT].id == outcome.container_id
    assert backend.agents[AGENT].spec.env["JENKINS_SECRET"] == f"secret-of-{AGENT}"
    assert [jenkins.calls[m] + backend.calls[m] for m in LAUNCH_STEPS] == [1, 1, 1, 1]


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("step", LAUNCH_STEPS)
def test_a_failure_at_any_launch_step_leaves_nothing_behind(
    executor: Executor, jenkins: FakeJenkins, backend: FakeBackend, step: str, fault: str
) -> None:
    inject(target(step, jenkins, backend), step, fault)
    outcome = executor.perform(provision())
    assert not outcome.ok
    expected = System.JENKINS if step in ("create_node", "agent_secret") else System.DOCKER
    check_failure(outcome.error_kind, outcome.error_system, fault, expected)
    assert jenkins.nodes == {} and backend.volumes == {} and backend.agents == {}
    done = LAUNCH_STEPS[: LAUNCH_STEPS.index(step)]
    # exactly the steps done are undone: the node when it was created, the volume likewise
    assert jenkins.calls["delete_node"] == (1 if "create_node" in done else 0)
    assert backend.calls["remove_volume"] == (1 if "create_volume" in done else 0)
    assert backend.calls["remove_agent"] == 0  # never by name: it may be someone else's


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("step", LEASE_STEPS)
def test_a_failed_launch_on_a_leased_volume_keeps_the_volume(
    executor: Executor, jenkins: FakeJenkins, backend: FakeBackend, step: str, fault: str
) -> None:
    backend.volumes["agentpool-warm-000001-docker"] = {"agentpool.pool": "warm"}
    inject(target(step, jenkins, backend), step, fault)
    outcome = executor.perform(provision("warm", lease="agentpool-warm-000001-docker"))
    assert not outcome.ok
    assert jenkins.nodes == {} and backend.agents == {}
    assert set(backend.volumes) == {"agentpool-warm-000001-docker"}  # the warm cache survives
    assert backend.calls["create_volume"] == 0 and backend.calls["remove_volume"] == 0


def test_a_lease_of_a_volume_in_use_gets_a_new_volume(
    executor: Executor, jenkins: FakeJenkins, backend: FakeBackend
) -> None:
    first = executor.perform(provision("warm", lease=None))
    assert first.ok
    second = executor.perform(
        Provision("warm", "local", "agentpool-warm-def456", Reason.DEMAND, "t", lease_volume=first.volume)
    )
    assert second.ok and second.volume == "agentpool-warm-def456-docker"


def test_a_failed_undo_is_left_for_the_orphan_sweep(
    executor: Executor, jenkins: FakeJenkins, backend: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    backend.fail("start_agent")
    jenkins.fail("delete_node", kind=ErrorKind.UNREACHABLE)
    outcome = executor.perform(provision())
    assert not outcome.ok and outcome.error_kind is ErrorKind.SERVER_ERROR
    assert set(jenkins.nodes) == {AGENT} and backend.volumes == {}  # the node waits for the sweep
    assert f"undo of node {AGENT} failed" in caplog.text


def test_an_unexpected_error_in_an_undo_does_not_escape(
    executor: Executor, jenkins: FakeJenkins, backend: FakeBackend
) -> None:
    backend.fail("start_agent")
    backend.fail("remove_volume", RuntimeError("boom"))
    outcome = executor.perform(provision())
    assert not outcome.ok and jenkins.nodes == {}


def test_a_name_taken_in_jenkins_is_not_undone(
    executor: Executor, jenkins: FakeJenkins, backend: FakeBackend
) -> None:
    jenkins.nodes[AGENT] = FakeNode(AGENT, ["static"], 1)
    outcome = executor.perform(provision())
    assert not outcome.ok and outcome.error_kind is ErrorKind.CONFLICT
    assert jenkins.nodes[AGENT].labels == ["static"] and jenkins.calls["delete_node"] == 0


# -- reap -------------------------------------------------------------------------------------


def launched(executor: Executor, pool: str = "dind") -> None:
    assert executor.perform(provision(pool)).ok


def reap(check_idle: bool = True, reason: Reason = Reason.IDLE_TIMEOUT, keep_volume: bool = False) -> Reap:
    return Reap(AGENT, "dind", "local", reason, "test", check_idle=check_idle, keep_volume=keep_volume)


def test_a_reap_removes_node_agent_and_volume(
    executor: Executor, jenkins: FakeJenkins, backend: FakeBackend
) -> None:
    launched(executor)
    outcome = executor.perform(reap())
    assert outcome.ok and outcome.removed and outcome.volume == f"{AGENT}-docker"
    assert jenkins.nodes == {} and backend.agents == {} and backend.volumes == {}


def test_a_reap_that_keeps_the_volume_releases_it(executor: Executor, backend: FakeBackend) -> None:
    launched(executor)
    assert executor.perform(reap(keep_volume=True)).ok
    assert backend.agents == {} and set(backend.volumes) == {f"{AGENT}-docker"}


def test_a_build_that_slipped_in_brings_the_node_back_online(
    executor: Executor, jenkins: FakeJenkins, backend: FakeBackend
) -> None:
    launched(executor)
    jenkins.nodes[AGENT].busy = 1
    outcome = executor.perform(reap())
    assert outcome.ok and not outcome.removed
    assert jenkins.nodes[AGENT].history == ["offline", "online"] and AGENT in backend.agents


def test_a_busy_node_offline_before_the_reap_stays_offline(executor: Executor, jenkins: FakeJenkins) -> None:
    launched(executor)
    jenkins.nodes[AGENT].temporarily_offline = True
    jenkins.nodes[AGENT].busy = 1
    outcome = executor.perform(reap())
    assert outcome.ok and not outcome.removed and jenkins.nodes[AGENT].temporarily_offline


@pytest.mark.parametrize("fault", FAULTS)
def test_a_failure_bringing_a_busy_node_back_online_is_reported(
    executor: Executor, jenkins: FakeJenkins, fault: str
) -> None:
    launched(executor)
    jenkins.nodes[AGENT].busy = 1
    original = jenkins.set_temporarily_offline
    calls: list[bool] = []

    def second_call_fails(name: str, offline: bool, message: str = "", /) -> object:
        calls.append(offline)
        if not offline:
            inject(jenkins, "set_temporarily_offline", fault)
        return original(name, offline, message)

    jenkins.set_temporarily_offline = second_call_fails  # type: ignore[method-assign,assignment]
    outcome = executor.perform(reap())
    assert not outcome.ok and calls == [True, False]
    check_failure(outcome.error_kind, outcome.error_system, fault, System.JENKINS)


def test_a_reap_of_a_node_already_gone_still_removes_the_agent(
    executor: Executor, jenkins: FakeJenkins, backend: FakeBackend
) -> None:
    launched(executor)
    del jenkins.nodes[AGENT]
    outcome = executor.perform(reap())
    assert outcome.ok and outcome.removed and backend.agents == {} and backend.volumes == {}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_failure_taking_the_node_offline_changes_nothing(
    executor: Executor, jenkins: FakeJenkins, backend: FakeBackend, fault: str
) -> None:
    launched(executor)
    inject(jenkins, "set_temporarily_offline", fault)
    outcome = executor.perform(reap())
    assert not outcome.ok
    check_failure(outcome.error_kind, outcome.error_system, fault, System.JENKINS)
    assert not jenkins.nodes[AGENT].temporarily_offline and AGENT in backend.agents


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("step", REAP_STEPS_UNDONE)
def test_a_failure_before_the_node_is_deleted_puts_it_back_online(
    executor: Executor, jenkins: FakeJenkins, backend: FakeBackend, step: str, fault: str
) -> None:
    launched(executor)
    inject(target(step, jenkins, backend), step, fault)
    outcome = executor.perform(reap())
    assert not outcome.ok
    node = jenkins.nodes[AGENT]
    assert not node.temporarily_offline  # back online: the next pass decides again
    assert node.history == ([] if step == "read_node" else ["offline", "online"])
    assert AGENT in backend.agents and f"{AGENT}-docker" in backend.volumes
    assert executor.perform(reap()).ok  # and the next reap removes everything
    assert jenkins.nodes == {} and backend.agents == {} and backend.volumes == {}


def test_a_failed_reap_of_a_node_offline_before_leaves_it_offline(
    executor: Executor, jenkins: FakeJenkins, backend: FakeBackend
) -> None:
    launched(executor)
    jenkins.nodes[AGENT].temporarily_offline = True  # cordoned (one-shot) or an admin's doing
    jenkins.fail("delete_node")
    assert not executor.perform(reap()).ok
    assert jenkins.nodes[AGENT].temporarily_offline and jenkins.nodes[AGENT].history == []


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("step", REAP_STEPS_AFTER)
def test_a_failure_after_the_node_is_deleted_is_finished_by_the_next_reap(
    executor: Executor, jenkins: FakeJenkins, backend: FakeBackend, step: str, fault: str
) -> None:
    launched(executor)
    inject(backend, step, fault)
    outcome = executor.perform(reap())
    assert not outcome.ok
    check_failure(outcome.error_kind, outcome.error_system, fault, System.DOCKER)
    assert jenkins.nodes == {}
    assert (AGENT in backend.agents) == (step == "remove_agent")
    # the planner then sees an agent without its node and reaps it as lost, without re-check
    assert executor.perform(reap(check_idle=False, reason=Reason.LOST)).ok
    assert backend.agents == {} and backend.volumes == {}


def test_a_lost_agent_reap_keeps_its_log_tail(executor: Executor, backend: FakeBackend) -> None:
    launched(executor)
    outcome = executor.perform(reap(check_idle=False, reason=Reason.LOST))
    assert outcome.ok and outcome.log_tail == f"last lines of {AGENT}"
    assert backend.calls["logs_tail"] == 1


# -- cordon, orphans, batches -----------------------------------------------------------------


@pytest.mark.parametrize("fault", FAULTS)
def test_a_failed_cordon_is_reported(executor: Executor, jenkins: FakeJenkins, fault: str) -> None:
    launched(executor)
    action = Cordon(AGENT, "dind", "local", Reason.ONE_SHOT_BUSY, "test")
    inject(jenkins, "set_temporarily_offline", fault)
    assert not executor.perform(action).ok
    outcome = executor.perform(action)
    assert outcome.ok and not outcome.removed and jenkins.nodes[AGENT].temporarily_offline


@pytest.mark.parametrize(
    ("kind", "method"),
    [
        (ResourceKind.NODE, "delete_node"),
        (ResourceKind.CONTAINER, "remove_agent"),
        (ResourceKind.VOLUME, "remove_volume"),
    ],
)
@pytest.mark.parametrize("fault", FAULTS)
def test_orphans_are_removed_and_failures_reported(
    executor: Executor,
    jenkins: FakeJenkins,
    backend: FakeBackend,
    kind: ResourceKind,
    method: str,
    fault: str,
) -> None:
    launched(executor)
    name = {ResourceKind.NODE: AGENT, ResourceKind.CONTAINER: backend.agents[AGENT].id}.get(
        kind, f"{AGENT}-docker"
    )
    action = RemoveOrphan(kind, "" if kind is ResourceKind.NODE else "local", name, Reason.ORPHAN, "test")
    inject(target(method, jenkins, backend), method, fault)
    assert not executor.perform(action).ok
    assert executor.perform(action).ok
    remaining = {ResourceKind.NODE: jenkins.nodes, ResourceKind.CONTAINER: backend.agents}.get(
        kind, backend.volumes
    )
    assert remaining == {}


def test_one_action_failing_unexpectedly_does_not_stop_the_others(
    executor: Executor, jenkins: FakeJenkins, backend: FakeBackend
) -> None:
    jenkins.fail("create_node", ZeroDivisionError("bug"))
    actions = [Provision("dind", "local", f"agentpool-dind-00000{i}", Reason.DEMAND, "t") for i in range(3)]
    outcomes = executor.execute(actions)
    assert sorted(o.ok for o in outcomes) == [False, True, True]
    failed = next(o for o in outcomes if not o.ok)
    assert failed.error_kind is ErrorKind.UNEXPECTED and "ZeroDivisionError" in failed.error
    assert len(jenkins.nodes) == 2 and len(backend.agents) == 2 and len(backend.volumes) == 2


def complete(container: str) -> CompleteLaunch:
    return CompleteLaunch(AGENT, "dind", "local", container, Reason.INTERRUPTED_LAUNCH, "test")


def test_an_interrupted_launch_is_completed_with_the_secret_copied_again(
    executor: Executor, jenkins: FakeJenkins, backend: FakeBackend
) -> None:
    launched(executor)
    backend.agents[AGENT].running = False  # as a kill -9 between create and start leaves it
    outcome = executor.perform(complete(backend.agents[AGENT].id))
    assert outcome.ok and backend.agents[AGENT].running
    assert backend.completed_with == f"secret-of-{AGENT}"
    assert set(jenkins.nodes) == {AGENT}


@pytest.mark.parametrize("step", ["agent_secret", "complete_agent"])
def test_a_failed_completion_removes_nothing(
    executor: Executor, jenkins: FakeJenkins, backend: FakeBackend, step: str
) -> None:
    launched(executor)
    backend.agents[AGENT].running = False
    target(step, jenkins, backend).fail(step)
    outcome = executor.perform(complete(backend.agents[AGENT].id))
    assert not outcome.ok and step in outcome.error
    assert set(jenkins.nodes) == {AGENT} and set(backend.agents) == {AGENT}  # launch_timeout decides
