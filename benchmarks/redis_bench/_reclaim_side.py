"""The processes of the reclaim measurement (see
:mod:`benchmarks.redis_bench.reclaim`): library workers whose handler
takes a while and answers with the attempt it ran as, and a publisher
that sends at a steady rate and records when each redelivered event was
answered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from event_collector import Collector, CollectorEvent, CollectorQueue, Context, Ok
from event_collector import Payload as EventPayload
from event_collector.redis import RedisTransport

__all__ = ["CONSUMERS", "publish", "work"]

CONSUMERS = 50
ANSWER_TIMEOUT = 60.0  # seconds a publisher waits for one answer


async def work(
    url: str,
    stream: str,
    ready: Callable[[], None],
    *,
    visibility_timeout: float,
    handler_ms: float,
) -> None:
    """Serve ``stream`` until cancelled: each event takes ``handler_ms``
    and is answered with its number and the attempt it ran as."""

    async def handle(payload: EventPayload[Any], ctx: Context) -> Any:
        await asyncio.sleep(handler_ms / 1000)
        return {"n": payload.value["n"], "attempt": payload.attempt}

    transport = RedisTransport(
        url, stream=stream, visibility_timeout=visibility_timeout
    )
    async with CollectorQueue(
        [Collector("slow", handle)],
        transport=transport,
        autoscale=False,
        min_consumers=CONSUMERS,
        max_consumers=CONSUMERS,
        logging=False,
    ):
        ready()
        await asyncio.Event().wait()


async def publish(
    url: str, stream: str, *, rate: float, seconds: float, visibility_timeout: float
) -> dict[str, Any]:
    """Send ``{"n": i}`` at ``rate`` per second for ``seconds``, wait for
    every answer, and say what came back: counts, and for each event that
    ran more than once, when its answer came (``time.monotonic``, which on
    Linux is the same clock in every process) and as which attempt."""
    sent = 0
    errors: list[str] = []
    lost = 0
    first = 0
    redelivered: list[tuple[float, int]] = []

    async def answer(event: CollectorEvent[Any], n: int) -> None:
        nonlocal lost, first
        try:
            results = await event.wait(timeout=ANSWER_TIMEOUT)
        except TimeoutError:
            lost += 1
            return
        result = results.first()
        if not isinstance(result, Ok) or result.value.get("n") != n:
            errors.append(repr(result))
            return
        attempt = int(result.value["attempt"])
        if attempt > 1:
            redelivered.append((time.monotonic(), attempt))
        else:
            first += 1

    transport = RedisTransport(
        url, stream=stream, visibility_timeout=visibility_timeout
    )
    async with transport.publisher() as publisher:
        waits: list[asyncio.Task[None]] = []
        start = time.monotonic()
        while (now := time.monotonic()) - start < seconds:
            due = start + sent / rate
            if due > now:
                await asyncio.sleep(due - now)
            event = await publisher.send({"n": sent})
            waits.append(asyncio.create_task(answer(event, sent)))
            sent += 1
        await asyncio.gather(*waits)
    return {
        "sent": sent,
        "answered_first_time": first,
        "lost": lost,
        "errors": errors[:10],
        "error_count": len(errors),
        "redelivered": redelivered,
    }
