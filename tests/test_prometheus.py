"""Tests of event_collector.prometheus: scrape the text exposition format."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from conftest import FakeClock, Gate
from event_collector import Collector, CollectorQueue, Context, Payload
from event_collector.prometheus import QueueCollector, instrument
from prometheus_samples import Samples, scrape


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[("event_collector_" + name, frozenset(labels.items()))]


def make_queue(clock: FakeClock, step: float = 0.25) -> CollectorQueue:
    """One consumer; each handler call takes ``step`` seconds of the fake
    clock; a multiple of 5 raises ValueError, of 7 KeyError."""

    async def handle(payload: Payload[Any], ctx: Context) -> int:
        clock.now += step
        n: int = payload.value
        if n % 5 == 0:
            raise ValueError(n)
        if n % 7 == 0:
            raise KeyError(n)
        return n

    return CollectorQueue(
        [Collector("c", handle)],
        autoscale=False,
        max_consumers=1,
        metrics_warmup_interval=0,
        logging=False,
        clock=clock,
    )


async def test_counters_and_histograms_follow_the_events() -> None:
    clock = FakeClock(100.0)
    registry = CollectorRegistry()
    queue = make_queue(clock)
    exporter = instrument(queue, registry=registry, name="orders")
    async with queue:
        before = scrape(registry)
        assert value(before, "events_processed_total", queue="orders") == 0
        assert value(before, "service_time_seconds_count", queue="orders") == 0
        assert not [k for k in before if k[0] == "event_collector_errors_total"]

        publisher = queue.get_publisher()
        n = 20
        # Sent in one go: all at t=100, handled one after the other.
        events = [publisher.send_nowait(i) for i in range(1, n + 1)]
        for event in events:
            await event.wait()
        after = scrape(registry)
        metrics = queue.get_metrics()
    exporter.unregister()

    assert value(after, "events_processed_total", queue="orders") == n
    value_errors = len([i for i in range(1, n + 1) if i % 5 == 0])
    key_errors = len([i for i in range(1, n + 1) if i % 7 == 0 and i % 5])
    assert value(after, "errors_total", queue="orders", kind="ValueError") == (
        value_errors
    )
    assert value(after, "errors_total", queue="orders", kind="KeyError") == key_errors

    # Every handler took exactly 0.25 s of the fake clock.
    assert value(after, "service_time_seconds_count", queue="orders") == n
    assert value(after, "service_time_seconds_sum", queue="orders") == 0.25 * n
    assert value(after, "service_time_seconds_bucket", queue="orders", le="0.1") == 0
    assert value(after, "service_time_seconds_bucket", queue="orders", le="0.25") == n
    assert value(after, "service_time_seconds_bucket", queue="orders", le="+Inf") == n
    # The i-th event waited for the i handlers before it and its own.
    assert value(after, "wait_time_seconds_sum", queue="orders") == pytest.approx(
        0.25 * n * (n + 1) / 2
    )
    assert value(after, "wait_time_seconds_bucket", queue="orders", le="1.0") == 4
    assert value(after, "wait_time_seconds_bucket", queue="orders", le="+Inf") == n

    # The gauges are the queue's own metrics: 20 events in 5 s of fake time.
    assert value(after, "arrival_rate", queue="orders") == pytest.approx(4.0)
    assert value(after, "departure_rate", queue="orders") == pytest.approx(4.0)
    assert value(after, "mean_service_time_seconds", queue="orders") == 0.25
    assert value(after, "work_in_progress", queue="orders") == pytest.approx(1.0)
    assert value(after, "consumers", queue="orders") == metrics.consumers == 1


async def test_gauges_show_queued_and_busy_events() -> None:
    gate = Gate()
    registry = CollectorRegistry()
    queue = CollectorQueue(
        [Collector("c", gate)], autoscale=False, max_consumers=2, logging=False
    )
    exporter = instrument(queue, registry=registry)
    async with queue:
        publisher = queue.get_publisher()
        events = [publisher.send_nowait(i) for i in range(5)]
        await gate.until_running(2)
        busy = scrape(registry)
        gate.open()
        for event in events:
            await event.wait()
        idle = scrape(registry)
    exporter.unregister()

    assert value(busy, "consumers", queue="default") == 2
    assert value(busy, "busy_consumers", queue="default") == 2
    assert value(busy, "queue_size", queue="default") == 3
    assert value(busy, "load", queue="default") == 2.5
    assert value(busy, "events_processed_total", queue="default") == 0
    assert value(idle, "busy_consumers", queue="default") == 0
    assert value(idle, "queue_size", queue="default") == 0
    assert value(idle, "events_processed_total", queue="default") == 5


async def test_two_queues_share_a_registry() -> None:
    registry = CollectorRegistry()
    clock_a, clock_b = FakeClock(100.0), FakeClock(100.0)
    queue_a, queue_b = make_queue(clock_a), make_queue(clock_b)
    exporter_a = instrument(queue_a, registry=registry, name="a")
    exporter_b = instrument(queue_b, registry=registry, name="b")
    with pytest.raises(ValueError, match="name='a'"):
        instrument(queue_b, registry=registry, name="a")

    async with queue_a, queue_b:
        events = [queue_a.get_publisher().send_nowait(i) for i in (1, 2, 5)]
        events += [queue_b.get_publisher().send_nowait(i) for i in (1, 2, 3, 4, 7)]
        for event in events:
            await event.wait()
        both = scrape(registry)
        exporter_a.unregister()
        exporter_a.unregister()  # a second call does nothing
        only_b = scrape(registry)

    assert value(both, "events_processed_total", queue="a") == 3
    assert value(both, "events_processed_total", queue="b") == 5
    assert value(both, "errors_total", queue="a", kind="ValueError") == 1
    assert value(both, "errors_total", queue="b", kind="KeyError") == 1
    assert ("event_collector_errors_total", frozenset({("queue", "b")})) not in both
    assert not [k for k in only_b if ("queue", "a") in k[1]]
    assert value(only_b, "events_processed_total", queue="b") == 5

    # The last unregister removes the metrics; the name is free again.
    exporter_b.unregister()
    assert not [k for k in scrape(registry) if k[0].startswith("event_collector_")]
    again = instrument(queue_b, registry=registry, name="a")
    assert value(scrape(registry), "events_processed_total", queue="a") == 0
    again.unregister()


async def test_unregister_stops_observing() -> None:
    clock = FakeClock(100.0)
    queue = make_queue(clock)
    exporter = QueueCollector(queue, "solo")
    queue.add_event_observer(exporter.observe)
    async with queue:
        await (await queue.get_publisher().send(1)).wait()
        exporter.unregister()
        await (await queue.get_publisher().send(2)).wait()
    families = {f.name: f for f in exporter.collect()}
    [processed] = families["event_collector_events_processed"].samples
    assert processed.value == 1
    assert processed.labels == {"queue": "solo"}


def test_bad_arguments_are_named() -> None:
    queue = CollectorQueue([Collector("c", lambda p, c: asyncio.sleep(0))])
    with pytest.raises(ValueError, match="name"):
        QueueCollector(queue, "")
    with pytest.raises(ValueError, match="buckets"):
        QueueCollector(queue, "q", buckets=(1.0, 0.5))


def test_missing_prometheus_client_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['prometheus_client'] = None; "
        "import event_collector.prometheus"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert proc.returncode != 0
    assert 'pip install -e ".[prometheus]"' in proc.stderr
