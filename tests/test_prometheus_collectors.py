"""Tests of the per-collector metrics of event_collector.prometheus: each
collector's handler time histogram and failed-call counter, scraped from a
real registry, and what ``event-collector top`` makes of them."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, start_http_server
from rich.console import Console

from conftest import FakeClock
from event_collector import (
    BatchCollector,
    Collector,
    CollectorQueue,
    Context,
    Error,
    EventCancelled,
    Ok,
    Payload,
    Retry,
)
from event_collector._top_service import ServiceFrame, ServiceWatch
from event_collector._top_view import render_service
from event_collector.prometheus import instrument
from prometheus_samples import Samples, scrape

GUARD = 30.0  # seconds; a guard that fails the test, never a way to order
HANDLER = "event_collector_collector_handler_seconds"
ERRORS = "event_collector_collector_errors_total"


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def calls(samples: Samples, queue: str, collector: str) -> float:
    return value(samples, HANDLER + "_count", queue=queue, collector=collector)


def spent(samples: Samples, queue: str, collector: str) -> float:
    return value(samples, HANDLER + "_sum", queue=queue, collector=collector)


def errors(samples: Samples, queue: str, collector: str) -> float:
    return value(samples, ERRORS, queue=queue, collector=collector)


def collectors_of(samples: Samples, name: str) -> set[str]:
    return {
        v for n, labels in samples if n == name for k, v in labels if k == "collector"
    }


# -- the two metrics ---------------------------------------------------------------


@pytest.mark.looptime
async def test_each_collector_has_its_own_time_and_errors() -> None:
    async def slow(payload: Payload[Any], ctx: Context) -> Any:
        await asyncio.sleep(0.4)
        return payload.value

    async def failing(payload: Payload[Any], ctx: Context) -> Any:
        await asyncio.sleep(0.02)
        if payload.value % 2:
            return Error(KeyError(payload.value))  # an Error returned
        raise ValueError(payload.value)  # an exception raised

    registry = CollectorRegistry()
    queue = CollectorQueue(
        [Collector("slow", slow), Collector("failing", failing)],
        max_consumers=4,
        logging=False,
        clock=asyncio.get_running_loop().time,  # the handlers' loop time
    )
    exporter = instrument(queue, registry=registry, name="orders")
    n = 6
    async with queue:
        publisher = queue.get_publisher()
        async with asyncio.timeout(GUARD):
            results = [await (await publisher.send(i)) for i in range(n)]
        after = scrape(registry)
    exporter.unregister()

    for i, found in enumerate(results):
        assert found[0] == Ok(i)
        assert isinstance(found[1], Error)
        assert found[1].collector == "failing"
    assert calls(after, "orders", "slow") == calls(after, "orders", "failing") == n
    assert errors(after, "orders", "failing") == n
    assert errors(after, "orders", "slow") == 0
    # Loop time: each slow call took 0.4 s, each failing one 0.02 s.
    assert spent(after, "orders", "slow") == pytest.approx(0.4 * n, abs=1e-3)
    assert spent(after, "orders", "failing") == pytest.approx(0.02 * n, abs=1e-3)
    bucket = HANDLER + "_bucket"
    took_long = {"queue": "orders", "collector": "slow"}
    fail = {"queue": "orders", "collector": "failing"}
    assert value(after, bucket, le="0.25", **took_long) == 0
    assert value(after, bucket, le="0.5", **took_long) == n
    assert value(after, bucket, le="0.01", **fail) == 0
    assert value(after, bucket, le="0.025", **fail) == n
    assert value(after, bucket, le="+Inf", **fail) == n


async def test_the_lone_collector_the_consumers_call_themselves_is_counted() -> None:
    clock = FakeClock(100.0)

    async def handle(payload: Payload[Any], ctx: Context) -> Any:
        clock.advance(0.25)
        n: int = payload.value
        if n % 3 == 0:
            return Error("a multiple of 3")
        if n % 5 == 0:
            raise ValueError(n)
        return n

    collector = Collector("only", handle)
    registry = CollectorRegistry()
    queue = CollectorQueue(
        [collector], autoscale=False, max_consumers=1, logging=False, clock=clock
    )
    exporter = instrument(queue, registry=registry, name="q")
    async with queue:
        # The path these calls take: the consumers call the collector
        # themselves, not through the router.
        assert queue._engine.pool._locals.direct is collector
        publisher = queue.get_publisher()
        before = scrape(registry)
        async with asyncio.timeout(GUARD):
            results = [await (await publisher.send(i)) for i in range(1, 11)]
        after = scrape(registry)
    exporter.unregister()

    # No series before the first call.
    assert not collectors_of(before, HANDLER + "_count")
    assert not collectors_of(before, ERRORS)
    assert [r[0].collector for r in results] == ["only"] * 10
    assert calls(after, "q", "only") == 10
    assert spent(after, "q", "only") == 2.5  # ten calls of 0.25 s
    assert errors(after, "q", "only") == 5  # 3, 6, 9 returned; 5, 10 raised


@pytest.mark.looptime
async def test_a_timeout_is_a_failed_call() -> None:
    never = asyncio.Event()

    async def stuck(payload: Payload[Any], ctx: Context) -> Any:
        await never.wait()

    registry = CollectorRegistry()
    queue = CollectorQueue(
        [Collector("stuck", stuck, timeout=0.5)],
        logging=False,
        clock=asyncio.get_running_loop().time,
    )
    exporter = instrument(queue, registry=registry, name="q")
    async with queue:
        async with asyncio.timeout(GUARD):
            [result] = await (await queue.get_publisher().send(1))
        after = scrape(registry)
    exporter.unregister()

    assert isinstance(result, Error)
    assert isinstance(result.err, TimeoutError)
    assert calls(after, "q", "stuck") == 1
    assert errors(after, "q", "stuck") == 1
    assert spent(after, "q", "stuck") == pytest.approx(0.5, abs=1e-3)


async def test_each_attempt_of_a_retried_call_counts() -> None:
    attempts = 0

    async def flaky(payload: Payload[Any], ctx: Context) -> Any:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionError(attempts)
        return attempts

    retry = Retry(attempts=5, backoff=0, jitter=False)
    registry = CollectorRegistry()
    queue = CollectorQueue([Collector("flaky", flaky, retry=retry)], logging=False)
    exporter = instrument(queue, registry=registry, name="q")
    async with queue:
        async with asyncio.timeout(GUARD):
            [result] = await (await queue.get_publisher().send(1))
        after = scrape(registry)
    exporter.unregister()

    assert result == Ok(3)
    assert calls(after, "q", "flaky") == 3
    assert errors(after, "q", "flaky") == 2


async def test_a_handler_the_shutdown_cancels_is_a_failed_call() -> None:
    started = asyncio.Event()

    async def stuck(payload: Payload[Any], ctx: Context) -> Any:
        started.set()
        await asyncio.Event().wait()

    registry = CollectorRegistry()
    queue = CollectorQueue(
        [Collector("stuck", stuck)],
        autoscale=False,
        max_consumers=1,
        consumer_shutdown_timeout=0.01,
        logging=False,
    )
    exporter = instrument(queue, registry=registry, name="q")
    async with queue:
        event = await queue.get_publisher().send(1)
        async with asyncio.timeout(GUARD):
            await started.wait()
    after = scrape(registry)
    exporter.unregister()

    [result] = await event
    assert isinstance(result, Error)
    assert isinstance(result.err, EventCancelled)
    assert calls(after, "q", "stuck") == 1
    assert errors(after, "q", "stuck") == 1


@pytest.mark.looptime
async def test_a_batch_is_one_call_and_fails_once() -> None:
    batches: list[list[int]] = []

    async def insert(payloads: list[Payload[Any]], ctx: Context) -> Sequence[Any]:
        values = [p.value for p in payloads]
        batches.append(values)
        await asyncio.sleep(0.1)
        if 0 in values:
            return values[1:]  # one result short: every payload fails
        if 5 in values:
            raise ValueError(values)
        return [Error("two") if v == 2 else v for v in values]

    registry = CollectorRegistry()
    queue = CollectorQueue(
        [BatchCollector("insert", insert, max_size=2, max_wait=1.0)],
        max_consumers=8,
        logging=False,
        clock=asyncio.get_running_loop().time,
    )
    exporter = instrument(queue, registry=registry, name="q")
    async with queue:
        publisher = queue.get_publisher()
        events = [publisher.send_nowait(i) for i in range(8)]
        async with asyncio.timeout(GUARD):
            results = [await event for event in events]
        after = scrape(registry)
    exporter.unregister()

    assert sorted(v for batch in batches for v in batch) == list(range(8))
    assert len(batches) >= 4  # at most two to a batch
    failed = [b for b in batches if {0, 2, 5} & set(b)]
    assert calls(after, "q", "insert") == len(batches)
    assert spent(after, "q", "insert") == pytest.approx(0.1 * len(batches), abs=1e-3)
    # Per call: a batch with a failed payload counts once, however many of
    # its payloads failed.
    assert errors(after, "q", "insert") == len(failed) < len(batches)
    # The payloads' own answers: all of a batch that raised or answered
    # short, payload 2 alone of its batch.
    answered = {i for i, r in enumerate(results) if isinstance(r[0], Error)}
    whole = [b for b in batches if {0, 5} & set(b)]
    assert answered == {v for b in whole for v in b} | {2}


async def test_unregister_stops_counting() -> None:
    clock = FakeClock(0.0)

    async def handle(payload: Payload[Any], ctx: Context) -> Any:
        clock.advance(1.0)
        raise ValueError(payload.value)

    collector = Collector("c", handle)
    registry = CollectorRegistry()
    queue = CollectorQueue([collector], logging=False, clock=clock)
    exporter = instrument(queue, registry=registry, name="q")
    async with queue:
        publisher = queue.get_publisher()
        await (await publisher.send(1))
        exporter.unregister()
        gone = scrape(registry)
        await (await publisher.send(2))
        # Instrumented anew, under the same name: the new probe counts from
        # zero, and the old one counts no more.
        again = instrument(queue, registry=registry, name="q")
        await (await publisher.send(3))
        fresh = scrape(registry)
        again.unregister()
    assert collector._probed is None  # no probe left on the collector
    old = {m.name: m for m in exporter.collect()}
    [old_errors] = old["event_collector_collector_errors"].samples
    assert old_errors.value == 1
    assert old_errors.labels == {"queue": "q", "collector": "c"}
    assert not collectors_of(gone, HANDLER + "_count")
    assert calls(fresh, "q", "c") == 1
    assert errors(fresh, "q", "c") == 1
    assert spent(fresh, "q", "c") == 1.0


# -- what event-collector top shows ------------------------------------------------


@contextmanager
def served(registry: CollectorRegistry) -> Iterator[str]:
    """``registry`` served by prometheus_client's own HTTP server, on a free
    port of 127.0.0.1; yields the metrics URL."""
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(GUARD)


def rows(
    frame: ServiceFrame, watch: ServiceWatch, *, width: int = 200
) -> dict[str, list[str]]:
    """The table rows of the rendered view: first cell -> the other cells."""
    with open(os.devnull, "w") as devnull:
        console = Console(record=True, width=width, file=devnull)
        console.print(
            render_service(frame, watch.history, window=watch.window, width=watch.width)
        )
        text = console.export_text()
    found = {}
    for line in text.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) >= 2:
            found[cells[0]] = cells[1:]
    return found


async def test_top_shows_each_collectors_error_rate_and_latency() -> None:
    clock = FakeClock(0.0)

    def handler(seconds: float, fails: bool) -> Any:
        async def handle(payload: Payload[Any], ctx: Context) -> Any:
            clock.advance(seconds)
            if fails and payload.value % 2:
                raise ValueError(payload.value)
            return payload.value

        return handle

    registry = CollectorRegistry()
    queue = CollectorQueue(
        [
            Collector("fast", handler(0.01, False)),
            Collector("flaky", handler(0.2, True)),
        ],
        logging=False,
        clock=clock,
    )
    exporter = instrument(queue, registry=registry, name="orders")
    watch_clock = FakeClock(0.0)
    try:
        async with queue:
            with served(registry) as url:
                watch = ServiceWatch(url, window=120.0, width=40, clock=watch_clock)
                first = await asyncio.to_thread(watch.poll)
                publisher = queue.get_publisher()
                async with asyncio.timeout(GUARD):
                    for i in range(8):
                        await (await publisher.send(i))
                watch_clock.advance(2.0)
                second = await asyncio.to_thread(watch.poll)
    finally:
        exporter.unregister()

    assert "collector" not in rows(first, watch)  # nothing called yet
    (orders,) = second.queues
    figures = {c.name: c for c in orders.collectors}
    assert sorted(figures) == ["fast", "flaky"]
    assert figures["flaky"].calls_rate == 4.0  # 8 calls in 2 s
    assert figures["flaky"].error_rate == 2.0  # 1, 3, 5, 7
    assert figures["flaky"].error_share == 0.5
    assert figures["flaky"].latency == pytest.approx(0.2)
    assert figures["fast"].error_rate == 0.0
    assert figures["fast"].latency == pytest.approx(0.01)
    view = rows(second, watch)
    # calls/s, errors/s, errors per call, ..., mean latency, sparkline
    assert view["flaky"][:3] == ["4.0/s", "2.0/s", "50.0 %"]
    assert view["flaky"][-2] == "200.0 ms"
    assert view["fast"][:3] == ["4.0/s", "0.0/s", "0.0 %"]
    assert view["fast"][-2] == "10.0 ms"
    # A narrow terminal keeps every figure whole (the sparklines' headers
    # give way first).
    narrow = rows(second, watch, width=60)
    assert narrow["flaky"][:3] == ["4.0/s", "2.0/s", "50.0 %"]
    assert "200.0 ms" in narrow["flaky"]
