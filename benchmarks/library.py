"""The same workloads as :mod:`benchmarks.baselines`, on a CollectorQueue."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import Sequence
from typing import Any

from event_collector import (
    Collector,
    CollectorEvent,
    CollectorQueue,
    Context,
    Ok,
    Payload,
)
from event_collector.types import Processor

from .baselines import paced_sends

__all__ = [
    "library_burst",
    "library_idle",
    "library_latency",
    "library_memory",
    "library_sleepers",
    "library_throughput",
]


def make_queue(processor: Processor, **options: Any) -> CollectorQueue:
    """A queue with one collector running ``processor``; ``logging=False``
    unless given, so that the runner's output stays readable."""
    options.setdefault("logging", False)
    return CollectorQueue([Collector("bench", processor)], **options)


async def _trivial(payload: Payload[Any], ctx: Context) -> Ok[int]:
    return Ok(1)


async def library_throughput(count: int) -> float:
    """Seconds to send ``count`` events to one consumer running a trivial
    handler and await every answer."""
    async with make_queue(
        _trivial, min_consumers=1, max_consumers=1, autoscale=False
    ) as queue:
        return await _send_and_await(queue, count)


async def library_sleepers(count: int, latency: float, max_consumers: int) -> float:
    """Seconds to handle ``count`` events on ``latency``-second sleep handlers,
    the pool autoscaled up to ``max_consumers``."""

    async def sleeper(payload: Payload[Any], ctx: Context) -> int:
        await asyncio.sleep(latency)
        return 1

    async with make_queue(sleeper, max_consumers=max_consumers) as queue:
        return await _send_and_await(queue, count)


async def _send_and_await(queue: CollectorQueue, count: int) -> float:
    """Seconds to send ``count`` events, then await every answer, as
    :func:`benchmarks.baselines.bare_throughput` does."""
    send = queue.get_publisher().send
    start = time.perf_counter()
    events = [await send(i) for i in range(count)]
    for event in events:
        await event.wait()
    return time.perf_counter() - start


async def library_idle(seconds: float, *, after_burst: int = 0) -> tuple[float, float]:
    """CPU seconds and wall seconds of ``seconds`` of idling with a queue at
    default settings that has answered one event (or, with ``after_burst``,
    a burst of that many 10 ms events that grew the pool)."""

    async def sleeper(payload: Payload[Any], ctx: Context) -> int:
        await asyncio.sleep(0.01)
        return 1

    async with make_queue(sleeper) as queue:
        send = queue.get_publisher().send
        events = [await send(i) for i in range(max(1, after_burst))]
        for event in events:
            await event.wait()
        await asyncio.sleep(0.05)  # let the monitor see the queue empty
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        return time.process_time() - cpu, time.perf_counter() - wall


async def library_memory(count: int) -> float:
    """Bytes per queued, unprocessed event (one consumer blocked in its
    handler), beyond the values themselves and the caller's list of events."""
    gate = asyncio.Event()

    async def blocked(payload: Payload[Any], ctx: Context) -> int:
        await gate.wait()
        return 1

    async with make_queue(
        blocked, min_consumers=1, max_consumers=1, autoscale=False
    ) as queue:
        publisher = queue.get_publisher()
        first = await publisher.send(-1)
        # Polled on purpose: the consumer offers nothing to wait on.
        while queue.current_load().busy == 0:  # noqa: ASYNC110
            await asyncio.sleep(0)
        values = list(range(10**6, 10**6 + count))
        events: list[CollectorEvent[Any] | None] = [None] * count
        send = publisher.send
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(count):
                events[i] = await send(values[i])
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        gate.set()
        await first.wait()
        return (after - before) / count


async def library_burst(
    count: int, latency: float, max_consumers: int, consumers_goal: int
) -> tuple[float, float, float, float]:
    """A burst of ``count`` events on ``latency``-second sleep handlers.

    Returns the seconds from the first send to the last answer; two upper
    bounds on the seconds from the first send until the pool held
    ``consumers_goal`` consumers (``inf`` if never): when a task polling
    ``consumer_count()`` on every loop iteration saw it, and when the
    ``consumers_goal``-th handler started; and the queue's
    ``monitor_interval``.

    No handler ends within the first ``latency`` seconds, so that many
    started handlers are that many consumers in the pool. Both bounds are
    kept because each can be late: the poller runs only between loop
    callbacks, and on Python 3.12+ the monitor starts the new consumers,
    and their first handlers, within one callback; before 3.12 a new
    consumer starts its handler only after all the others were created.
    """
    started = 0
    start = 0.0
    polled = handled = float("inf")

    async def sleeper(payload: Payload[Any], ctx: Context) -> int:
        nonlocal started, handled
        started += 1
        if started == consumers_goal:
            handled = time.perf_counter() - start
        await asyncio.sleep(latency)
        return 1

    async with make_queue(sleeper, max_consumers=max_consumers) as queue:

        async def watch() -> None:
            nonlocal polled
            # Checked on every loop iteration, which is the resolution wanted.
            while queue.consumer_count() < consumers_goal:  # noqa: ASYNC110
                await asyncio.sleep(0)
            polled = time.perf_counter() - start

        send = queue.get_publisher().send
        watcher = asyncio.get_running_loop().create_task(watch())
        await asyncio.sleep(0)  # the watcher polls, the first consumer waits
        start = time.perf_counter()
        events = [await send(i) for i in range(count)]
        for event in events:
            await event.wait()
        elapsed = time.perf_counter() - start
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        return elapsed, polled, handled, queue.monitor_interval


async def library_latency(gaps: Sequence[float], service: float) -> list[float]:
    """:func:`benchmarks.baselines.bare_latency` on a queue at default
    settings (autoscaled from one consumer)."""
    starts = [0.0] * len(gaps)

    async def busy(payload: Payload[int], ctx: Context) -> int:
        now = starts[payload.value] = time.perf_counter()
        until = now + service
        while time.perf_counter() < until:
            pass
        return 1

    async with make_queue(busy) as queue:
        sent = await paced_sends(gaps, queue.get_publisher().send)
    return [start - at for start, at in zip(starts, sent, strict=True)]
