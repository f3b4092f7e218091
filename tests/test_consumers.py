"""The consumer pool on its own: consume, count, grow, shrink, stop."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from conftest import FakeClock, Gate
from event_collector._consumers import CONSUMER_NAME, ConsumerPool, current_owner
from event_collector._eventqueue import EventQueue
from event_collector._log import get_logger
from event_collector._measure import Meters
from event_collector._metrics import LoadAverage, RateMeter, ServiceWindow
from event_collector.data import Error, Ok, Payload, ResultList
from event_collector.exceptions import EventCancelled
from event_collector.publisher import CollectorEvent
from event_collector.types import EventObserver

Route = Callable[[Payload[Any]], Any]


class Harness:
    """A pool over an open queue, with a fake clock and its own windows."""

    def __init__(self, route: Route, clock: FakeClock) -> None:
        self.queue = EventQueue()
        self.queue.open()
        self.clock = clock
        self.service = ServiceWindow(10)
        self.wait = ServiceWindow(10)
        meters = Meters(
            service_times=self.service,
            wait_times=self.wait,
            load_average=LoadAverage(1.0, clock=clock),
            arrivals=RateMeter(1.0, clock=clock),
            departures=RateMeter(1.0, clock=clock),
        )
        self.observers: list[EventObserver] = []
        self.owner = object()
        self.pool = ConsumerPool(
            self.queue,
            route,
            clock=clock,
            meters=meters,
            log=get_logger(True),
            owner=self.owner,
            observers=self.observers,
        )

    def put(self, value: Any) -> CollectorEvent[Any]:
        event = CollectorEvent(Payload(value), 100, self.clock())
        self.queue.put_nowait(event)
        return event


async def echo_route(payload: Payload[Any]) -> ResultList:
    return ResultList([Ok(payload.value)])


MakeHarness = Callable[[Route], Harness]


@pytest.fixture
async def make_harness(clock: FakeClock) -> AsyncIterator[MakeHarness]:
    """Harnesses on the test's clock; their pools are stopped after the test,
    however it ended."""
    made: list[Harness] = []

    def make(route: Route) -> Harness:
        made.append(Harness(route, clock))
        return made[-1]

    try:
        yield make
    finally:
        for h in made:
            await h.pool.stop()


@pytest.fixture
def harness(make_harness: MakeHarness) -> Harness:
    return make_harness(echo_route)


async def test_consumers_answer_events_and_count_them(harness: Harness) -> None:
    harness.pool.grow(2)
    assert harness.pool.size == 2
    events = [harness.put(i) for i in range(5)]
    results = [await e.wait() for e in events]
    assert results == [[Ok(i)] for i in range(5)]
    assert harness.pool.finished == 5
    assert harness.pool.busy == 0
    assert harness.pool.is_idle()
    assert repr(harness.pool) == "<ConsumerPool consumers=2 busy=0>"


async def test_busy_counts_running_handlers(make_harness: MakeHarness) -> None:
    gate = Gate()
    h = make_harness(gate.route)
    h.pool.grow(3)
    events = [h.put(i) for i in range(4)]
    await gate.until_running(3)
    assert h.pool.busy == 3
    assert h.queue.qsize() == 1
    assert not h.pool.is_idle()
    gate.open()
    for e in events:
        await e.wait()
    assert h.pool.busy == 0


async def test_service_and_wait_times_use_the_clock(
    make_harness: MakeHarness, clock: FakeClock
) -> None:
    gate = Gate()
    h = make_harness(gate.route)
    event = h.put(1)  # sent at 0
    clock.now = 1.0
    h.pool.grow(1)
    await gate.until_running(1)  # started at 1
    clock.now = 4.0
    gate.open()
    await event.wait()  # finished at 4
    assert h.service.mean() == pytest.approx(3.0)
    assert h.wait.mean() == pytest.approx(4.0)
    assert (event.started_at, event.finished_at) == (1.0, 4.0)


async def test_router_exception_becomes_an_error_and_consumer_lives(
    make_harness: MakeHarness,
) -> None:
    async def route(payload: Payload[Any]) -> ResultList:
        if payload.value == "bad":
            raise RuntimeError("router broke")
        return ResultList([Ok(payload.value)])

    h = make_harness(route)
    h.pool.grow(1)
    bad, good = h.put("bad"), h.put("good")
    failure = (await bad.wait()).first()
    assert isinstance(failure, Error)
    assert isinstance(failure.err, RuntimeError)
    assert await good.wait() == [Ok("good")]
    assert h.pool.size == 1
    assert h.pool.finished == 2


async def test_non_result_list_answers_are_coerced(make_harness: MakeHarness) -> None:
    async def route(payload: Payload[Any]) -> Any:
        return payload.value

    h = make_harness(route)
    h.pool.grow(1)
    tuple_answer = h.put((Ok(1), 2))
    plain_answer = h.put("plain")
    result_answer = h.put(Error("e"))
    assert await tuple_answer.wait() == [Ok(1), Ok(2)]
    assert await plain_answer.wait() == [Ok("plain")]
    coerced = await result_answer.wait()
    assert isinstance(coerced, ResultList)
    assert isinstance(coerced[0], Error)


async def test_current_owner_is_set_inside_consumers(
    make_harness: MakeHarness,
) -> None:
    seen: list[object | None] = []

    async def route(payload: Payload[Any]) -> ResultList:
        seen.append(current_owner.get())
        return ResultList([Ok(None)])

    h = make_harness(route)
    h.pool.grow(1)
    await h.put(1).wait()
    assert seen == [h.owner]
    assert current_owner.get() is None, "the test's own context is untouched"


async def test_shrink_retires_only_idle_consumers(make_harness: MakeHarness) -> None:
    gate = Gate()
    h = make_harness(gate.route)
    h.pool.grow(3)
    await asyncio.sleep(0)  # let the consumers reach their idle wait
    busy_event = h.put("held")
    await gate.until_running(1)
    retired = h.pool.shrink(5)
    assert retired == 2, "the busy consumer is not retired"
    assert h.pool.size == 1
    gate.open()
    assert await busy_event.wait() == [Ok("held")]
    await h.pool.stop()
    assert h.pool.size == 0


async def test_a_retired_consumer_passes_on_the_event_it_was_woken_for(
    make_harness: MakeHarness,
) -> None:
    """A put wakes the longest-idle consumer; if the pool retires that one
    before it runs, the event goes to another idle consumer, not nowhere."""
    h = make_harness(echo_route)
    h.pool.grow(2)
    await asyncio.sleep(0)  # both consumers wait, the first one longest
    event = h.put("woken")  # wakes the first consumer...
    assert h.pool.shrink(1) == 1  # ...which is retired before it runs
    async with asyncio.timeout(10):
        assert await event.wait() == [Ok("woken")]
    assert h.pool.size == 1


async def test_stop_answers_running_events_with_event_cancelled(
    make_harness: MakeHarness,
) -> None:
    gate = Gate()  # never opened
    h = make_harness(gate.route)
    h.pool.grow(1)
    event = h.put(1)
    await gate.until_running(1)
    await h.pool.stop()
    answer = (await event.wait()).first()
    assert isinstance(answer, Error)
    assert isinstance(answer.err, EventCancelled)
    assert "running" in str(answer.err)
    assert h.pool.size == 0
    assert h.pool.busy == 0
    h.pool.grow(2)
    assert h.pool.size == 0, "a stopped pool does not grow"


async def test_wait_idle(make_harness: MakeHarness) -> None:
    gate = Gate()
    h = make_harness(gate.route)
    await asyncio.wait_for(h.pool.wait_idle(), 10)  # idle already
    h.pool.grow(1)
    h.put(1)
    h.put(2)
    waiter = asyncio.ensure_future(h.pool.wait_idle())
    await asyncio.sleep(0)
    assert not waiter.done()
    gate.open()
    await asyncio.wait_for(waiter, 10)
    assert h.pool.is_idle()


async def test_observers_see_every_answered_event_and_failures_are_logged(
    harness: Harness,
) -> None:
    seen: list[Any] = []

    def broken(event: CollectorEvent[Any]) -> None:
        raise ValueError("observer broke")

    harness.observers.extend([broken, lambda e: seen.append(e.get_result())])
    harness.pool.grow(1)
    with capture_logs() as logs:
        await harness.put(1).wait()
        await harness.put(2).wait()
    assert seen == [[Ok(1)], [Ok(2)]]
    failures = [e for e in logs if e["event"] == "event observer failed"]
    assert len(failures) == 2
    assert isinstance(failures[0]["exc_info"], ValueError)


eager_only = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="eager tasks arrived in Python 3.12"
)


@eager_only
async def test_grow_starts_handlers_before_it_returns(
    make_harness: MakeHarness,
) -> None:
    gate = Gate()
    h = make_harness(gate.route)
    events = [h.put(i) for i in range(3)]
    h.pool.grow(4)
    # No trip through the loop: each new consumer took its event at once.
    assert gate.order == [0, 1, 2]
    assert h.pool.busy == 3
    assert h.pool.size == 4
    gate.open()
    assert [await e.wait() for e in events] == [[Ok(i)] for i in range(3)]


@pytest.mark.parametrize(
    "why", ["not eager", "task factory"] if sys.version_info >= (3, 12) else ["3.11"]
)
async def test_grow_without_eager_start_waits_for_the_loop(
    make_harness: MakeHarness, why: str
) -> None:
    started: list[object] = []

    async def route(payload: Payload[Any]) -> ResultList:
        started.append(payload.value)
        return ResultList([Ok(payload.value)])

    loop = asyncio.get_running_loop()
    h = make_harness(route)
    event = h.put("x")
    if why == "task factory":
        # An application's own factory is respected: tasks go through it.
        made: list[asyncio.Task[Any]] = []

        def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> Any:
            task = asyncio.Task(coro, loop=loop, **kw)
            made.append(task)
            return task

        loop.set_task_factory(factory)
        try:
            h.pool.grow(1)
        finally:
            loop.set_task_factory(None)
        assert len(made) == 1
    else:
        h.pool.grow(1, eager=why == "3.11")
    assert started == []
    assert await event.wait() == [Ok("x")]
    assert started == ["x"]


def test_a_loop_with_its_own_create_task_makes_the_consumers() -> None:
    """The pool creates its tasks directly only on a loop whose create_task
    is asyncio's own; a loop that overrides it (to trace tasks, say) gets
    every non-eager consumer through it."""
    names: list[str | None] = []

    class TracingLoop(asyncio.SelectorEventLoop):
        def create_task(self, coro: Any, **options: Any) -> Any:
            names.append(options.get("name"))
            return super().create_task(coro, **options)

    async def main() -> None:
        h = Harness(echo_route, FakeClock())
        try:
            h.pool.grow(2, eager=False)
            assert await h.put("traced").wait() == [Ok("traced")]
        finally:
            await h.pool.stop()

    with asyncio.Runner(loop_factory=TracingLoop) as runner:
        runner.run(main())
    assert names.count(CONSUMER_NAME) == 2
