"""Shared test helpers: a fake monotonic clock, a condition poller, a gated
handler, a test for shutdown answers and a guard on what reaches the event
loop's exception handler."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, settings

from event_collector import Context, Error, EventCancelled, Ok, Payload, ResultList

# Hypothesis times every example (a 200 ms deadline) and the drawing of the
# first ones: on a shared, busy machine either fails a test that has no bug.
# What these tests check does not depend on how fast they run.
settings.register_profile(
    "event-collector",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("event-collector")


class FakeClock:
    """A monotonic clock the test moves by hand; counts how often it is read."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def wait_for(
    condition: Callable[[], bool], *, guard: float = 10.0, poll: float = 0.005
) -> None:
    """Wait until ``condition()`` holds; ``guard`` (seconds) is a bound that fails the
    test, never a way to order events."""
    deadline = time.monotonic() + guard
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not reached within {guard} s: {condition}")
        await asyncio.sleep(poll)


async def wait_reads(clock: FakeClock, count: int = 3) -> None:
    """Wait until something (the queue's monitor, when nothing else runs) has
    read ``clock`` ``count`` more times."""
    target = clock.reads + count
    await wait_for(lambda: clock.reads >= target)


class Gate:
    """A handler that holds every event until the test opens the gate, then
    answers its payload's value.

    ``order`` lists the values in the order the handler took them and
    ``running`` counts the events it holds; :meth:`route` is the same handler
    as a consumer pool's route.
    """

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.running = 0
        self.order: list[Any] = []
        self._started: list[asyncio.Event] = []

    async def __call__(self, payload: Payload[Any], ctx: Context) -> Any:
        return await self._hold(payload)

    async def route(self, payload: Payload[Any]) -> ResultList:
        return ResultList([Ok(await self._hold(payload))])

    async def _hold(self, payload: Payload[Any]) -> Any:
        self.order.append(payload.value)
        self.running += 1
        for started in self._started:
            started.set()
        try:
            await self.opened.wait()
        finally:
            self.running -= 1
        return payload.value

    def open(self) -> None:
        self.opened.set()

    async def until_running(self, count: int, *, guard: float = 10.0) -> None:
        """Wait until the gate holds ``count`` events at once; ``guard`` as in
        :func:`wait_for`."""
        try:
            async with asyncio.timeout(guard):
                while self.running < count:
                    started = asyncio.Event()
                    self._started.append(started)
                    try:
                        await started.wait()
                    finally:
                        self._started.remove(started)
        except TimeoutError:
            pytest.fail(f"{self.running} of {count} handlers running after {guard} s")


def is_cancelled(results: ResultList) -> bool:
    """Whether ``results`` is the shutdown's answer: one ``EventCancelled``."""
    return (
        len(results) == 1
        and isinstance(results[0], Error)
        and isinstance(results[0].err, EventCancelled)
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(autouse=True, scope="session")
def _no_implicit_event_loop() -> None:
    """Mark the main thread as having no event loop before any test runs.

    Otherwise a plugin that asks the policy for the current loop during a
    synchronous test (looptime does) makes the policy create one that nobody
    closes, and its ResourceWarning fails a later test under
    ``filterwarnings = error``.
    """
    asyncio.set_event_loop(None)


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    """Every test starts and ends with structlog's default configuration."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


LoopErrors = list[dict[str, Any]]


@pytest.fixture
async def loop_guard() -> AsyncIterator[LoopErrors]:
    """Record what reaches the loop's exception handler ("Task was destroyed
    but it is pending", "exception was never retrieved", callback errors) and
    check, after the test, that it stayed empty and no task is left."""
    loop = asyncio.get_running_loop()
    errors: LoopErrors = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        yield errors
        await asyncio.sleep(0)
        gc.collect()  # report abandoned tasks and futures now, not later
        await asyncio.sleep(0)
        left = asyncio.all_tasks() - {asyncio.current_task()}
        assert not left, f"tasks left behind: {left}"
        assert errors == [], errors
    finally:
        loop.set_exception_handler(previous)
