"""docs/grafana-dashboard.json and docs/alerts.yaml name only what agentpool exports.

A renamed metric or label would leave a dashboard panel empty and an alert silent without
anyone noticing: this test reads both files, and checks every metric and label they select
against a real exposition of :class:`agentpool.service.metrics.Metrics`, and that every metric
family exported is shown or alerted on somewhere.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from agentpool.service.metrics import HostSnapshot, Metrics
from agentpool.service.recent import PHASES

DOCS = Path(__file__).resolve().parents[2] / "docs"
NAME = re.compile(r"\bagentpool_[a-z0-9_]+")
SELECTOR = re.compile(r"\b(agentpool_[a-z0-9_]+)\{([^}]*)\}")
MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")


def exported() -> tuple[dict[str, set[str]], set[str]]:
    """Sample name → its label names, and the family names, of a Metrics that saw one of everything."""
    m = Metrics(["p"])
    m.set_agents({("p", "busy"): 1})
    m.set_waiting({"docker": 2})
    m.set_unserved({("p", "cap"): 1})
    m.set_pools({"p": {"max_agents": 3.0, "backoff": 0.0, "draining": 0.0}})
    m.set_hosts({"h": HostSnapshot(agents=1, room=2, health="ok", cooling_pools=0, images={"img": True})})
    m.observe_online("p", 4.0)
    for phase in PHASES:
        m.observe_phase("p", phase, 10.0)
    m.observe_pass(0.1)
    m.pass_succeeded(1.0)
    m.launch_failed("p")
    m.api_error("docker", "timeout")
    m.reaped("p", "idle-timeout")
    m.provisioned("p")
    m.pass_overrun()
    m.set_in_flight({"launch": 1}, {"local": 2})
    samples: dict[str, set[str]] = {}
    families: set[str] = set()
    for family in text_string_to_metric_families(m.exposition().decode()):
        families.add(family.name)
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(k for k in sample.labels if k != "le")
    return samples, families


def _exprs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            elif key == "query" and isinstance(value, dict | str):
                yield from _exprs(value) if isinstance(value, dict) else [value]
            else:
                yield from _exprs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _exprs(value)


def dashboard_exprs() -> list[str]:
    return list(_exprs(json.loads((DOCS / "grafana-dashboard.json").read_text())))


def alert_rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load((DOCS / "alerts.yaml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


def test_every_metric_and_label_the_dashboard_and_alerts_select_is_exported() -> None:
    samples, _ = exported()
    exprs = dashboard_exprs() + [r["expr"] for r in alert_rules()]
    assert len(exprs) > 15
    for expr in exprs:
        for name in NAME.findall(expr):
            assert name in samples, f"{name} (in {expr!r}) is not exported; exported: {sorted(samples)}"
        for name, matchers in SELECTOR.findall(expr):
            for label in MATCHER.findall(matchers):
                assert label in samples[name], f"{name} has no label {label!r} (in {expr!r})"


def test_every_exported_family_is_on_the_dashboard() -> None:
    _, families = exported()
    shown = {n for expr in dashboard_exprs() for n in NAME.findall(expr)}
    for family in families - {f for f in families if f.endswith("_created")}:  # creation times
        assert any(n == family or n.startswith(family + "_") for n in shown), f"{family} is on no panel"


def test_the_alerts_cover_cap_launch_failures_backoff_and_stale_passes() -> None:
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert rule["labels"]["severity"] in ("info", "warning", "critical")
        assert rule["annotations"]["summary"]
    by_metric = " ".join(r["expr"] for r in rules)
    for needed in (
        "agentpool_pool_max_agents",
        'agentpool_unserved_items{reason="cap"}',
        "agentpool_launch_failures_total",
        "agentpool_pool_backoff",
        "agentpool_last_successful_pass_timestamp_seconds",
    ):
        assert needed in by_metric, needed
