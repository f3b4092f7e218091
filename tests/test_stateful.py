"""A Hypothesis state machine drives a queue through sends with every handler
outcome, pool growth and shrinkage, the passing of time, waiters that get
cancelled, and a shutdown that drains or is cut short.

It runs on a looptime event loop: loop time only moves when every task
waits, so handler timeouts, the drain and the monitor are exact and
thousands of schedules take seconds. Invariant: every accepted event is
answered exactly once, and with what its handler did unless the shutdown
cancelled it.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

import looptime
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from conftest import is_cancelled
from event_collector import (
    Collector,
    CollectorEvent,
    CollectorQueue,
    Context,
    Error,
    Ok,
    Payload,
    QueueClosed,
    QueueFull,
    QueueType,
    ResultList,
)

T = TypeVar("T")

HANDLER_TIMEOUT = 1.0
OUTCOMES = ("return", "raise", "hang", "cancel")
# Loop time a shutdown may take at most: the drain is bounded by the handler
# timeout times the events, which the step count keeps far below this.
SHUTDOWN_GUARD = 600.0

# Answers per event id, filled by the patched CollectorEvent._set_answer.
ANSWERS: collections.Counter[int] = collections.Counter()


class Boom(Exception):
    """What a failing handler raises."""


async def _handler(payload: Payload[Any], ctx: Context) -> Any:
    outcome, duration = payload.value
    if outcome == "hang":
        await asyncio.sleep(3600)
    if outcome == "cancel":
        raise asyncio.CancelledError("the handler gave up")
    await asyncio.sleep(duration)
    if outcome == "raise":
        raise Boom(duration)
    return payload.value


def _matches(outcome: str, results: ResultList, value: Any) -> bool:
    if len(results) != 1:
        return False
    result = results[0]
    if outcome == "return":
        return result == Ok(value)
    if not isinstance(result, Error):
        return False
    expected = {
        "raise": Boom,
        "hang": TimeoutError,
        "cancel": asyncio.CancelledError,
    }[outcome]
    return isinstance(result.err, expected)


class DeliveryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = looptime.new_event_loop(start=0)
        self.loop_errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(
            lambda _loop, context: self.loop_errors.append(context)
        )
        self.queue: CollectorQueue | None = None
        self.accepted: list[CollectorEvent[Any]] = []
        self.observed: collections.Counter[int] = collections.Counter()
        # Waiters on accepted events, each with the event it waits for.
        self.waiters: dict[asyncio.Task[ResultList], CollectorEvent[Any]] = {}
        self.drained = False

    # -- helpers -----------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` inside the loop, as a handler or callback would."""

        async def inside() -> T:
            return fn()

        return self.run(inside())

    def gather(self, awaitables: Iterable[Awaitable[T]]) -> list[T]:
        async def inside() -> list[T]:
            return list(await asyncio.gather(*awaitables))

        return self.run(inside())

    @property
    def q(self) -> CollectorQueue:
        assert self.queue is not None
        return self.queue

    def running(self) -> bool:
        return self.queue is not None and self.queue.is_running

    # -- rules ---------------------------------------------------------------

    @initialize(
        maxsize=st.sampled_from([0, 2, 6]),
        shutdown_timeout=st.sampled_from([0.0, -1.0, 0.5, 3.0]),
        queue_type=st.sampled_from(list(QueueType)),
        autoscale=st.booleans(),
    )
    def start(
        self,
        maxsize: int,
        shutdown_timeout: float,
        queue_type: QueueType,
        autoscale: bool,
    ) -> None:
        queue = CollectorQueue(
            [Collector("c", _handler, timeout=HANDLER_TIMEOUT)],
            autoscale=autoscale,
            min_consumers=1,
            max_consumers=6,
            monitor_interval=0.1,
            queue_type=queue_type,
            consumer_shutdown_timeout=shutdown_timeout,
            maxsize=maxsize,
            clock=self.loop.time,
            logging=False,
        )
        queue.add_event_observer(lambda event: self.observed.update((event.id,)))
        self.queue = queue
        self.run(queue.init_queue())

    @rule(
        outcome=st.sampled_from(OUTCOMES),
        duration=st.sampled_from([0.0, 0.05, 0.3, 0.9]),
        priority=st.integers(0, 3),
    )
    def send(self, outcome: str, duration: float, priority: int) -> None:
        queue = self.q
        try:
            event = queue.get_publisher().send_nowait(
                (outcome, duration), priority=priority
            )
        except QueueFull:
            assert queue.maxsize > 0
            assert queue.current_load().qsize == queue.maxsize
            return
        except QueueClosed:
            assert not queue.is_running
            return
        assert queue.is_running
        self.accepted.append(event)

    @rule(seconds=st.sampled_from([0.0, 0.05, 0.5, 1.5]))
    def let_time_pass(self, seconds: float) -> None:
        self.run(asyncio.sleep(seconds))

    @precondition(lambda self: self.running())
    @rule(count=st.integers(1, 3))
    def scale_up(self, count: int) -> None:
        # The pool itself: the monitor would take its time to follow a load.
        pool = self.q._pool

        def grow() -> None:
            before = pool.size
            pool.grow(count)
            assert pool.size == before + count

        self.call(grow)

    @precondition(lambda self: self.running())
    @rule(count=st.integers(1, 3))
    def scale_down(self, count: int) -> None:
        pool, floor = self.q._pool, self.q.min_consumers

        def shrink() -> None:
            before = pool.size
            # Never below min_consumers: the queue itself never goes there.
            wanted = min(count, before - floor)
            retired = pool.shrink(wanted) if wanted > 0 else 0
            assert 0 <= retired <= max(wanted, 0)
            assert pool.size == before - retired >= floor

        self.call(shrink)

    @precondition(lambda self: bool(self.accepted))
    @rule(data=st.data())
    def wait_for_an_event(self, data: st.DataObject) -> None:
        event = data.draw(st.sampled_from(self.accepted))
        waiter = self.call(lambda: asyncio.create_task(event.wait()))
        self.waiters[waiter] = event

    @precondition(lambda self: any(not w.done() for w in self.waiters))
    @rule(data=st.data())
    def cancel_a_waiter(self, data: st.DataObject) -> None:
        waiter = data.draw(st.sampled_from([w for w in self.waiters if not w.done()]))
        waiter.cancel()
        self.run(asyncio.wait([waiter]))
        assert waiter.done()
        del self.waiters[waiter]

    @precondition(lambda self: self.running())
    @rule(drain=st.booleans())
    def shut_down(self, drain: bool) -> None:
        self.shut_down_now(drain)

    def shut_down_now(self, drain: bool) -> None:
        queue = self.q
        start = self.loop.time()
        if drain:
            self.run(asyncio.wait_for(queue.shut_down_queue(), SHUTDOWN_GUARD))
            self.drained = queue.consumer_shutdown_timeout <= 0
        else:
            # Cut short: the caller is cancelled, the shutdown hurries on.
            caller = self.call(lambda: asyncio.create_task(queue.shut_down_queue()))
            self.run(asyncio.sleep(0))
            caller.cancel()
            self.run(asyncio.wait([caller]))
            assert caller.cancelled()
            self.run(asyncio.wait_for(queue.request_shutdown(), SHUTDOWN_GUARD))
            assert self.loop.time() - start < SHUTDOWN_GUARD
        assert queue.state == "closed"
        assert queue.consumer_count() == 0
        assert all(event.is_done() for event in self.accepted)
        assert not (asyncio.all_tasks(self.loop) - set(self.waiters))

    # -- invariants ------------------------------------------------------------

    @invariant()
    def bounded(self) -> None:
        if self.queue is not None and self.queue.maxsize:
            assert self.queue.current_load().qsize <= self.queue.maxsize

    @invariant()
    def answered_at_most_once(self) -> None:
        for event in self.accepted:
            assert ANSWERS[event.id] <= 1
            assert ANSWERS[event.id] == int(event.is_done())
        assert set(self.observed.values()) <= {1}

    # -- the end -------------------------------------------------------------

    def teardown(self) -> None:
        try:
            if self.queue is None:
                return
            if self.running():
                self.shut_down_now(drain=True)
            queue = self.q
            results = self.gather([e.wait() for e in self.accepted])
            ids = {e.id for e in self.accepted}
            assert len(ids) == len(self.accepted)
            assert {i for i in ids if ANSWERS[i]} == ids
            assert all(ANSWERS[i] == 1 for i in ids)
            cancelled = set()
            for event, result in zip(self.accepted, results, strict=True):
                # Every answer is observed, the shutdown's cancellations too.
                assert self.observed[event.id] == 1
                if is_cancelled(result):
                    cancelled.add(event.id)
                else:
                    outcome, _ = event.payload.value
                    assert _matches(outcome, result, event.payload.value), result
            assert set(self.observed) == ids
            if self.drained:
                assert not cancelled  # waited as long as it took
            # Each surviving (not cancelled) waiter got its own event's answer,
            # the one checked above (equal, not the same list: a lone
            # handler's answer is made a ResultList on each read).
            answers = {e.id: r for e, r in zip(self.accepted, results, strict=True)}
            waited = self.gather(self.waiters)
            for event, answer in zip(self.waiters.values(), waited, strict=True):
                assert answer == answers[event.id], (event.payload.value, answer)
            assert queue.state == "closed"
            assert not asyncio.all_tasks(self.loop)
            assert self.loop_errors == []
        finally:
            for task in asyncio.all_tasks(self.loop):
                task.cancel()
            self.loop.run_until_complete(asyncio.sleep(0))
            self.loop.close()


@pytest.mark.slow
def test_delivery_state_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    original = CollectorEvent._set_answer

    def counting(event: CollectorEvent[Any], answer: object) -> bool:
        ANSWERS[event.id] += 1
        return original(event, answer)

    # Every answer of an unkeyed event, the consumers' and the shutdown's,
    # goes through it (no event here has an ordering key: a KeyedEvent has
    # a _set_answer of its own).
    monkeypatch.setattr(CollectorEvent, "_set_answer", counting)
    ANSWERS.clear()
    run_state_machine_as_test(
        DeliveryMachine,
        settings=settings(
            max_examples=500,
            stateful_step_count=50,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
