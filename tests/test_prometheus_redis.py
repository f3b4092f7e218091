"""Tests of ``instrument_fleet``: a Redis stream's fleet figures, scraped in
the text exposition format from a real Redis server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry

from conftest import Gate
from event_collector import Collector, CollectorQueue
from event_collector.prometheus import FleetCollector, instrument, instrument_fleet
from event_collector.redis import RedisTransport
from prometheus_samples import Samples, scrape
from redis_server import RedisServer, redis_server  # noqa: F401


def of_stream(samples: Samples, stream: str) -> dict[str, float]:
    """The samples labelled ``stream``, by name without the prefix."""
    return {
        name.removeprefix("event_collector_"): v
        for (name, labels), v in samples.items()
        if labels == frozenset({("stream", stream)})
    }


def make_stream(client: redis.Redis, stream: str) -> None:
    """A stream as a fleet leaves it: 3 entries, one of them delivered and
    not acknowledged, 2 dead letters, and one live worker's report (8
    events/s of 0.5 s each, 2 consumers at most)."""
    client.xgroup_create(stream, "event-collector", id="0", mkstream=True)
    for n in range(3):
        client.xadd(stream, {"n": n})
    client.xreadgroup("event-collector", "w1", {stream: ">"}, count=1)
    for n in range(2):
        client.xadd(f"{stream}:dead", {"n": n})
    client.zadd(f"{stream}:workers", {"w1": int(time.time() * 1000)})
    client.hset(
        f"{stream}:worker:w1",
        mapping={
            "consumers": 2,
            "busy": 1,
            "held": 1,
            "arrival_rate": 8.0,
            "departure_rate": 8.0,
            "service_time": 0.5,
            "min_consumers": 1,
            "max_consumers": 2,
            "at": int(time.time() * 1000),
        },
    )
    # A worker that stopped: named in the set, its figures expired.
    client.zadd(f"{stream}:workers", {"gone": int(time.time() * 1000)})


def test_the_fleet_gauges_follow_the_stream(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    client = redis_server.client()
    make_stream(client, "orders")
    registry = CollectorRegistry()
    exporter = instrument_fleet(redis_server.url, stream="orders", registry=registry)
    try:
        figures = of_stream(scrape(registry), "orders")
        assert figures == {
            "fleet_up": 1.0,
            "stream_backlog": 3.0,
            "stream_pending": 1.0,
            "stream_lag": 2.0,
            "stream_dead_letters": 2.0,
            "fleet_workers": 1.0,
            "fleet_arrival_rate": 8.0,
            "fleet_departure_rate": 8.0,
            "fleet_mean_service_time_seconds": 0.5,
            # 8 events/s x 0.5 s = 4 in service, 2 per worker
            "fleet_desired_workers": 2.0,
        }
        assert exporter.last is not None
        assert [w.consumer for w in exporter.last.workers] == ["w1"]

        # Read at each scrape: what changed in Redis shows at once.
        client.xadd("orders", {"n": 3})
        client.hset("orders:worker:w1", "arrival_rate", 20.0)
        figures = of_stream(scrape(registry), "orders")
        assert figures["stream_backlog"] == 4.0
        assert figures["stream_lag"] == 3.0
        assert figures["fleet_desired_workers"] == 5.0
    finally:
        exporter.unregister()
    assert of_stream(scrape(registry), "orders") == {}
    exporter.unregister()  # again: nothing happens


def test_a_redis_that_is_away_gives_up_0_not_a_failed_scrape(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    make_stream(redis_server.client(), "orders")
    registry = CollectorRegistry()
    exporter = instrument_fleet(redis_server.url, stream="orders", registry=registry)
    try:
        assert of_stream(scrape(registry), "orders")["fleet_up"] == 1.0
        redis_server.stop()
        assert of_stream(scrape(registry), "orders") == {"fleet_up": 0.0}
        redis_server.start()  # back, empty (it keeps nothing on disk)
        figures = of_stream(scrape(registry), "orders")
        assert (figures["fleet_up"], figures["stream_backlog"]) == (1.0, 0.0)
    finally:
        exporter.unregister()


def test_streams_share_a_registry_one_label_each(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    client = redis_server.client()
    make_stream(client, "orders")
    client.xadd("mail", {"n": 1})
    registry = CollectorRegistry()
    orders = instrument_fleet(client, stream="orders", registry=registry)
    mail = instrument_fleet(redis_server.url, stream="mail", registry=registry)
    try:
        with pytest.raises(ValueError, match="a stream is already instrumented"):
            instrument_fleet(client, stream="orders", registry=registry)
        other = instrument_fleet(
            client, stream="orders", registry=registry, name="orders-copy"
        )
        other.unregister()
        samples = scrape(registry)
        assert of_stream(samples, "orders")["stream_backlog"] == 3.0
        figures = of_stream(samples, "mail")
        assert figures["stream_backlog"] == 1.0
        assert figures["stream_pending"] == 0.0  # no group yet: nothing pending
        assert figures["fleet_workers"] == 0.0
        assert figures["fleet_desired_workers"] == 1.0  # work, no worker
        mail.unregister()
        assert of_stream(scrape(registry), "mail") == {}
        assert of_stream(scrape(registry), "orders")["stream_backlog"] == 3.0
    finally:
        orders.unregister()
        mail.unregister()
    # The client was the caller's: still open.
    assert client.ping()


def test_a_stream_is_needed(redis_server: RedisServer) -> None:  # noqa: F811
    with pytest.raises(ValueError, match="stream must be a non-empty str"):
        instrument_fleet(redis_server.url, registry=CollectorRegistry())


async def until(condition: Callable[[], bool], *, guard: float = 30.0) -> None:
    async with asyncio.timeout(guard):
        # Polled: the figures are what the worker writes to Redis.
        while not await asyncio.to_thread(condition):  # noqa: ASYNC110
            await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_a_live_worker_seen_through_its_transport(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    # The transport gives the URL, the stream and its keys; a queue on it
    # and the fleet share one registry without a clash.
    gate = Gate()
    transport = RedisTransport(
        redis_server.url, stream="jobs", dead_letter_stream="jobs-dead"
    )
    queue = CollectorQueue(
        [Collector("gate", gate)],
        autoscale=False,
        max_consumers=2,
        logging=False,
        transport=transport,
    )
    registry = CollectorRegistry()
    fleet: FleetCollector = instrument_fleet(transport, registry=registry)
    queue_exporter = instrument(queue, registry=registry, name="jobs")
    redis_server.client().xadd("jobs-dead", {"n": 1})
    events: list[Any] = []
    try:
        async with queue:
            publisher = queue.get_publisher()
            events = [await publisher.send(n) for n in range(3)]
            await gate.until_running(2)

            def seen() -> bool:
                figures = of_stream(scrape(registry), "jobs")
                return figures.get("fleet_workers") == 1.0 and (
                    figures["stream_pending"],
                    figures["stream_lag"],
                ) == (2.0, 1.0)

            await until(seen)
            samples = scrape(registry)
            figures = of_stream(samples, "jobs")
            assert figures["stream_backlog"] == 3.0
            assert figures["stream_dead_letters"] == 1.0
            assert figures["fleet_desired_workers"] >= 1.0
            busy = ("event_collector_busy_consumers", frozenset({("queue", "jobs")}))
            assert samples[busy] == 2.0
            gate.open()
            for event in events:
                await event.wait(timeout=30)
    finally:
        gate.open()
        fleet.unregister()
        queue_exporter.unregister()
    assert fleet.stream == "jobs"
    assert repr(fleet) == "<FleetCollector stream='jobs'>"
