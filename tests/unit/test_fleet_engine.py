"""The engine over several fake hosts: a refusing host cools down while another serves, images
are brought in the background with progress in ``status``, hosts gone from the config stay
until drained, ``drain --host`` over HTTP, and the hosts' metrics."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import pytest
import requests
from pydantic import SecretStr

from agentpool.config import Config, DockerHostConfig, load_config_text
from agentpool.engine import Engine
from agentpool.hostimages import RETRY_AFTER, ImageKeeper, Progress
from agentpool.logs import clear_secrets
from agentpool.model import HostView, Provision
from agentpool.report import Hooks
from agentpool.service.http import ServiceHTTP
from agentpool.service.layer import ServiceLayer
from agentpool.service.metrics import Metrics
from tests.unit.fakes import FakeBackend, FakeJenkins

ADMIN = "fleet-admin-token"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
CONFIG = """jenkins:
  url: http://127.0.0.1:9/
  user: agentpool
  token: not-used
docker_hosts:
  - {name: a, url: "unix:///a.sock", max_agents: 3}
  - {name: b, url: "unix:///b.sock", max_agents: 3}
pools:
  - name: dind
    labels: [docker]
    image: img
    min_idle: 1
"""


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    yield
    clear_secrets()


class ImageHost(FakeBackend):
    """A fake host that has the images in ``images`` (all when None)."""

    def __init__(self, name: str, images: set[str] | None = None) -> None:
        super().__init__(name)
        self.images = images

    def image_present(self, image: str, /) -> bool:
        self._enter("image_present")
        return self.images is None or image in self.images


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def engine_with(
    config: Config,
    backends: dict[str, FakeBackend],
    keeper: ImageKeeper | None = None,
    hooks: Hooks | None = None,
) -> Engine:
    return Engine(
        config,
        hooks,
        clock=Clock(1_700_000_000.0),
        backend=lambda host: backends[host.name],
        jenkins=lambda cfg: FakeJenkins(),
        images=keeper,
    )


def test_a_refusing_host_cools_down_and_the_other_serves() -> None:
    config = load_config_text(CONFIG, "c.yaml")
    a, b = ImageHost("a"), ImageHost("b")
    a.fail("start_agent", times=5)
    engine = engine_with(config, {"a": a, "b": b})
    report = engine.run_pass()
    [outcome] = report.outcomes
    assert isinstance(outcome.action, Provision) and outcome.action.host == "a" and not outcome.ok
    assert engine.memory.cooldowns[("a", "dind")].failures == 1
    assert engine.memory.pools["dind"].backoff_until == 0.0
    report = engine.run_pass()
    assert [(o.action.host, o.ok) for o in report.outcomes if isinstance(o.action, Provision)] == [
        ("b", True)
    ]
    hosts = engine.status()["hosts"]
    assert hosts["a"]["health"] == "cooling" and "injected failure" in hosts["a"]["cooling"]["dind"]["error"]
    assert hosts["b"]["health"] == "ok" and hosts["b"]["agents"] == 1 and hosts["b"]["room"] == 2


def test_a_missing_image_is_brought_in_the_background_and_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config_text(CONFIG, "c.yaml")
    a, b = ImageHost("a", {"img"}), ImageHost("b", set())
    release = threading.Event()
    calls: list[tuple[str, str, list[str], str | None]] = []

    def transfer(
        target: DockerHostConfig,
        image: str,
        sources: Sequence[DockerHostConfig],
        archive: str | None,
        p: Progress,
    ) -> str:
        calls.append((target.name, image, [s.name for s in sources], archive))
        p(10 << 20, 40 << 20)
        release.wait(10)
        b.images = {"img"}
        return "copied from a"

    keeper = ImageKeeper(transfer)
    engine = engine_with(config, {"a": a, "b": b}, keeper)
    report = engine.run_pass()
    assert [h.images for h in report.observed.hosts] == [frozenset({"img"}), frozenset()]
    thread = keeper.threads[("b", "img")]
    for _ in range(100):
        if keeper.states()["b"]["img"].done:
            break
        threading.Event().wait(0.01)
    assert engine.status()["hosts"]["b"]["images"] == {"img": {"state": "transferring", "detail": "10/42 MB"}}
    assert calls == [("b", "img", ["a"], None)]
    release.set()
    thread.join(10)
    report = engine.run_pass()
    assert [h.images for h in report.observed.hosts] == [frozenset({"img"})] * 2
    assert engine.status()["hosts"]["b"]["images"]["img"] == {"state": "present", "detail": "copied from a"}


def test_a_failed_transfer_is_retried_later_and_transfer_off_only_reports() -> None:
    config = load_config_text(CONFIG, "c.yaml")
    b = ImageHost("b", set())
    clock = Clock(100.0)
    attempts: list[float] = []

    def transfer(*_: object) -> str:
        attempts.append(clock.now)
        raise RuntimeError("no source")

    keeper = ImageKeeper(transfer, clock=clock)
    views = [HostView("b", True)]
    keeper.annotate(config, {"b": b}, views)
    keeper.threads[("b", "img")].join(5)
    assert keeper.states()["b"]["img"].state == "failed"
    assert "no source" in keeper.states()["b"]["img"].detail
    keeper.annotate(config, {"b": b}, views)
    assert attempts == [100.0]
    clock.now += RETRY_AFTER
    keeper.annotate(config, {"b": b}, views)
    keeper.threads[("b", "img")].join(5)
    assert attempts == [100.0, 100.0 + RETRY_AFTER]
    off = load_config_text(CONFIG + "image_transfer: false\n", "c.yaml")
    quiet = ImageKeeper(transfer)
    [view] = quiet.annotate(off, {"b": b}, views)
    assert view.images == frozenset() and not quiet.threads
    assert quiet.states()["b"]["img"].state == "missing"


def test_a_host_removed_from_the_config_is_kept_until_its_agents_are_gone() -> None:
    config = load_config_text(CONFIG, "c.yaml")
    a, b = ImageHost("a"), ImageHost("b")
    engine = engine_with(config, {"a": a, "b": b})
    engine.run_pass()
    [agent] = engine.memory.agents.values()
    assert agent.host == "a"
    engine.reconfigure(
        load_config_text(
            CONFIG.replace('  - {name: a, url: "unix:///a.sock", max_agents: 3}\n', ""), "c.yaml"
        )
    )
    assert set(engine.hosts) == {"a", "b"} and a.closed == 0
    assert engine.status()["hosts"]["a"]["health"] == "removed"
    engine.memory.agents.clear()
    engine.run_pass()
    assert "a" not in engine.hosts and a.closed == 1


def test_drain_and_resume_a_host_over_http() -> None:
    config = load_config_text(CONFIG, "c.yaml")
    listen = config.metrics.model_copy(update={"listen": "127.0.0.1:0", "admin_token": SecretStr(ADMIN)})
    layer = ServiceLayer(config.model_copy(update={"metrics": listen}))
    engine = engine_with(config, {"a": ImageHost("a"), "b": ImageHost("b")}, hooks=layer)
    layer.start(engine)
    assert layer.http is not None
    base = layer.http.url
    try:
        answer = requests.post(f"{base}/drain?host=a", headers=AUTH, timeout=5)
        assert answer.status_code == 200 and answer.json() == {"hosts": ["a"]}
        assert engine.status()["hosts"]["a"]["draining"] is True
        engine.run_pass()
        assert [a.host for a in engine.memory.agents.values()] == ["b"]
        assert requests.post(f"{base}/drain?host=zz", headers=AUTH, timeout=5).json() == {
            "error": "no docker host named 'zz'"
        }
        both = requests.post(f"{base}/drain?host=a&pool=dind", headers=AUTH, timeout=5)
        assert both.status_code == 400
        assert requests.post(f"{base}/resume?host=a", headers=AUTH, timeout=5).status_code == 200
        assert engine.status()["hosts"]["a"]["draining"] is False
        text = requests.get(f"{base}/metrics", timeout=5).text
        assert 'agentpool_host_agents{host="b"} 1.0' in text
        assert 'agentpool_host_room{host="b"} 2.0' in text
        assert 'agentpool_host_health{host="a",state="draining"} 1.0' in text
        assert 'agentpool_host_image_present{host="b",image="img"} 1.0' in text
    finally:
        layer.stop()


def test_http_without_host_callbacks_says_so() -> None:
    http = ServiceHTTP(
        "127.0.0.1:0", Metrics(), lambda: (True, "ok"), dict, lambda p: {}, lambda p: {}, admin_token=ADMIN
    )
    http.start()
    try:
        answer = requests.post(f"{http.url}/drain?host=a", headers=AUTH, timeout=5)
        assert answer.status_code == 404 and "cannot drain hosts" in answer.json()["error"]
    finally:
        http.stop()
