"""The publisher's side of every measurement, shared by the floor, the
library and the peers, so that all of them are timed by the same code.

A :class:`Client` has two methods: ``send(payloads)`` puts a batch of
payloads on the broker and returns one handle per payload, and
``wait(handle)`` returns that payload's result. Each payload is
``{"n": i}`` and the trivial handler returns it, so every result is checked
against what was sent.

Two ways of driving a client:

* :func:`drive_window`, at full speed: batches of ``batch`` payloads, at
  most ``window`` sent and not yet answered; the figure is events per
  second from the first send to the last answer.
* :func:`drive_paced`, open loop: each payload is due at a time of a
  Poisson arrival process; whatever is due is sent in one batch, whether
  or not earlier payloads were answered; the figure is the latency from
  the moment each payload was due (so a sender that falls behind is
  charged for it) to the moment its answer was seen.

Both await the answers in the order sent, one task doing so while another
sends, which records an answer that overtook an earlier one when the
earlier one is seen: the same on every side. A handle is dropped once its
answer is seen.

This module needs nothing but the standard library: the peers import it
from their own virtual environments.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

__all__ = [
    "Client",
    "Run",
    "drive_paced",
    "drive_window",
    "payload",
    "poisson_gaps",
]

H = TypeVar("H")


class Client(Protocol[H]):
    """One side's publisher, as the drives use it."""

    async def send(self, payloads: list[dict[str, int]]) -> Sequence[H]:
        """Put ``payloads`` on the broker; return a handle for each."""
        ...

    async def wait(self, handle: H) -> Any:
        """The answer to the payload of ``handle``, once it has come."""
        ...


def payload(index: int) -> dict[str, int]:
    """The payload of the ``index``-th event, and the trivial handler's
    answer to it."""
    return {"n": index}


@dataclasses.dataclass(frozen=True, slots=True)
class Run:
    """What one drive measured."""

    events: int
    seconds: float  # first send (or first due time) to the last answer
    p50_ms: float
    p99_ms: float

    @property
    def events_per_s(self) -> float:
        """Answered events per second."""
        return self.events / self.seconds

    def to_json(self) -> dict[str, float]:
        """The run as a JSON object (the publisher's last line)."""
        return {**dataclasses.asdict(self), "events_per_s": self.events_per_s}


def _quantile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def _summary(started: Sequence[float], answered: Sequence[float]) -> Run:
    latencies = [done - start for start, done in zip(started, answered, strict=True)]
    return Run(
        events=len(latencies),
        seconds=max(answered) - min(started),
        p50_ms=1000 * _quantile(latencies, 0.5),
        p99_ms=1000 * _quantile(latencies, 0.99),
    )


class _Answers:
    """The handles sent so far, and a task that awaits them in order."""

    def __init__(self, client: Client[Any], count: int) -> None:
        self._wait = client.wait
        self._handles: list[Any] = []
        self._more = asyncio.Event()
        self.answered = [0.0] * count
        self.on_answer: Callable[[], object] = lambda: None

    def add(self, handles: Sequence[Any]) -> None:
        self._handles.extend(handles)
        self._more.set()

    async def drain(self) -> None:
        """Await every answer in the order sent; check each."""
        handles, answered, more = self._handles, self.answered, self._more
        for i in range(len(answered)):
            while i >= len(handles):
                more.clear()
                await more.wait()
            result = await self._wait(handles[i])
            answered[i] = time.perf_counter()
            # Let go of it, as a service would: a drive that kept every
            # handle would time the collector of its own heap (each full
            # collection walks every handle kept), heavier for a side whose
            # handles hold more.
            handles[i] = None
            if result != payload(i):
                raise AssertionError(f"event {i} was answered {result!r}")
            self.on_answer()


async def drive_window(
    client: Client[Any], count: int, *, window: int, batch: int
) -> Run:
    """Send ``count`` payloads in batches of ``batch``, never more than
    ``window`` unanswered; await every answer."""
    answers = _Answers(client, count)
    room = asyncio.Semaphore(window)
    answers.on_answer = room.release
    started = [0.0] * count

    async def sends() -> None:
        for first in range(0, count, batch):
            size = min(batch, count - first)
            for _ in range(size):
                await room.acquire()
            payloads = [payload(i) for i in range(first, first + size)]
            now = time.perf_counter()
            handles = await client.send(payloads)
            started[first : first + size] = [now] * size
            answers.add(handles)

    async with asyncio.TaskGroup() as group:
        group.create_task(answers.drain())
        group.create_task(sends())
    return _summary(started, answers.answered)


def poisson_gaps(count: int, rate: float, seed: int = 4) -> list[float]:
    """Seconds between ``count`` arrivals of a Poisson process of ``rate``
    per second; the same seed gives every side the same arrivals."""
    rng = random.Random(seed)
    return [rng.expovariate(rate) for _ in range(count)]


async def drive_paced(client: Client[Any], gaps: Sequence[float], *, batch: int) -> Run:
    """Send payload ``i`` once the first ``i + 1`` of ``gaps`` have passed,
    together with whatever else is due then (``batch`` at most); await
    every answer. Latencies count from each payload's due time."""
    count = len(gaps)
    answers = _Answers(client, count)
    due = [0.0] * count

    async def sends() -> None:
        at = time.perf_counter()
        for i, gap in enumerate(gaps):
            at += gap
            due[i] = at
        i = 0
        while i < count:
            now = time.perf_counter()
            if due[i] > now:
                await asyncio.sleep(due[i] - now)
                now = time.perf_counter()
            end = i + 1
            while end < count and end - i < batch and due[end] <= now:
                end += 1
            answers.add(await client.send([payload(k) for k in range(i, end)]))
            i = end

    async with asyncio.TaskGroup() as group:
        group.create_task(answers.drain())
        group.create_task(sends())
    return _summary(due, answers.answered)
