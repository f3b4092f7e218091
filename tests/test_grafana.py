"""The Grafana dashboard in docs/grafana reads only metrics the Prometheus
module exports, under the names and labels it exports them with."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from event_collector import Collector, CollectorQueue, Context, Payload

prometheus_client = pytest.importorskip("prometheus_client")

from event_collector.prometheus import instrument  # noqa: E402

DASHBOARD = Path(__file__).parent.parent / "docs" / "grafana" / "event-collector.json"
NAME = re.compile(r"\b(event_collector_[a-z_]+)\b")
LABELS = re.compile(r"by \(([^)]*)\)")


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(variable["query"]["query"])
    return exprs


async def _exported() -> dict[str, set[str]]:
    """The sample names a real instrumented queue exposes, with their labels."""

    async def handler(payload: Payload[Any], ctx: Context) -> Any:
        if payload.value:
            raise ValueError("one error, so the error counter has a sample")
        return payload.value

    queue = CollectorQueue([Collector("c", handler)], logging=False)
    registry = prometheus_client.CollectorRegistry()
    instrument(queue, registry=registry, name="grafana")
    async with queue:
        publisher = queue.get_publisher()
        for value in (0, 1):
            await (await publisher.send(value))
        exported: dict[str, set[str]] = {}
        for family in registry.collect():
            for sample in family.samples:
                exported.setdefault(sample.name, set()).update(sample.labels)
    return exported


async def test_every_metric_the_dashboard_reads_is_exported() -> None:
    exported = await _exported()
    exprs = _exprs(_dashboard())
    read = {name for expr in exprs for name in NAME.findall(expr)}
    assert read, "the dashboard reads no metric"
    assert read <= set(exported), read - set(exported)
    # Everything the module exports shows somewhere (a histogram by its
    # buckets, a counter by its _total).
    shown = {n.removesuffix("_bucket") for n in read}
    families = {
        n.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
        for n in exported
    }
    missing = {f for f in families if f not in shown and f + "_bucket" not in read}
    assert missing <= {
        "event_collector_mean_service_time_seconds",
        "event_collector_mean_wait_time_seconds",
        "event_collector_departure_rate",
    }, missing
    # Every label a panel groups by is one the metrics carry.
    for expr in exprs:
        names = NAME.findall(expr)
        for group in LABELS.findall(expr):
            for label in (x.strip() for x in group.split(",")):
                if label == "le":
                    continue
                assert any(label in exported[n] for n in names), (label, expr)


def test_the_dashboard_is_well_formed() -> None:
    dashboard = _dashboard()
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"]
        for target in panel["targets"]:
            expr = target["expr"]
            assert expr.count("(") == expr.count(")"), expr
            assert '{queue=~"$queue"}' in expr, expr
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names == ["datasource", "queue"]


async def test_the_collector_panels_draw_a_line_per_collector() -> None:
    exported = await _exported()
    exprs = [e for e in _exprs(_dashboard()) if "event_collector_collector_" in e]
    read = {name for expr in exprs for name in NAME.findall(expr)}
    # The per-collector time histogram and failed-call counter, both read.
    assert read == {
        "event_collector_collector_handler_seconds_bucket",
        "event_collector_collector_errors_total",
    }
    for name in read:
        assert {"queue", "collector"} <= exported[name], (name, exported[name])
    for expr in exprs:
        groups = [{x.strip() for x in g.split(",")} for g in LABELS.findall(expr)]
        assert groups, expr
        assert all({"queue", "collector"} <= g for g in groups), expr
        if expr.startswith("histogram_quantile("):
            assert all("le" in g for g in groups), expr
