"""The pass' pause of the cyclic collector: nested and concurrent pauses, and a collector that
someone else had turned off, are left as they were; the engine pauses it for observe and plan."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from agentpool.config import load_config_text
from agentpool.engine import Engine
from agentpool.gcpause import collector_paused
from agentpool.model import Node, QueueItem
from tests.unit.fakes import FakeBackend, FakeJenkins


@pytest.fixture(autouse=True)
def _collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_the_collector_resumes_after_the_outermost_pause() -> None:
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled(), "the inner pause must not resume it"
    assert gc.isenabled()


def test_a_collector_turned_off_before_stays_off() -> None:
    gc.disable()
    with collector_paused():
        pass
    assert not gc.isenabled()


def test_an_exception_still_resumes_the_collector() -> None:
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_overlapping_pauses_in_two_threads_resume_once_both_end() -> None:
    inside, release = threading.Event(), threading.Event()

    def other() -> None:
        with collector_paused():
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=other)
    thread.start()
    assert inside.wait(5)
    with collector_paused():
        pass
    assert not gc.isenabled(), "the other thread's pass is still running"
    release.set()
    thread.join(5)
    assert gc.isenabled()


class SeeingJenkins(FakeJenkins):
    def __init__(self) -> None:
        super().__init__()
        self.collector_during_reads: list[bool] = []

    def read_nodes(self) -> tuple[Node, ...]:
        self.collector_during_reads.append(gc.isenabled())
        return super().read_nodes()

    def read_queue(self, nodes: tuple[Node, ...], /) -> tuple[QueueItem, ...]:
        self.collector_during_reads.append(gc.isenabled())
        return super().read_queue(nodes)


def test_a_pass_reads_with_the_collector_paused_and_resumes_it() -> None:
    config = load_config_text(
        "jenkins: {url: 'http://127.0.0.1:9/', user: a, token: t}\n"
        "docker_hosts: [{name: local, url: 'unix:///nonexistent.sock'}]\n"
        "pools: [{name: dind, labels: [docker], image: agentpool/dind-agent:latest}]\n",
        "agentpool.yaml",
    )
    jenkins, backend = SeeingJenkins(), FakeBackend("local")
    engine = Engine(config, None, backend=lambda host: backend, jenkins=lambda cfg: jenkins)
    try:
        assert engine.run_pass().ok
    finally:
        engine.close()
    assert jenkins.collector_during_reads == [False, False]
    assert gc.isenabled()
