"""What survives a restart and what a reload may change: daemon id and drain state in the
state directory, reloads that would hide agents, removed hosts drained, launch time counted
on the monotonic clock; the executor never deletes a node that is not really offline."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from agentpool.config import Config, load_config_text
from agentpool.daemon import hiding_change
from agentpool.engine import Engine
from agentpool.executor import Executor
from agentpool.model import (
    LABEL_INSTANCE,
    AgentResource,
    Cordon,
    HostView,
    Memory,
    Provision,
    Reap,
    Reason,
    RemoveOrphan,
    ResourceKind,
    ResourceState,
)
from agentpool.planner import plan, record_provisioned
from agentpool.state import State
from tests.unit.fakes import FakeBackend, FakeJenkins, FakeNode
from tests.unit.planner_builders import T0, agent_name, config, container, node, observed

CONFIG = """jenkins:
  url: http://127.0.0.1:9/
  user: agentpool
  token: not-used
instance: {instance}
docker_hosts:
  - name: local
    url: unix:///nonexistent.sock
  - name: other
    url: unix:///other.sock
pools:
  - name: dind
    labels: [docker]
    image: agentpool/dind-agent:latest
"""
A1 = agent_name("dind", 1)


class ObservingBackend(FakeBackend):
    """A fake host that shows its agents as containers, as a Docker engine does."""

    def observe(self, instance: str, /) -> HostView:
        self._enter("observe")
        containers = tuple(
            AgentResource(self.name, a.id, name, name, a.spec.pool, ResourceState.RUNNING, 0.0, a.spec.volume)
            for name, a in self.agents.items()
            if a.spec.labels.get(LABEL_INSTANCE) == instance
        )
        return HostView(name=self.name, reachable=True, containers=containers)


def load(instance: str = "ap", text: str = CONFIG) -> Config:
    return load_config_text(text.format(instance=instance), "agentpool.yaml")


def engine(cfg: Config, jenkins: FakeJenkins, hosts: Mapping[str, FakeBackend]) -> Engine:
    return Engine(cfg, backend=lambda h: hosts[h.name], jenkins=lambda _: jenkins)


# -- state directory ---------------------------------------------------------------------------


def test_daemon_id_is_stable_and_written_atomically(tmp_path: Path) -> None:
    first = State(str(tmp_path), "ap").daemon_id()
    assert State(str(tmp_path), "ap").daemon_id() == first
    assert State(str(tmp_path), "other").daemon_id() != first
    assert [p.name for p in (tmp_path / "ap").iterdir()] == ["daemon-id"]  # no temporary left


def test_unwritable_state_directory_warns_and_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    state = State(str(blocker), "ap")  # a directory below a file cannot be made
    assert state.daemon_id() == state.daemon_id() != ""
    state.save_draining({"dind"})
    assert state.drained() == (frozenset(), frozenset())
    assert sum("state directory not usable" in r.getMessage() for r in caplog.records) == 1


def test_drain_survives_a_restart_and_the_node_marker_carries_the_daemon_id(tmp_path: Path) -> None:
    cfg = load()
    jenkins, hosts = FakeJenkins(), {"local": FakeBackend("local"), "other": FakeBackend("other")}
    first = engine(cfg, jenkins, hosts)
    first.set_draining("dind", True)
    data = json.loads((Path(first.state.dir) / "state.json").read_text())
    assert data == {"draining": ["dind"]}
    again = engine(cfg, jenkins, hosts)
    assert again.memory.pools["dind"].draining
    assert again.memory.daemon_id == first.memory.daemon_id and again.memory.boot != first.memory.boot
    assert again.executor.marker == f"agentpool:ap:{again.memory.daemon_id}:{again.memory.boot}"
    again.set_draining("dind", False)
    restarted = engine(cfg, jenkins, hosts)
    assert restarted.state.drained().pools == set() and "dind" not in restarted.memory.pools


def test_an_unreadable_state_file_is_warned_about_once_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = State(str(tmp_path), "ap")
    (tmp_path / "ap").mkdir()
    (tmp_path / "ap" / "state.json").write_text('{"draining": ["dind"')
    assert state.drained() == (frozenset(), frozenset())
    assert sum("state file unreadable" in r.getMessage() for r in caplog.records) == 1
    (tmp_path / "ap" / "state.json").write_text('{"draining": "dind", "draining_hosts": ["h", 3]}')
    assert state.drained() == (frozenset(), frozenset({"h"}))  # a string is not a list of pools


def test_a_drained_host_stays_drained_after_a_restart(tmp_path: Path) -> None:
    cfg = load()
    jenkins, hosts = FakeJenkins(), {"local": FakeBackend("local"), "other": FakeBackend("other")}
    first = engine(cfg, jenkins, hosts)
    first.set_host_draining("other", True)
    first.set_draining("dind", True)
    data = json.loads((Path(first.state.dir) / "state.json").read_text())
    assert data == {"draining": ["dind"], "draining_hosts": ["other"]}
    again = engine(cfg, jenkins, hosts)
    assert again.memory.hosts["other"].draining and again.memory.pools["dind"].draining
    again.set_host_draining("other", False)
    restarted = engine(cfg, jenkins, hosts)
    assert restarted.state.drained().hosts == set()
    assert "other" not in restarted.memory.hosts or not restarted.memory.hosts["other"].draining


# -- reload ------------------------------------------------------------------------------------


def test_reload_refuses_changes_that_would_hide_agents() -> None:
    old = load()
    assert hiding_change(old, load(), {"local"}) == ""
    assert "instance changed" in hiding_change(old, load("renamed"), set())
    moved = load(text=CONFIG.replace("unix:///nonexistent.sock", "unix:///elsewhere.sock"))
    assert "changed url" in hiding_change(old, moved, {"local"})
    assert hiding_change(old, moved, {"other"}) == ""  # no agent there: nothing to hide


def test_a_removed_host_has_its_agents_drained_then_is_forgotten() -> None:
    cfg = load()
    jenkins, hosts = FakeJenkins(), {"local": ObservingBackend("local"), "other": ObservingBackend("other")}
    eng = engine(cfg, jenkins, hosts)
    eng.memory = record_provisioned(eng.memory, Provision("dind", "other", A1, Reason.DEMAND, ""), 0.0)
    jenkins.nodes[A1] = FakeNode(A1, ["docker"], 1, busy=1, description=eng.executor.marker)
    hosts["other"].agents[A1] = hosts["other"].agents.get(A1) or _agent(hosts["other"], A1)
    without = load(text=CONFIG.replace("  - name: other\n    url: unix:///other.sock\n", ""))
    eng.reconfigure(without)
    assert set(eng.retired) == {"other"}
    eng.run_pass()
    assert A1 in jenkins.nodes and A1 in hosts["other"].agents  # busy: its build goes on
    jenkins.nodes[A1].busy = 0
    eng.run_pass()
    assert A1 not in jenkins.nodes and A1 not in hosts["other"].agents
    assert eng.retired == {} and hosts["other"].closed


def _agent(backend: FakeBackend, name: str) -> object:
    from agentpool.backend import AgentSpec

    backend.start_agent(
        AgentSpec(
            name=name,
            pool="dind",
            image="i",
            volume=f"{name}-docker",
            env={},
            labels={"agentpool.instance": "ap", "agentpool.pool": "dind", "agentpool.agent": name},
        )
    )
    return backend.agents[name]


# -- launch_timeout on the monotonic clock -------------------------------------------------------


def test_launch_timeout_counts_monotonic_time_of_readable_passes_only() -> None:
    cfg = config({"launch_timeout": 60})
    mem = record_provisioned(Memory(), Provision("dind", "h1", A1, Reason.DEMAND, ""), T0)

    def at(ticks: float, jenkins_down: bool = False) -> object:
        obs = observed([], [node(A1, online=False)], [container(A1, created=T0)], jenkins_down=jenkins_down)
        return dataclasses.replace(obs, ticks=ticks)

    p, mem = plan(at(100.0), cfg, mem, T0)  # type: ignore[arg-type]
    # The wall clock steps an hour forward (NTP): 10 s of monotonic time passed.
    p, mem = plan(at(110.0), cfg, mem, T0 + 3600)  # type: ignore[arg-type]
    assert p.actions == () and mem.agents[A1].waited == pytest.approx(10.0)
    # Jenkins unreadable for 100 s: not counted.
    p, mem = plan(at(210.0, jenkins_down=True), cfg, mem, T0 + 3700)  # type: ignore[arg-type]
    p, mem = plan(at(215.0), cfg, mem, T0 + 3705)  # type: ignore[arg-type]
    assert p.actions == () and mem.agents[A1].waited == pytest.approx(15.0)
    p, mem = plan(at(261.0), cfg, mem, T0 + 3751)  # type: ignore[arg-type]
    [reap] = p.actions
    assert isinstance(reap, Reap) and reap.reason is Reason.LAUNCH_TIMEOUT


# -- never delete a node that is not really offline -------------------------------------------


@pytest.fixture
def executor() -> tuple[Executor, FakeJenkins, FakeBackend]:
    jenkins, backend = FakeJenkins(), FakeBackend("local")
    return Executor(load(), jenkins, {"local": backend}), jenkins, backend


def test_a_reap_racing_an_admin_who_brings_the_node_back_never_deletes_it(
    executor: tuple[Executor, FakeJenkins, FakeBackend],
) -> None:
    ex, jenkins, backend = executor
    jenkins.nodes[A1] = FakeNode(A1, ["docker"], 1)
    _agent(backend, A1)
    jenkins.racing.add(A1)
    outcome = ex.perform(Reap(A1, "dind", "local", Reason.IDLE_TIMEOUT, "", check_idle=True))
    assert outcome.ok and not outcome.removed and A1 in jenkins.nodes and A1 in backend.agents
    assert not jenkins.nodes[A1].temporarily_offline


def test_an_orphan_node_goes_offline_is_rechecked_then_deleted(
    executor: tuple[Executor, FakeJenkins, FakeBackend],
) -> None:
    ex, jenkins, _ = executor
    action = RemoveOrphan(ResourceKind.NODE, "", A1, Reason.ORPHAN, "")
    jenkins.nodes[A1] = FakeNode(A1, ["docker"], 1, connected=False, busy=1)  # took a build meanwhile
    outcome = ex.perform(action)
    assert outcome.ok and not outcome.removed and not jenkins.nodes[A1].temporarily_offline
    jenkins.nodes[A1].busy = 0
    jenkins.racing.add(A1)
    assert not ex.perform(action).removed and A1 in jenkins.nodes
    jenkins.racing.clear()
    outcome = ex.perform(action)
    assert outcome.ok and outcome.removed and A1 not in jenkins.nodes
    assert jenkins.nodes.get(A1) is None and ex.perform(action).ok  # gone already: done


def test_a_cordon_that_does_not_stay_offline_fails(
    executor: tuple[Executor, FakeJenkins, FakeBackend],
) -> None:
    ex, jenkins, _ = executor
    jenkins.nodes[A1] = FakeNode(A1, ["docker"], 1, busy=1)
    jenkins.racing.add(A1)
    outcome = ex.perform(
        Cordon(A1, "dind", "local", Reason.ONE_SHOT_BUSY, "one-shot agent started its build")
    )
    assert not outcome.ok and "did not stay offline" in outcome.error
    jenkins.racing.clear()
    assert ex.perform(Cordon(A1, "dind", "local", Reason.ONE_SHOT_BUSY, "again")).ok
    assert jenkins.nodes[A1].temporarily_offline
