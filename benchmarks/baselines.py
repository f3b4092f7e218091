"""The floors the library is compared with: bare asyncio, no library.

A :class:`BarePool` is the hand-written alternative a user would otherwise
write: an ``asyncio.Queue`` of ``(value, future)`` pairs and a fixed number
of worker tasks, each awaiting the handler and resolving the future.
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

__all__ = [
    "BarePool",
    "bare_burst",
    "bare_latency",
    "bare_memory",
    "bare_throughput",
    "empty_idle",
]

Handler = Callable[[Any], Awaitable[Any]]


class BarePool:
    """``workers`` tasks serving one ``asyncio.Queue``, a future per item."""

    __slots__ = ("_handler", "_loop", "_queue", "_tasks")

    def __init__(self, handler: Handler, workers: int) -> None:
        self._handler = handler
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[Any, asyncio.Future[Any]]] = asyncio.Queue()
        self._tasks = [self._loop.create_task(self._work()) for _ in range(workers)]

    async def _work(self) -> None:
        get = self._queue.get
        handler = self._handler
        while True:
            value, fut = await get()
            fut.set_result(await handler(value))

    async def send(self, value: Any) -> asyncio.Future[Any]:
        """Queue ``value``; the future resolves to the handler's answer."""
        fut = self._loop.create_future()
        await self._queue.put((value, fut))
        return fut

    async def close(self) -> None:
        """Cancel the workers and wait for them."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def bare_throughput(count: int, handler: Handler, workers: int = 1) -> float:
    """Send ``count`` values, await every answer; return the seconds taken."""
    pool = BarePool(handler, workers)
    # The workers wait in get() before the clock starts (a just-started
    # queue's first consumers take their first step after it: microseconds).
    await asyncio.sleep(0)
    send = pool.send
    start = time.perf_counter()
    futures = [await send(i) for i in range(count)]
    for fut in futures:
        await fut
    elapsed = time.perf_counter() - start
    await pool.close()
    return elapsed


async def bare_burst(
    count: int, latency: float, workers: int, consumers_goal: int
) -> float:
    """Seconds from the first send to the last answer of a burst of ``count``
    values on ``latency``-second sleep handlers and ``workers`` workers.

    Like :func:`benchmarks.library.library_burst`, it runs a task that polls
    on every loop iteration until ``consumers_goal`` handlers have started,
    so that both sides pay for a poller in the same window.
    """
    started = 0

    async def handler(value: Any) -> int:
        nonlocal started
        started += 1
        await asyncio.sleep(latency)
        return 1

    async def watch() -> None:
        while started < consumers_goal:  # noqa: ASYNC110
            await asyncio.sleep(0)

    watcher = asyncio.get_running_loop().create_task(watch())
    elapsed = await bare_throughput(count, handler, workers)
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    return elapsed


async def empty_idle(seconds: float) -> tuple[float, float]:
    """CPU seconds and wall seconds of a loop that does nothing for
    ``seconds`` (the cost of the loop itself)."""
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    return time.process_time() - cpu, time.perf_counter() - wall


async def bare_memory(count: int) -> float:
    """Bytes per queued, unprocessed item of a bare pool whose one worker is
    blocked, beyond the values themselves."""
    gate = asyncio.Event()

    async def handler(value: Any) -> int:
        await gate.wait()
        return 1

    pool = BarePool(handler, 1)
    await pool.send(-1)
    await asyncio.sleep(0)  # the worker takes the first item and blocks
    values = list(range(10**6, 10**6 + count))
    futures: list[Any] = [None] * count
    send = pool.send
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            futures[i] = await send(values[i])
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    gate.set()
    await pool.close()
    return (after - before) / count


async def bare_latency(gaps: Sequence[float], service: float) -> list[float]:
    """Send one value after each of ``gaps`` (seconds) to one worker whose
    handler keeps the CPU busy ``service`` seconds; return each item's
    handler start minus its send, in seconds."""
    starts = [0.0] * len(gaps)

    async def handler(index: int) -> int:
        now = starts[index] = time.perf_counter()
        until = now + service
        while time.perf_counter() < until:
            pass
        return 1

    pool = BarePool(handler, 1)
    sent = await paced_sends(gaps, pool.send)
    await pool.close()
    return [start - at for start, at in zip(starts, sent, strict=True)]


async def paced_sends(
    gaps: Sequence[float], send: Callable[[int], Awaitable[Any]]
) -> list[float]:
    """Call ``send(i)`` at the times ``gaps`` add up to, then await every
    answer; return the send times (``time.perf_counter``)."""
    loop = asyncio.get_running_loop()
    sent = [0.0] * len(gaps)
    answers: list[Any] = []
    due = loop.time()
    for i, gap in enumerate(gaps):
        due += gap
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        sent[i] = time.perf_counter()
        answers.append(await send(i))
    for answer in answers:
        await answer
    return sent
