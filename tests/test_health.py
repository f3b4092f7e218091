"""Tests of the queue's health: ``CollectorQueue.health()``, the monitor's
loop-lag probe, the ASGI liveness and readiness endpoints and the loop-lag
gauges of the Prometheus module."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.routing import Mount

from conftest import FakeClock, Gate, wait_for, wait_reads
from event_collector import (
    Collector,
    CollectorQueue,
    ConfigError,
    Context,
    Health,
    Ok,
    Payload,
    QueueType,
)
from event_collector._health import oldest_sent_at
from event_collector._monitor import MonitorProbe
from event_collector.health import DEFAULT_MAX_LOOP_LAG, health_app, health_routes
from event_collector.prometheus import instrument

FIELDS = {"status", "loop_lag", "loop_lag_max", "monitor_alive", "oldest_event_age"}


def one_consumer(
    processor: Any, clock: FakeClock | None = None, **options: Any
) -> CollectorQueue:
    """A queue of one consumer that never grows, running ``processor``."""
    extra: dict[str, Any] = {} if clock is None else {"clock": clock}
    return CollectorQueue(
        [Collector("c", processor, **options)],
        autoscale=False,
        max_consumers=1,
        logging=False,
        **extra,
    )


# -- the status through a queue's life ------------------------------------------


async def test_the_status_follows_the_queue_from_start_to_stop() -> None:
    setting_up, finish_setup = asyncio.Event(), asyncio.Event()

    @contextlib.asynccontextmanager
    async def slow_setup(ctx: Context) -> AsyncIterator[None]:
        setting_up.set()
        await finish_setup.wait()
        yield

    gate = Gate()
    queue = one_consumer(gate, lifecycle=slow_setup)

    built = queue.health()
    assert built == Health("starting", 0.0, 0.0, False, None)
    assert not built.is_ready
    assert built.is_live()

    starting = asyncio.create_task(queue.init_queue())
    await setting_up.wait()
    during_setup = queue.health()
    assert during_setup.status == "starting"
    assert not during_setup.monitor_alive
    assert during_setup.is_live()

    finish_setup.set()
    await starting
    ready = queue.health()
    assert ready.status == "ready"
    assert ready.monitor_alive
    assert ready.is_ready
    assert ready.is_live()
    # Any thread may ask.
    assert (await asyncio.to_thread(queue.health)).status == "ready"

    event = await queue.get_publisher().send(7)
    await gate.until_running(1)
    shutdown = queue.request_shutdown()
    await wait_for(lambda: queue.state == "closing")
    # The handler holds the drain open: the queue drains, its monitor runs.
    draining = queue.health()
    assert draining.status == "draining"
    assert draining.monitor_alive
    assert not draining.is_ready
    assert draining.is_live()

    gate.open()
    await shutdown
    stopped = queue.health()
    assert stopped.status == "stopped"
    assert not stopped.monitor_alive
    assert not stopped.is_ready
    assert stopped.is_live()
    assert stopped.oldest_event_age is None
    assert (await event).first() == Ok(7)


async def test_a_queue_shut_down_before_it_started_is_stopped() -> None:
    queue = one_consumer(Gate())
    await queue.shut_down_queue()
    assert queue.health().status == "stopped"
    assert not queue.health().monitor_alive


async def test_a_dead_monitor_fails_the_liveness(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gate = Gate()
    async with one_consumer(gate) as queue:

        def broken(now: float, load: float) -> None:
            raise RuntimeError("the monitor breaks")

        monkeypatch.setattr(queue._measurement, "sample", broken)
        await queue.get_publisher().send(1)  # wakes the idle monitor
        await wait_for(lambda: not queue.health().monitor_alive)
        health = queue.health()
        assert health.status == "ready"
        assert not health.is_live()
        assert health.is_ready
        gate.open()


# -- the oldest queued event ----------------------------------------------------


@pytest.mark.parametrize("queue_type", list(QueueType))
async def test_the_oldest_event_age_counts_from_its_send(queue_type: QueueType) -> None:
    clock = FakeClock(100.0)
    gate = Gate()
    queue = CollectorQueue(
        [Collector("c", gate)],
        autoscale=False,
        max_consumers=1,
        queue_type=queue_type,
        logging=False,
        clock=clock,
    )
    async with queue:
        publisher = queue.get_publisher()
        assert queue.health().oldest_event_age is None
        first = await publisher.send(0)
        await gate.until_running(1)
        assert queue.health().oldest_event_age is None  # handled, not queued
        clock.now = 101.0
        second = await publisher.send(1, priority=5)
        clock.now = 103.0
        third = await publisher.send(2, priority=1)
        clock.now = 110.0
        # The second waits longest, whatever the order of taking: on a
        # priority queue it is not the heap's top (the third is).
        assert queue.health().oldest_event_age == pytest.approx(9.0)
        gate.open()
        for event in (first, second, third):
            await event
        assert queue.health().oldest_event_age is None


def test_the_oldest_of_a_deque_is_its_left_and_of_a_heap_its_first_sent() -> None:
    def event(sent_at: float) -> SimpleNamespace:
        return SimpleNamespace(sent_at=sent_at)

    assert oldest_sent_at(deque()) is None
    assert oldest_sent_at(deque([event(1.0), event(2.0)])) == 1.0
    heap: list[tuple[int, int, Any]] = []
    for priority, seq, sent in ((5, 0, 1.0), (1, 1, 2.0), (0, 2, 3.0)):
        heapq.heappush(heap, (priority, seq, event(sent)))
    assert oldest_sent_at(heap) == 1.0
    assert oldest_sent_at([]) is None
    # A flow-controlled collector's released call: its first part's event.
    call = SimpleNamespace(
        parts=[SimpleNamespace(join=SimpleNamespace(event=event(4.0)))]
    )
    assert oldest_sent_at(deque([call, event(5.0)])) == 4.0


# -- the loop lag ---------------------------------------------------------------


async def test_a_blocked_loop_shows_as_loop_lag() -> None:
    clock = FakeClock()
    go = asyncio.Event()
    seen: list[Health] = []

    async def block(payload: Payload[Any], ctx: Context) -> Any:
        await go.wait()
        time.sleep(0.3)  # noqa: ASYNC251 (blocks the loop on purpose)
        # Still blocked: the monitor has not woken, its lateness is live.
        seen.append(queue.health())
        return payload.value

    queue = one_consumer(block, clock)
    async with queue:
        event = await queue.get_publisher().send(1)
        # A busy queue: the monitor looks every monitor_interval, by a timer.
        await wait_reads(clock, 3)
        go.set()
        await event
        # The monitor woke, came late, and went back to sleep until a put.
        await wait_for(lambda: queue._inbox.put_waiter is not None)
        after = queue.health()
    (during,) = seen
    assert during.loop_lag >= 0.25
    assert during.loop_lag_max >= 0.25
    assert during.monitor_alive  # late, not stalled (10 s)
    assert after.loop_lag >= 0.25
    assert after.loop_lag_max >= 0.25
    assert not after.is_live(max_loop_lag=0.25)
    assert after.is_live()


def test_the_probe_measures_how_late_the_monitor_wakes() -> None:
    probe = MonitorProbe(interval=0.01)
    assert probe.stall_after == 10.0
    assert MonitorProbe(interval=1.0).stall_after == 100.0
    probe.deadline = 5.0
    assert probe.overdue(4.0) == 0.0
    assert probe.overdue(5.5) == pytest.approx(0.5)
    probe.woke(5.25)
    assert probe.lag == pytest.approx(0.25)
    assert probe.deadline is None
    assert probe.overdue(6.0) == 0.0  # no timed sleep: not late
    assert probe.peak(5.3) == pytest.approx(0.25)
    probe.deadline = 12.0
    probe.woke(12.1)  # the next 10-second period
    assert probe.lag == pytest.approx(0.1)
    assert probe.peak(12.2) == pytest.approx(0.25)  # the previous period's
    assert probe.peak(21.0) == pytest.approx(0.1)  # that one is gone
    assert probe.peak(35.0) == 0.0
    probe.deadline = 40.0
    probe.woke(39.9999)  # a timer fired within the clock's resolution
    assert probe.lag == 0.0
    probe.woke(50.0)  # woken by a put: nothing asked, nothing measured
    assert probe.lag == 0.0


async def test_a_stalled_or_ended_monitor_is_not_alive() -> None:
    probe = MonitorProbe(interval=0.01)
    assert probe.alive(0.0)  # built, its task not run yet
    task = asyncio.ensure_future(asyncio.sleep(60))
    probe.task = weakref.ref(task)
    probe.deadline = 100.0
    assert probe.alive(105.0)
    assert not probe.alive(110.5)  # more than 10 s late
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    probe.deadline = None
    assert not probe.alive(0.0)


def test_liveness_and_readiness_of_a_health() -> None:
    ready = Health("ready", 0.01, 0.02, True, 3.0)
    assert ready.is_ready
    assert ready.is_live()
    assert ready.as_dict() == {
        "status": "ready",
        "loop_lag": 0.01,
        "loop_lag_max": 0.02,
        "monitor_alive": True,
        "oldest_event_age": 3.0,
    }
    lagging = Health("ready", 0.0, DEFAULT_MAX_LOOP_LAG + 1, True, None)
    assert not lagging.is_live()
    assert lagging.is_live(DEFAULT_MAX_LOOP_LAG + 2)
    assert not Health("draining", 0.0, 0.0, False, None).is_live()
    for status in ("starting", "stopped"):
        assert Health(status, 0.0, 0.0, False, None).is_live()
        assert not Health(status, 0.0, 0.0, False, None).is_ready


# -- the ASGI endpoints ---------------------------------------------------------


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://probe"
    )


async def test_the_starlette_routes_answer_the_probes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gate = Gate()
    queue = one_consumer(gate)
    app = Starlette(routes=health_routes(queue))
    async with client(app) as http:
        live, ready = await http.get("/livez"), await http.get("/readyz")
        assert (live.status_code, ready.status_code) == (200, 503)
        assert ready.json()["status"] == "starting"
        assert set(ready.json()) == FIELDS
        assert ready.headers["content-type"] == "application/json"
        async with queue:
            live, ready = await http.get("/livez"), await http.get("/readyz")
            assert (live.status_code, ready.status_code) == (200, 200)
            assert live.json()["status"] == "ready"
            assert live.json()["monitor_alive"] is True
            head = await http.head("/readyz")
            assert head.status_code == 200
            assert head.content == b""
            assert (await http.post("/livez")).status_code == 405

            def broken(now: float, load: float) -> None:
                raise RuntimeError("the monitor breaks")

            monkeypatch.setattr(queue._measurement, "sample", broken)
            await queue.get_publisher().send(1)
            await wait_for(lambda: not queue.health().monitor_alive)
            live, ready = await http.get("/livez"), await http.get("/readyz")
            assert (live.status_code, ready.status_code) == (503, 200)
            assert live.json()["monitor_alive"] is False
            gate.open()
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "stopped"
        assert (await http.get("/livez")).status_code == 200


async def test_the_plain_asgi_app_serves_its_two_paths_alone_or_mounted() -> None:
    async with one_consumer(Gate()) as queue:
        app = health_app(queue, live_path="/alive", ready_path="/ready")
        async with client(app) as http:
            assert (await http.get("/alive")).status_code == 200
            assert (await http.get("/ready")).json()["status"] == "ready"
            assert (await http.get("/livez")).status_code == 404
        mounted = Starlette(routes=[Mount("/health", app=health_app(queue))])
        async with client(mounted) as http:
            assert (await http.get("/health/readyz")).status_code == 200
            assert (await http.get("/health/livez")).status_code == 200


async def test_the_plain_asgi_app_speaks_the_lifespan_protocol() -> None:
    app = health_app(one_consumer(Gate()))
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for kind in ("lifespan.startup", "lifespan.shutdown"):
        inbox.put_nowait({"type": kind})
    sent: list[str] = []

    async def send(message: Any) -> None:
        sent.append(message["type"])

    await app({"type": "lifespan"}, inbox.get, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_the_endpoints_check_their_arguments() -> None:
    queue = one_consumer(Gate())
    with pytest.raises(
        ConfigError, match=r"live_path must .* \(got live_path='livez'\)"
    ):
        health_routes(queue, live_path="livez")
    with pytest.raises(ConfigError, match="live_path and ready_path must differ"):
        health_app(queue, live_path="/x", ready_path="/x")
    with pytest.raises(ConfigError, match="max_loop_lag must be > 0"):
        health_app(queue, max_loop_lag=0)
    with pytest.raises(ConfigError, match="queue must be a CollectorQueue"):
        health_routes(object())  # type: ignore[arg-type]


# -- Prometheus -------------------------------------------------------------------


def lag_samples(registry: CollectorRegistry) -> dict[str, float]:
    text = generate_latest(registry).decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("event_collector_loop_lag")
        and sample.labels == {"queue": "orders"}
    }


async def test_the_loop_lag_gauges() -> None:
    clock = FakeClock()
    go = asyncio.Event()

    async def block(payload: Payload[Any], ctx: Context) -> Any:
        await go.wait()
        time.sleep(0.2)  # noqa: ASYNC251 (blocks the loop on purpose)
        return payload.value

    queue = one_consumer(block, clock)
    registry = CollectorRegistry()
    exporter = instrument(queue, registry=registry, name="orders")
    assert lag_samples(registry) == {
        "event_collector_loop_lag_seconds": 0.0,
        "event_collector_loop_lag_max_seconds": 0.0,
    }
    async with queue:
        event = await queue.get_publisher().send(1)
        await wait_reads(clock, 3)
        go.set()
        await event
        await wait_for(lambda: queue._inbox.put_waiter is not None)
        samples = lag_samples(registry)
    assert samples["event_collector_loop_lag_seconds"] >= 0.15
    assert samples["event_collector_loop_lag_max_seconds"] >= 0.15
    exporter.unregister()
