"""Context variables as handlers see them: each consumer has its own copy."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

from event_collector import Collector, CollectorQueue, Context, Payload

request_id: contextvars.ContextVar[object] = contextvars.ContextVar(
    "request_id", default=None
)


async def test_concurrent_handlers_do_not_see_each_others_values() -> None:
    """Values set by handlers running at once on different consumers stay
    apart, including consumers the monitor starts in one growth."""
    release = asyncio.Event()
    waiting = 0
    all_waiting = asyncio.Event()
    seen: dict[int, object] = {}

    async def handler(payload: Payload[int], ctx: Context) -> None:
        nonlocal waiting
        request_id.set(payload.value)
        waiting += 1
        if waiting == 8:
            all_waiting.set()
        await release.wait()
        seen[payload.value] = request_id.get()

    async with CollectorQueue(
        [Collector("h", handler)], max_consumers=20, logging=False
    ) as queue:
        publisher = queue.get_publisher()
        events = [await publisher.send(n) for n in range(8)]
        await asyncio.wait_for(all_waiting.wait(), 10)
        assert queue.consumer_count() >= 8
        release.set()
        for event in events:
            await event.wait()
    assert seen == {n: n for n in range(8)}


async def test_handlers_see_what_was_set_before_the_queue_started() -> None:
    """The consumers' contexts are copies of the context that started the
    queue; a later change there does not reach them."""
    seen: list[object] = []

    async def handler(payload: Payload[Any], ctx: Context) -> None:
        seen.append(request_id.get())

    token = request_id.set("before start")
    try:
        async with CollectorQueue([Collector("h", handler)], logging=False) as queue:
            request_id.set("after start")
            event = await queue.get_publisher().send(1)
            await event.wait()
    finally:
        request_id.reset(token)
    assert seen == ["before start"]


async def test_a_handlers_value_stays_in_its_own_consumer() -> None:
    """On a single consumer, what one event's handler sets is still set for
    the next event it takes (as the docs warn), and the sender's context is
    untouched."""
    seen: list[object] = []

    async def handler(payload: Payload[int], ctx: Context) -> None:
        seen.append(request_id.get())
        request_id.set(payload.value)

    async with CollectorQueue(
        [Collector("h", handler)], max_consumers=1, logging=False
    ) as queue:
        publisher = queue.get_publisher()
        for n in range(3):
            await (await publisher.send(n)).wait()
        assert request_id.get() is None
    assert seen == [None, 0, 1]
