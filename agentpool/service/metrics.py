"""Prometheus metrics of the daemon, in a registry of its own.

What an operator alerts on and graphs (docs/grafana-dashboard.json, docs/alerts.yaml): how
many agents each pool has in which state, its cap and whether it backs off or drains, how
many items wait for which label and which are not served (by pool and reason), how long a build waits from queued to its agent being
online, how long agents spend in each phase of their life (launching, waiting for their first
build, working), how long a pass takes, and counts of provisions, launch failures, reaps (by reason)
and API errors (by system and kind). The daemon reports through explicit methods, so it
never touches prometheus_client itself. The registry is not the process-global one: two
instances (two tests, or a daemon and a test) never share numbers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from agentpool.model import AgentState

SYSTEMS = ("jenkins", "docker")
IN_FLIGHT_KINDS = ("launch", "reap", "cordon", "complete", "orphan")

ONLINE_BUCKETS = (1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0)
LIFECYCLE_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0)
PASS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True, slots=True)
class HostSnapshot:
    """One docker host's numbers of one pass."""

    agents: int
    room: int
    health: str  # ok, unreachable, lost, draining, cooling, removed
    cooling_pools: int
    images: Mapping[str, bool]  # the pools' images: present or not


HEALTH_STATES = ("ok", "cooling", "draining", "unreachable", "lost", "removed")


def _host_families(hosts: Mapping[str, HostSnapshot]) -> Iterator[GaugeMetricFamily]:
    per_host = (
        ("agentpool_host_agents", "Agents of this instance per docker host", "agents"),
        ("agentpool_host_room", "Agents a docker host may still take (max_agents)", "room"),
        (
            "agentpool_host_cooling_pools",
            "Pools a docker host gets no agents of, cooling down after launch failures",
            "cooling_pools",
        ),
    )
    for name, text, field in per_host:
        family = GaugeMetricFamily(name, text, labels=["host"])
        for host, snap in sorted(hosts.items()):
            family.add_metric([host], getattr(snap, field))
        yield family
    family = GaugeMetricFamily(
        "agentpool_host_health",
        "1 for each docker host's health state, 0 for the others",
        labels=["host", "state"],
    )
    for host, snap in sorted(hosts.items()):
        for state in HEALTH_STATES:
            family.add_metric([host, state], 1 if snap.health == state else 0)
    yield family
    family = GaugeMetricFamily(
        "agentpool_host_image_present",
        "1 when a pool's image is on the docker host",
        labels=["host", "image"],
    )
    for host, snap in sorted(hosts.items()):
        for image, present in sorted(snap.images.items()):
            family.add_metric([host, image], 1 if present else 0)
    yield family


POOL_GAUGES = (
    ("max_agents", "agentpool_pool_max_agents", "The pool's max_agents (its cap)"),
    ("backoff", "agentpool_pool_backoff", "1 while the pool is backing off after launch failures"),
    ("draining", "agentpool_pool_draining", "1 while the pool is draining"),
)


class _Snapshots(Collector):
    """Gauges replaced whole each pass: a scrape sees one pass's numbers, never a mix."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.agents: dict[tuple[str, str], int] = {}
        self.waiting: dict[str, int] = {}
        self.unserved: dict[tuple[str, str], int] = {}
        self.pools: dict[str, dict[str, float]] = {}
        self.hosts: dict[str, HostSnapshot] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            agents, waiting = dict(self.agents), dict(self.waiting)
            unserved, pools = dict(self.unserved), dict(self.pools)
            hosts = dict(self.hosts)
        yield from _host_families(hosts)
        family = GaugeMetricFamily(
            "agentpool_agents", "Agents of this instance by pool and state", labels=["pool", "state"]
        )
        for (pool, state), count in sorted(agents.items()):
            family.add_metric([pool, state], count)
        yield family
        family = GaugeMetricFamily(
            "agentpool_waiting_items", "Buildable queue items waiting, by label expression", labels=["label"]
        )
        for label, count in sorted(waiting.items()):
            family.add_metric([label], count)
        yield family
        family = GaugeMetricFamily(
            "agentpool_unserved_items",
            "Waiting items not served this pass, by the pool that would serve them and why "
            "(cap, backoff, draining, hosts-full, no-host, no-image, no-pool, label-unknown)",
            labels=["pool", "reason"],
        )
        for (pool, reason), count in sorted(unserved.items()):
            family.add_metric([pool, reason], count)
        yield family
        for key, name, text in POOL_GAUGES:
            family = GaugeMetricFamily(name, text, labels=["pool"])
            for pool, values in sorted(pools.items()):
                family.add_metric([pool], values.get(key, 0.0))
            yield family


class Metrics:
    """The daemon's metrics; ``registry`` is what ``/metrics`` serves."""

    def __init__(self, pools: Iterable[str] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._snapshots = _Snapshots()
        self.registry.register(self._snapshots)
        r = self.registry
        self._online = Histogram(
            "agentpool_queued_to_online_seconds",
            "Seconds from a build item entering the queue to the agent provisioned for it being online",
            ["pool"],
            buckets=ONLINE_BUCKETS,
            registry=r,
        )
        self._lifecycle = Histogram(
            "agentpool_agent_lifecycle_seconds",
            "Seconds agents spent per phase: launching (provisioned to online), online-to-first-build, "
            "first-build-to-reaped, provisioned-to-reaped",
            ["pool", "phase"],
            buckets=LIFECYCLE_BUCKETS,
            registry=r,
        )
        self._pass = Histogram(
            "agentpool_pass_duration_seconds",
            "Seconds one reconcile pass took (observe, plan, act)",
            buckets=PASS_BUCKETS,
            registry=r,
        )
        self._launch_failures = Counter(
            "agentpool_launch_failures", "Agents that failed to come online or to start", ["pool"], registry=r
        )
        self._api_errors = Counter(
            "agentpool_api_errors",
            "Failed calls to Jenkins or a Docker engine",
            ["system", "kind"],
            registry=r,
        )
        self._reaped = Counter(
            "agentpool_reaped", "Agents removed, by reason", ["pool", "reason"], registry=r
        )
        self._provisioned = Counter("agentpool_provisioned", "Agents provisioned", ["pool"], registry=r)
        self._last_success = Gauge(
            "agentpool_last_successful_pass_timestamp_seconds",
            "Unix time of the end of the last pass that read Jenkins and every engine",
            registry=r,
        )
        self._overruns = Counter(
            "agentpool_pass_overruns",
            "Passes that took longer than poll_interval",
            registry=r,
        )
        self._in_flight = Gauge(
            "agentpool_actions_in_flight",
            "Actions still being performed when the last pass started, by kind",
            ["kind"],
            registry=r,
        )
        self._launch_high_water = Gauge(
            "agentpool_parallel_launches_max",
            "Most launches that ran at once on a docker host since the start (bounded by max_parallel_launches)",
            ["host"],
            registry=r,
        )
        for kind in IN_FLIGHT_KINDS:
            self._in_flight.labels(kind=kind)
        self._declared: tuple[str, ...] = ()
        self.declare_pools(pools)

    def declare_pools(self, pools: Iterable[str]) -> None:
        """The configured pools (again after a reload): they export zeros before their first event."""
        self._declared = tuple(pools)
        for pool in self._declared:
            self._launch_failures.labels(pool=pool)
            self._provisioned.labels(pool=pool)
        with self._snapshots._lock:
            self._snapshots.agents = {**self._zeros(), **self._snapshots.agents}

    def _zeros(self) -> dict[tuple[str, str], int]:
        return {(pool, state.value): 0 for pool in self._declared for state in AgentState}

    def set_agents(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Agents per ``(pool, state)`` this pass; missing combinations of declared pools read 0."""
        fresh = self._zeros()
        fresh.update({(pool, str(state)): int(n) for (pool, state), n in counts.items()})
        with self._snapshots._lock:
            self._snapshots.agents = fresh

    def set_hosts(self, hosts: Mapping[str, HostSnapshot]) -> None:
        with self._snapshots._lock:
            self._snapshots.hosts = dict(hosts)

    def set_waiting(self, counts: Mapping[str, int]) -> None:
        """Waiting items per label expression this pass ("" for unlabelled items)."""
        with self._snapshots._lock:
            self._snapshots.waiting = {label: int(n) for label, n in counts.items()}

    def set_unserved(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Unserved waiting items per ``(pool, reason)`` this pass (pool "" when none matches)."""
        with self._snapshots._lock:
            self._snapshots.unserved = dict(counts)

    def set_pools(self, gauges: Mapping[str, Mapping[str, float]]) -> None:
        """Per pool: ``max_agents``, ``backoff`` and ``draining`` (see :data:`POOL_GAUGES`)."""
        with self._snapshots._lock:
            self._snapshots.pools = {pool: dict(values) for pool, values in gauges.items()}

    def observe_online(self, pool: str, seconds: float) -> None:
        # Queue times come from Jenkins' clock: a skew may make the difference negative.
        self._online.labels(pool=pool).observe(max(0.0, seconds))

    def observe_phase(self, pool: str, phase: str, seconds: float) -> None:
        """One agent's time in one phase of its life (see :data:`agentpool.service.recent.PHASES`)."""
        self._lifecycle.labels(pool=pool, phase=phase).observe(max(0.0, seconds))

    def observe_pass(self, seconds: float) -> None:
        self._pass.observe(max(0.0, seconds))

    def pass_overrun(self) -> None:
        self._overruns.inc()

    def set_in_flight(self, counts: Mapping[str, int], launch_high_water: Mapping[str, int]) -> None:
        """Actions in flight by kind (``IN_FLIGHT_KINDS``) and the launch high-water mark per host."""
        for kind in IN_FLIGHT_KINDS:
            self._in_flight.labels(kind=kind).set(counts.get(kind, 0))
        for host, high in launch_high_water.items():
            self._launch_high_water.labels(host=host).set(high)

    def pass_succeeded(self, when: float) -> None:
        self._last_success.set(when)

    def launch_failed(self, pool: str) -> None:
        self._launch_failures.labels(pool=pool).inc()

    def api_error(self, system: str, kind: str) -> None:
        """``system`` is ``jenkins`` or ``docker``; ``kind`` a short class such as ``timeout``, ``401``."""
        if system not in SYSTEMS:
            raise ValueError(f"unknown system {system!r} for api_error: expected one of {', '.join(SYSTEMS)}")
        self._api_errors.labels(system=system, kind=kind).inc()

    def reaped(self, pool: str, reason: str) -> None:
        self._reaped.labels(pool=pool, reason=str(reason)).inc()

    def provisioned(self, pool: str) -> None:
        self._provisioned.labels(pool=pool).inc()

    def exposition(self) -> bytes:
        """The text format ``/metrics`` answers with."""
        return generate_latest(self.registry)
