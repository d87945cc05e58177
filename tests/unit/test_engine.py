"""The engine's pass over in-memory fakes: outcomes are folded into memory, an unexpected error
in one action is a launch failure (not a crashed pass), durations come from the monotonic clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentpool.config import Config, load_config_text
from agentpool.engine import Engine
from agentpool.errors import ErrorKind, System
from agentpool.logs import clear_secrets
from agentpool.report import Hooks
from tests.unit.fakes import FakeBackend, FakeJenkins

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
    min_idle: 1
"""


class Recorder(Hooks):
    def __init__(self) -> None:
        self.api_errors: list[tuple[System, ErrorKind]] = []

    def api_error(self, system: System, kind: ErrorKind) -> None:
        self.api_errors.append((system, kind))


class Clock:
    def __init__(self, start: float, step: float) -> None:
        self.now, self.step = start, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    yield
    clear_secrets()


@pytest.fixture
def config() -> Config:
    return load_config_text(CONFIG, "agentpool.yaml")


def engine_with(
    config: Config, jenkins: FakeJenkins, backend: FakeBackend, hooks: Hooks | None = None
) -> Engine:
    return Engine(
        config,
        hooks,
        clock=Clock(1_700_000_000.0, 0.001),
        monotonic=Clock(50.0, 2.0),
        backend=lambda host: backend,
        jenkins=lambda cfg: jenkins,
    )


def test_a_pass_provisions_through_the_backend_and_remembers_the_agent(config: Config) -> None:
    jenkins, backend = FakeJenkins(), FakeBackend("local")
    engine = engine_with(config, jenkins, backend)
    report = engine.run_pass()
    assert report.ok and [o.ok for o in report.outcomes] == [True]
    assert set(engine.memory.agents) == set(jenkins.nodes) == set(backend.agents)
    # the monotonic clock advances 2 s per reading and is read twice: start and end
    assert report.duration == pytest.approx(2.0)


def test_an_unexpected_error_in_an_action_is_a_launch_failure_not_a_crash(config: Config) -> None:
    jenkins, backend = FakeJenkins(), FakeBackend("local")
    hooks = Recorder()
    engine = engine_with(config, jenkins, backend, hooks)
    backend.fail("start_agent", KeyError("bug"))
    report = engine.run_pass()
    assert [o.error_kind for o in report.outcomes] == [ErrorKind.UNEXPECTED]
    assert engine.memory.agents == {} and jenkins.nodes == {} and backend.volumes == {}
    assert engine.memory.pools["dind"].consecutive_failures == 1
    assert hooks.api_errors == []  # not a failed API call: nothing to count per system


def test_a_failed_api_call_is_counted_with_its_system_and_kind(config: Config) -> None:
    jenkins, backend = FakeJenkins(), FakeBackend("local")
    hooks = Recorder()
    engine = engine_with(config, jenkins, backend, hooks)
    jenkins.fail("create_node", kind=ErrorKind.FORBIDDEN)
    engine.run_pass()
    assert hooks.api_errors == [(System.JENKINS, ErrorKind.FORBIDDEN)]


def test_a_restarted_daemon_logs_each_agent_it_adopts_once(
    config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    jenkins, backend = FakeJenkins(), FakeBackend("local")
    first = engine_with(config, jenkins, backend)
    first.run_pass()
    first.close()
    (agent,) = backend.agents
    caplog.clear()
    caplog.set_level("INFO", logger="agentpool")
    again = engine_with(config, jenkins, backend)  # the same engine and controller, a new boot
    again.run_pass()
    again.run_pass()
    again.close()
    events = [(r.getMessage(), getattr(r, "agent", None)) for r in caplog.records]
    assert events.count(("adopted", agent)) == 1, events
    assert ("online", agent) not in events and ("provisioned", agent) not in events
    adopted = next(r for r in caplog.records if r.getMessage() == "adopted")
    assert (getattr(adopted, "pool", None), getattr(adopted, "connected", None)) == ("dind", True)
