"""The library: the same workload through ``event_collector.redis``.

A worker runs a :class:`~event_collector.CollectorQueue` on a
:class:`~event_collector.redis.RedisTransport` with one collector, the
trivial handler, and a fixed pool of :data:`CONSUMERS` consumers (the
transport fetches as many entries as consumers are idle, so the pool plays
the part of the floor's ``COUNT 100``). The publisher is the transport's
:meth:`~event_collector.redis.RedisTransport.publisher`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from event_collector import Collector, CollectorEvent, CollectorQueue, Context, Ok
from event_collector import Payload as EventPayload
from event_collector.redis import RedisPublisher, RedisTransport

from ._drive import Client

__all__ = ["CONSUMERS", "connect", "work"]

CONSUMERS = 100


async def handle(payload: EventPayload[Any], ctx: Context) -> Any:
    """The trivial handler: the answer is the payload's value."""
    return payload.value


async def work(url: str, stream: str, consumer: str, ready: Callable[[], None]) -> None:
    """Serve ``stream`` until cancelled; call ``ready()`` once the queue
    runs. (The transport names its consumer itself: ``consumer`` is unused.)"""
    transport = RedisTransport(url, stream=stream)
    async with CollectorQueue(
        [Collector("noop", handle)],
        transport=transport,
        autoscale=False,
        min_consumers=CONSUMERS,
        max_consumers=CONSUMERS,
        logging=False,
    ):
        ready()
        await asyncio.Event().wait()


class LibraryClient:
    """:class:`~benchmarks.redis_bench._drive.Client` over a
    :class:`~event_collector.redis.RedisPublisher`."""

    def __init__(self, publisher: RedisPublisher) -> None:
        self._publisher = publisher

    async def send(
        self, payloads: list[dict[str, int]]
    ) -> Sequence[CollectorEvent[Any]]:
        """``send_many`` the batch."""
        return await self._publisher.send_many(payloads)

    async def wait(self, event: CollectorEvent[Any]) -> Any:
        """The lone collector's answer, unwrapped from its ``Ok``. (No
        timeout per event, as the floor has none: the publisher's time
        limit covers a hang.)"""
        results = await event.wait()
        result = results.first()
        if not isinstance(result, Ok):
            raise AssertionError(f"the event was answered {result!r}")
        return result.value


@asynccontextmanager
async def connect(url: str, stream: str) -> AsyncIterator[Client[Any]]:
    """A :class:`LibraryClient` on a started publisher of ``stream``."""
    async with RedisTransport(url, stream=stream).publisher() as publisher:
        yield LibraryClient(publisher)
