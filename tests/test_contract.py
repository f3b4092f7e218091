"""The delivery contract: every accepted event is answered exactly once.

Shutdown (drain, cancel, answer leftovers, idempotence, calls from a
handler, a signal handler, cancellation from outside), waiting, backpressure,
handler outcomes, set-up and tear-down failures, what the observers see, and
that nothing is left behind: no task, no answered event, no handler
exception.

Every test runs once per transport (see ``transports.py``); a test marked
``@pytest.mark.transports(...)`` holds for the transports it names only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import os
import signal
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from conftest import Gate, LoopErrors, is_cancelled
from event_collector import (
    Collector,
    CollectorEvent,
    Context,
    Error,
    InitializedQueue,
    Ok,
    Payload,
    QueueClosed,
    QueueFull,
    ResultList,
    ShutDownQueue,
)
from event_collector.messagebus import BusEventQueue

# The hook and the fixture run every test here once per transport.
from transports import _on_transport, make_queue, pytest_generate_tests  # noqa: F401

# Wide guards: a test that needs one of them has hung, not run slowly.
GUARD = 30.0

Handler = Callable[[Payload[Any], Context], Any]


class Boom(Exception):
    """A handler's failure (weak-referenceable, unlike built-in exceptions)."""


class SetupFailed(Exception):
    """A collector's set-up failure."""


def _queue(handler: Handler, *, timeout: float | None = None, **kwargs: Any) -> Any:
    kwargs.setdefault("logging", False)
    return make_queue([Collector("c", handler, timeout=timeout)], **kwargs)


def _other_tasks() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}


async def _echo(payload: Payload[Any], ctx: Context) -> Any:
    return payload.value


async def _hang(payload: Payload[Any], ctx: Context) -> Any:
    await asyncio.Event().wait()


async def _yield_many(times: int = 20) -> None:
    for _ in range(times):
        await asyncio.sleep(0)


# --------------------------------------------------------------------------
# Shutdown


async def test_send_before_start_raises_queue_closed(loop_guard: LoopErrors) -> None:
    queue = _queue(_echo)
    publisher = queue.get_publisher()
    with pytest.raises(QueueClosed, match="init_queue"):
        await publisher.send(1)
    with pytest.raises(QueueClosed):
        publisher.send_nowait(1)


async def test_send_after_shutdown_raises_queue_closed(loop_guard: LoopErrors) -> None:
    queue = _queue(_echo)
    publisher = queue.get_publisher()
    async with queue:
        assert (await (await publisher.send(1))) == [Ok(1)]
    assert queue.state == "closed"
    assert not queue.is_running
    with pytest.raises(QueueClosed):
        await publisher.send(2)
    with pytest.raises(QueueClosed):
        publisher.send_nowait(2)


async def test_send_is_refused_from_the_moment_shutdown_starts(
    loop_guard: LoopErrors,
) -> None:
    gate = Gate()
    queue = _queue(gate, consumer_shutdown_timeout=0)
    await queue.init_queue()
    publisher = queue.get_publisher()
    first = await publisher.send(1)
    shutdown = asyncio.create_task(queue.shut_down_queue())
    await _yield_many()
    assert queue.state == "closing"
    assert not shutdown.done()
    with pytest.raises(QueueClosed):
        await publisher.send(2)
    gate.open()
    async with asyncio.timeout(GUARD):
        await shutdown
    assert (await first) == [Ok(1)]


@pytest.mark.looptime
async def test_hundred_slow_events_and_one_second_shutdown_timeout(
    loop_guard: LoopErrors,
) -> None:
    loop = asyncio.get_running_loop()

    async def slow(payload: Payload[Any], ctx: Context) -> Any:
        if payload.value < 5:
            return payload.value
        await asyncio.Event().wait()

    queue = _queue(
        slow,
        autoscale=False,
        max_consumers=10,
        consumer_shutdown_timeout=1,
        clock=loop.time,
    )
    await queue.init_queue()
    publisher = queue.get_publisher()
    events = [await publisher.send(i) for i in range(100)]
    returned: list[float] = []

    async def waiter(event: CollectorEvent[Any]) -> ResultList:
        results = await event
        returned.append(loop.time())
        return results

    waiters = [asyncio.create_task(waiter(e)) for e in events]
    await _yield_many()
    start = loop.time()
    async with asyncio.timeout(GUARD):
        await queue.shut_down_queue()
    # The drain had its full second, and nobody waited a second more.
    assert loop.time() - start >= 1.0
    _, pending = await asyncio.wait(waiters, timeout=1.0)
    assert not pending
    assert len(returned) == 100
    assert max(returned) <= start + 1.0 + 1.0
    results = [w.result() for w in waiters]
    assert results[:5] == [[Ok(i)] for i in range(5)]
    assert all(is_cancelled(r) for r in results[5:])
    messages = [str(r[0].err) for r in results[5:] if isinstance(r[0], Error)]
    assert sum("running" in m for m in messages) == 10  # one per consumer
    assert sum("before" in m for m in messages) == 85  # still queued


@pytest.mark.looptime
@pytest.mark.parametrize("shutdown_timeout", [0, -1])
async def test_non_positive_shutdown_timeout_waits_for_the_drain(
    loop_guard: LoopErrors, shutdown_timeout: float
) -> None:
    loop = asyncio.get_running_loop()
    gate = Gate()
    queue = _queue(
        gate,
        consumer_shutdown_timeout=shutdown_timeout,
        autoscale=False,
        max_consumers=2,
        monitor_interval=1.0,
        clock=loop.time,
    )
    await queue.init_queue()
    publisher = queue.get_publisher()
    events = [await publisher.send(i) for i in range(6)]
    shutdown = asyncio.create_task(queue.shut_down_queue())
    await asyncio.sleep(600)  # ten minutes of loop time
    assert not shutdown.done()
    assert queue.state == "closing"
    assert not any(e.is_done() for e in events)
    gate.open()
    async with asyncio.timeout(GUARD):
        await shutdown
    assert [await e for e in events] == [[Ok(i)] for i in range(6)]


async def test_shutdown_is_idempotent(loop_guard: LoopErrors) -> None:
    announced: list[object] = []
    torn_down: list[str] = []

    class Tracked(Collector):
        key = "tracked"

        async def process(self, payload: Payload[Any]) -> Any:
            return payload.value

        async def teardown(self) -> None:
            torn_down.append(self.key)

    async def on_shutdown(message: ShutDownQueue, pending: BusEventQueue) -> None:
        announced.append(message.collector_queue)

    queue = make_queue([Tracked], logging=False)
    queue.get_message_bus().add_msg_handler(ShutDownQueue, on_shutdown)
    async with queue:
        await queue.shut_down_queue()
        await queue.shut_down_queue()
    await queue.shut_down_queue()
    await queue.request_shutdown()
    assert announced == [queue]
    assert torn_down == ["tracked"]
    assert queue.state == "closed"


async def test_concurrent_shutdowns_share_one(loop_guard: LoopErrors) -> None:
    gate = Gate()
    announced: list[object] = []

    async def on_shutdown(message: ShutDownQueue, pending: BusEventQueue) -> None:
        announced.append(message)

    queue = _queue(gate, consumer_shutdown_timeout=0)
    queue.get_message_bus().add_msg_handler(ShutDownQueue, on_shutdown)
    await queue.init_queue()
    event = await queue.get_publisher().send(1)
    states_at_return: list[str] = []

    async def caller() -> None:
        await queue.shut_down_queue()
        states_at_return.append(queue.state)

    callers = [asyncio.create_task(caller()) for _ in range(3)]
    await _yield_many()
    assert not any(c.done() for c in callers)
    gate.open()
    async with asyncio.timeout(GUARD):
        await asyncio.gather(*callers)
    # Nobody returned before the shutdown was over, and it ran once.
    assert states_at_return == ["closed"] * 3
    assert len(announced) == 1
    assert (await event) == [Ok(1)]


async def test_shutdown_from_inside_a_handler(loop_guard: LoopErrors) -> None:
    returned = asyncio.Event()

    async def handler(payload: Payload[Any], ctx: Context) -> Any:
        if payload.value == "stop":
            await queue.shut_down_queue()
            returned.set()
            return "stopped"
        return payload.value

    queue = _queue(handler, autoscale=False, max_consumers=1)
    await queue.init_queue()
    publisher = queue.get_publisher()
    before = await publisher.send(1)
    stop = await publisher.send("stop")
    after = [await publisher.send(i) for i in (2, 3)]
    async with asyncio.timeout(GUARD):
        assert (await stop) == [Ok("stopped")]
        assert returned.is_set()
        await queue.request_shutdown()
    assert queue.state == "closed"
    assert (await before) == [Ok(1)]
    # Queued behind the handler that asked for the shutdown: drained.
    assert [await e for e in after] == [[Ok(2)], [Ok(3)]]


async def test_shutdown_from_a_task_started_by_a_handler(
    loop_guard: LoopErrors,
) -> None:
    spawned: list[asyncio.Task[None]] = []

    async def handler(payload: Payload[Any], ctx: Context) -> Any:
        spawned.append(asyncio.create_task(queue.shut_down_queue()))
        return payload.value

    queue = _queue(handler)
    await queue.init_queue()
    event = await queue.get_publisher().send(1)
    async with asyncio.timeout(GUARD):
        assert (await event) == [Ok(1)]
        await spawned[0]
        await queue.request_shutdown()
    assert queue.state == "closed"


async def test_request_shutdown_from_a_signal_handler(loop_guard: LoopErrors) -> None:
    loop = asyncio.get_running_loop()
    queue = _queue(_echo)
    await queue.init_queue()
    publisher = queue.get_publisher()
    event = await publisher.send(1)
    requested: list[asyncio.Task[None]] = []
    received = asyncio.Event()

    def on_signal() -> None:
        requested.append(queue.request_shutdown())
        received.set()

    loop.add_signal_handler(signal.SIGUSR1, on_signal)
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        async with asyncio.timeout(GUARD):
            await received.wait()
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
    async with asyncio.timeout(GUARD):
        await requested[0]
    assert queue.state == "closed"
    assert (await event) == [Ok(1)]
    assert queue.request_shutdown() is requested[0]
    await queue.shut_down_queue()
    with pytest.raises(QueueClosed):
        await publisher.send(2)


async def test_request_shutdown_from_a_plain_callback(loop_guard: LoopErrors) -> None:
    loop = asyncio.get_running_loop()
    queue = _queue(_echo)
    await queue.init_queue()
    requested: asyncio.Future[asyncio.Task[None]] = loop.create_future()
    loop.call_soon(lambda: requested.set_result(queue.request_shutdown()))
    async with asyncio.timeout(GUARD):
        task = await requested
        await task
    assert queue.state == "closed"
    assert not _other_tasks()


async def test_shutdown_before_start(loop_guard: LoopErrors) -> None:
    queue = _queue(_echo)
    await queue.shut_down_queue()
    assert queue.state == "closed"
    with pytest.raises(QueueClosed):
        await queue.get_publisher().send(1)
    with pytest.raises(RuntimeError, match="init_queue"):
        await queue.init_queue()
    assert not _other_tasks()


# --------------------------------------------------------------------------
# Cancellation from outside


@pytest.mark.parametrize("yields", [1, 5])
async def test_cancelling_the_shutdown_caller_propagates(
    loop_guard: LoopErrors, yields: int
) -> None:
    gate = Gate()  # never opened
    queue = _queue(gate, consumer_shutdown_timeout=3600)
    await queue.init_queue()
    event = await queue.get_publisher().send(1)
    queued = await queue.get_publisher().send(2)
    await gate.until_running(1)
    caller = asyncio.create_task(queue.shut_down_queue())
    await _yield_many(yields)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    # The shutdown goes on, cut short: no hour-long drain.
    async with asyncio.timeout(GUARD):
        await queue.request_shutdown()
    assert queue.state == "closed"
    assert is_cancelled(await event)
    assert is_cancelled(await queued)
    assert not _other_tasks()


async def test_timeout_around_shutdown_propagates(loop_guard: LoopErrors) -> None:
    gate = Gate()  # never opened
    queue = _queue(gate, consumer_shutdown_timeout=3600)
    await queue.init_queue()
    event = await queue.get_publisher().send(1)
    await gate.until_running(1)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await queue.shut_down_queue()
    async with asyncio.timeout(GUARD):
        await queue.request_shutdown()
    assert queue.state == "closed"
    assert is_cancelled(await event)
    assert not _other_tasks()


async def test_cancelling_a_waiter_does_not_cancel_the_event(
    loop_guard: LoopErrors,
) -> None:
    gate = Gate()
    queue = _queue(gate)
    await queue.init_queue()
    event = await queue.get_publisher().send(1)
    waiter = asyncio.create_task(event.wait())
    other = asyncio.create_task(event.wait())
    await _yield_many()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    gate.open()
    async with asyncio.timeout(GUARD):
        assert (await other) == [Ok(1)]
    assert (await event) == [Ok(1)]
    await queue.shut_down_queue()


# --------------------------------------------------------------------------
# Waiting


async def test_wait_with_timeout_raises_and_the_event_is_still_answered(
    loop_guard: LoopErrors,
) -> None:
    gate = Gate()
    queue = _queue(gate)
    await queue.init_queue()
    event = await queue.get_publisher().send("v")
    with pytest.raises(TimeoutError):
        await event.wait(timeout=0.01)
    assert not event.is_done()
    assert event.get_result() is None
    gate.open()
    async with asyncio.timeout(GUARD):
        results = await event
    assert results == [Ok("v")]
    assert event.is_done()
    # Answered events return at once, whatever the timeout.
    assert (await event.wait(timeout=0)) == results
    assert (await event.wait()) == results
    await queue.shut_down_queue()


async def test_await_event_is_wait(loop_guard: LoopErrors) -> None:
    async with _queue(_echo) as queue:
        event = await queue.get_publisher().send({"a": 1})
        results = await event
        assert isinstance(results, ResultList)
        assert results == [Ok({"a": 1})]
        # A lone handler's answer is kept as returned; each read makes an
        # equal ResultList of it.
        assert (await event.wait()) == results
        assert event.get_result() == results


async def test_dropped_events_are_still_processed(loop_guard: LoopErrors) -> None:
    gate = Gate()
    seen: list[Any] = []
    queue = _queue(gate)
    queue.add_event_observer(lambda event: seen.append(event.payload.value))
    await queue.init_queue()
    publisher = queue.get_publisher()
    for i in range(200):
        await publisher.send(i)  # the event is dropped at once
    gc.collect()
    gate.open()
    async with asyncio.timeout(GUARD):
        await publisher.wait()
    assert sorted(seen) == list(range(200))
    await queue.shut_down_queue()


# --------------------------------------------------------------------------
# Backpressure


async def test_bounded_send_waits_for_room(loop_guard: LoopErrors) -> None:
    gate = Gate()
    queue = _queue(gate, autoscale=False, max_consumers=1, maxsize=2)
    await queue.init_queue()
    publisher = queue.get_publisher()
    events = [await publisher.send(0)]
    await gate.until_running(1)
    events += [await publisher.send(1), await publisher.send(2)]
    assert queue.current_load().qsize == 2
    with pytest.raises(QueueFull, match="maxsize=2"):
        publisher.send_nowait(3)
    blocked = asyncio.create_task(publisher.send(4))
    await _yield_many()
    assert not blocked.done()
    assert queue.current_load().qsize == 2
    gate.open()
    async with asyncio.timeout(GUARD):
        events.append(await blocked)
        results = [await e for e in events]
    assert results == [[Ok(0)], [Ok(1)], [Ok(2)], [Ok(4)]]
    await queue.shut_down_queue()


async def test_qsize_never_exceeds_maxsize(loop_guard: LoopErrors) -> None:
    maxsize = 5
    samples: list[int] = []

    async def handler(payload: Payload[Any], ctx: Context) -> Any:
        samples.append(queue.current_load().qsize)
        for _ in range(payload.value % 3):
            await asyncio.sleep(0)
        return payload.value

    queue = _queue(handler, maxsize=maxsize, max_consumers=4)
    await queue.init_queue()
    publisher = queue.get_publisher()
    stop = asyncio.Event()

    async def sampler() -> None:
        while not stop.is_set():
            samples.append(queue.current_load().qsize)
            await asyncio.sleep(0)

    async def producer(base: int) -> list[CollectorEvent[Any]]:
        return [await publisher.send(base + i) for i in range(50)]

    watch = asyncio.create_task(sampler())
    async with asyncio.timeout(GUARD):
        batches = await asyncio.gather(*(producer(p * 100) for p in range(20)))
        events = [e for batch in batches for e in batch]
        results = [await e for e in events]
    stop.set()
    await watch
    await queue.shut_down_queue()
    assert len(results) == 1000
    assert all(r == [Ok(e.payload.value)] for r, e in zip(results, events, strict=True))
    assert max(samples) <= maxsize
    assert max(samples) == maxsize  # the bound was reached, so it was tested


async def test_handler_publishing_into_its_own_full_queue_does_not_block_shutdown(
    loop_guard: LoopErrors,
) -> None:
    publishing = asyncio.Event()
    filled = asyncio.Event()
    children: list[CollectorEvent[Any]] = []

    async def publish_back(payload: Payload[Any], ctx: Context) -> Any:
        if payload.value < 100:
            publishing.set()
            await filled.wait()
            children.append(await queue.get_publisher().send(payload.value + 100))
        return payload.value

    # One consumer and room for one event: the first handler blocks on the
    # full queue that only it could empty. A shutdown that waits for the
    # drain (timeout 0) must still finish.
    queue = _queue(
        publish_back,
        autoscale=False,
        max_consumers=1,
        maxsize=1,
        consumer_shutdown_timeout=0,
    )
    await queue.init_queue()
    publisher = queue.get_publisher()
    first = await publisher.send(1)
    await publishing.wait()
    second = await publisher.send(2)
    assert queue.current_load().qsize == 1
    filled.set()
    await _yield_many()
    assert children == []  # the handler is stuck in send
    assert queue.current_load().busy == 1
    async with asyncio.timeout(GUARD):
        await queue.shut_down_queue()
    for event in (first, second):
        results = await event
        assert len(results) == 1
        assert isinstance(results[0], Error)
        assert isinstance(results[0].err, QueueClosed)
    assert all(child.is_done() for child in children)


async def test_republishing_handlers_under_load_then_shutdown(
    loop_guard: LoopErrors,
) -> None:
    accepted: list[CollectorEvent[Any]] = []
    samples: list[int] = []

    async def fan_out(payload: Payload[Any], ctx: Context) -> Any:
        samples.append(queue.current_load().qsize)
        if payload.value < 3:
            for _ in range(2):
                accepted.append(await queue.get_publisher().send(payload.value + 1))
        return payload.value

    queue = _queue(fan_out, maxsize=4, max_consumers=3, consumer_shutdown_timeout=0)
    await queue.init_queue()
    publisher = queue.get_publisher()
    refused: list[QueueClosed] = []

    async def produce() -> None:
        for _ in range(200):
            try:
                accepted.append(await publisher.send(0))
            except QueueClosed as exc:
                refused.append(exc)
                return

    # Handlers and the producer end up blocked on the full queue, each
    # waiting for the others; the shutdown must break that knot.
    producer = asyncio.create_task(produce())
    await _yield_many(200)
    assert queue.current_load().qsize == 4
    async with asyncio.timeout(GUARD):
        await queue.shut_down_queue()
        await producer
    assert len(refused) == 1
    assert max(samples) <= 4
    assert all(e.is_done() for e in accepted)
    for event in accepted:
        result = (await event)[0]
        assert result == Ok(event.payload.value) or (
            isinstance(result, Error) and isinstance(result.err, QueueClosed)
        )


# --------------------------------------------------------------------------
# send_threadsafe


async def test_send_threadsafe_from_threads(loop_guard: LoopErrors) -> None:
    async with _queue(_echo) as queue:
        publisher = queue.get_publisher()

        def publish(base: int) -> list[tuple[object, ResultList]]:
            out = []
            for i in range(25):
                future = publisher.send_threadsafe(base + i)
                out.append((future, future.result(timeout=GUARD)))
            return out

        async with asyncio.timeout(GUARD):
            batches = await asyncio.gather(
                *(asyncio.to_thread(publish, t * 100) for t in range(4))
            )
    values = []
    for batch in batches:
        for future, results in batch:
            assert isinstance(future, concurrent.futures.Future)
            assert isinstance(results, ResultList)
            assert len(results) == 1
            values.append(results[0].unwrap())
    assert sorted(values) == sorted(t * 100 + i for t in range(4) for i in range(25))


async def test_send_threadsafe_before_start_fails_with_queue_closed(
    loop_guard: LoopErrors,
) -> None:
    queue = _queue(_echo)
    future = await asyncio.to_thread(queue.get_publisher().send_threadsafe, 1)
    assert isinstance(future, concurrent.futures.Future)
    assert future.done()
    assert isinstance(future.exception(timeout=0), QueueClosed)


async def test_send_threadsafe_after_shutdown_fails_with_queue_closed(
    loop_guard: LoopErrors,
) -> None:
    queue = _queue(_echo)
    async with queue:
        pass
    publisher = queue.get_publisher()
    future = await asyncio.to_thread(publisher.send_threadsafe, 1)
    assert isinstance(future, concurrent.futures.Future)
    exc = await asyncio.to_thread(future.exception, GUARD)
    assert isinstance(exc, QueueClosed)


def test_send_threadsafe_after_the_loop_closed() -> None:
    queue = _queue(_echo)

    async def run() -> None:
        async with queue:
            pass

    asyncio.run(run())
    future = queue.get_publisher().send_threadsafe(1)
    assert future.done()
    assert isinstance(future.exception(timeout=0), QueueClosed)


def test_send_threadsafe_after_shutdown_on_a_stopped_loop() -> None:
    loop = asyncio.new_event_loop()
    queue = _queue(_echo)
    future: concurrent.futures.Future[ResultList] | None = None
    try:
        loop.run_until_complete(queue.init_queue())
        loop.run_until_complete(queue.shut_down_queue())
        future = queue.get_publisher().send_threadsafe(1)
        assert future.done()
        assert isinstance(future.exception(timeout=0), QueueClosed)
    finally:
        if future is not None and not future.done():
            # Let the scheduled coroutine run, so nothing is left unawaited.
            loop.run_until_complete(asyncio.sleep(0))
        loop.close()


# --------------------------------------------------------------------------
# Handlers


async def test_plain_values_and_results(loop_guard: LoopErrors) -> None:
    marker = Error("custom")

    async def handler(payload: Payload[Any], ctx: Context) -> Any:
        if payload.value == "ok":
            return Ok("wrapped already")
        if payload.value == "error":
            return marker
        return payload.value

    async with _queue(handler) as queue:
        publisher = queue.get_publisher()
        assert (await (await publisher.send(7))) == [Ok(7)]
        assert (await (await publisher.send(None))) == [Ok(None)]
        assert (await (await publisher.send("ok"))) == [Ok("wrapped already")]
        error = (await (await publisher.send("error")))[0]
        assert error is marker


@pytest.mark.parametrize("limit", [0.05, 0.2])
async def test_handler_timeout_answers_timeout_error_and_consumer_lives(
    loop_guard: LoopErrors, limit: float
) -> None:
    async def handler(payload: Payload[Any], ctx: Context) -> Any:
        if payload.value == "hang":
            await asyncio.Event().wait()
        return payload.value

    queue = _queue(handler, timeout=limit, autoscale=False, max_consumers=2)
    async with queue:
        publisher = queue.get_publisher()
        assert queue.consumer_count() == 2
        async with asyncio.timeout(GUARD):
            results = await (await publisher.send("hang"))
        assert len(results) == 1
        error = results[0]
        assert isinstance(error, Error)
        assert isinstance(error.err, TimeoutError)
        assert "'c'" in str(error.err)
        assert str(limit) in str(error.err)
        assert queue.consumer_count() == 2
        later = [await publisher.send(i) for i in range(10)]
        assert [await e for e in later] == [[Ok(i)] for i in range(10)]
        assert queue.consumer_count() == 2


async def test_handler_own_timeout_error_is_kept(loop_guard: LoopErrors) -> None:
    raised = TimeoutError("the database timed out")

    async def handler(payload: Payload[Any], ctx: Context) -> Any:
        raise raised

    async with _queue(handler, timeout=60) as queue:
        result = (await (await queue.get_publisher().send(1)))[0]
    assert isinstance(result, Error)
    assert result.err is raised


async def test_handler_swallowing_its_timeout_keeps_its_value(
    loop_guard: LoopErrors,
) -> None:
    async def handler(payload: Payload[Any], ctx: Context) -> Any:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        return "late"

    queue = _queue(handler, timeout=0.05, autoscale=False, max_consumers=1)
    async with queue:
        async with asyncio.timeout(GUARD):
            results = await (await queue.get_publisher().send(1))
        assert results == [Ok("late")]
        assert queue.consumer_count() == 1


@pytest.mark.parametrize("limit", [None, 60.0])
async def test_handler_exception_is_an_error_with_traceback(
    loop_guard: LoopErrors, limit: float | None
) -> None:
    async def raise_boom(payload: Payload[Any], ctx: Context) -> Any:
        raise Boom(payload.value)

    queue = _queue(raise_boom, timeout=limit, autoscale=False, max_consumers=1)
    async with queue:
        results = await (await queue.get_publisher().send("bad"))
        assert len(results) == 1
        error = results[0]
        assert isinstance(error, Error)
        assert isinstance(error.err, Boom)
        assert error.err.args == ("bad",)
        assert error.err.__traceback__ is not None
        assert "raise_boom" in error.traceback
        with pytest.raises(Boom):
            error.unwrap()
        assert queue.consumer_count() == 1
        assert (await (await queue.get_publisher().send(1)))[0].is_error


@pytest.mark.parametrize("limit", [None, 60.0])
async def test_handler_raising_cancelled_error_is_an_error(
    loop_guard: LoopErrors, limit: float | None
) -> None:
    async def handler(payload: Payload[Any], ctx: Context) -> Any:
        if payload.value == "cancel":
            raise asyncio.CancelledError("handler gave up")
        return payload.value

    queue = _queue(handler, timeout=limit, autoscale=False, max_consumers=1)
    async with queue:
        publisher = queue.get_publisher()
        results = await (await publisher.send("cancel"))
        error = results[0]
        assert isinstance(error, Error)
        assert isinstance(error.err, asyncio.CancelledError)
        assert error.err.__traceback__ is not None
        assert queue.consumer_count() == 1
        assert (await (await publisher.send(5))) == [Ok(5)]
        assert queue.consumer_count() == 1
    assert queue.state == "closed"


async def test_broken_bus_handlers_are_logged_not_fatal(
    loop_guard: LoopErrors,
) -> None:
    received: list[str] = []

    async def broken(message: Any, pending: BusEventQueue) -> None:
        raise RuntimeError(f"broken on {type(message).__name__}")

    async def working(message: Any, pending: BusEventQueue) -> None:
        received.append(type(message).__name__)

    queue = _queue(_echo, logging=True)
    bus = queue.get_message_bus()
    for message_type in (InitializedQueue, ShutDownQueue):
        bus.add_msg_handler(message_type, broken)
        bus.add_msg_handler(message_type, working)
    with capture_logs() as logs:
        async with queue:
            assert (await (await queue.get_publisher().send(1))) == [Ok(1)]
    assert queue.state == "closed"
    assert received == ["InitializedQueue", "ShutDownQueue"]
    failures = [e for e in logs if e["event"] == "message bus handler failed"]
    assert [e["bus_message"] for e in failures] == ["InitializedQueue", "ShutDownQueue"]
    assert all(e["log_level"] == "error" for e in failures)
    assert all(isinstance(e["exc_info"], RuntimeError) for e in failures)


# --------------------------------------------------------------------------
# Set-up failure


def _recording_collectors(log: list[tuple[str, str]], failing: str) -> list[Collector]:
    class Recording(Collector):
        async def setup(self) -> None:
            log.append(("setup", self.key))
            if self.key == failing:
                raise SetupFailed(self.key)

        async def teardown(self) -> None:
            log.append(("teardown", self.key))

    return [Recording(key, _echo) for key in ("a", "b", "c", "d")]


@pytest.mark.parametrize("how", ["init_queue", "async with"])
async def test_setup_failure_tears_down_what_was_set_up(
    loop_guard: LoopErrors, how: str
) -> None:
    log: list[tuple[str, str]] = []
    queue = make_queue(_recording_collectors(log, "c"), logging=False)
    body_ran = False

    async def start() -> None:
        nonlocal body_ran
        if how == "init_queue":
            await queue.init_queue()
        else:
            async with queue:
                body_ran = True

    with pytest.raises(SetupFailed, match="c"):
        await start()
    assert not body_ran
    assert log == [
        ("setup", "a"),
        ("setup", "b"),
        ("setup", "c"),
        ("teardown", "b"),
        ("teardown", "a"),
    ]
    assert queue.state == "closed"
    assert queue.consumer_count() == 0
    assert not _other_tasks()
    with pytest.raises(QueueClosed):
        await queue.get_publisher().send(1)
    await queue.shut_down_queue()
    assert log[-1] == ("teardown", "a")  # nothing torn down twice


async def test_lifecycle_setup_failure(loop_guard: LoopErrors) -> None:
    entered: list[str] = []

    @contextlib.asynccontextmanager
    async def resource(ctx: Context) -> AsyncIterator[None]:
        entered.append("in")
        yield
        entered.append("out")

    @contextlib.asynccontextmanager
    async def broken(ctx: Context) -> AsyncIterator[None]:
        raise SetupFailed("no connection")
        yield  # pragma: no cover

    queue = make_queue(
        [
            Collector("ok", _echo, lifecycle=resource),
            Collector("broken", _echo, lifecycle=broken),
        ],
        logging=False,
    )
    with pytest.raises(SetupFailed, match="no connection"):
        await queue.init_queue()
    assert entered == ["in", "out"]
    assert not _other_tasks()


async def test_cancelled_setup_tears_down_and_propagates(
    loop_guard: LoopErrors,
) -> None:
    log: list[tuple[str, str]] = []
    waiting = asyncio.Event()

    class Slow(Collector):
        async def setup(self) -> None:
            log.append(("setup", self.key))
            if self.key == "slow":
                waiting.set()
                await asyncio.Event().wait()

        async def teardown(self) -> None:
            log.append(("teardown", self.key))

    queue = make_queue([Slow("first", _echo), Slow("slow", _echo)], logging=False)
    starting = asyncio.create_task(queue.init_queue())
    await waiting.wait()
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert log == [("setup", "first"), ("setup", "slow"), ("teardown", "first")]
    assert queue.state == "closed"
    assert not _other_tasks()


# --------------------------------------------------------------------------
# Nothing left behind


async def test_no_task_left_after_a_busy_shutdown(loop_guard: LoopErrors) -> None:
    async def handler(payload: Payload[Any], ctx: Context) -> Any:
        if payload.value % 10 == 0:
            await asyncio.Event().wait()
        await asyncio.sleep(0)
        return payload.value

    queue = _queue(
        handler,
        timeout=60,
        report_interval=0.01,
        max_consumers=20,
        consumer_shutdown_timeout=0.1,
    )
    await queue.init_queue()
    publisher = queue.get_publisher()
    events = [await publisher.send(i) for i in range(200)]
    await _yield_many(50)
    assert len(_other_tasks()) > 1
    async with asyncio.timeout(GUARD):
        await queue.shut_down_queue()
    assert not _other_tasks()
    assert all(e.is_done() for e in events)
    for event in events:
        results = event.get_result()
        assert results is not None
        if event.payload.value % 10 == 0:
            assert is_cancelled(results)
        else:
            assert results == [Ok(event.payload.value)] or is_cancelled(results)


# Object lifetimes in this process: what a broker's transport keeps (a reply
# table, say) is its own promise.
@pytest.mark.transports("memory")
async def test_answered_events_are_not_retained(loop_guard: LoopErrors) -> None:
    queue = _queue(_echo, autoscale=False, max_consumers=4)
    await queue.init_queue()
    publisher = queue.get_publisher()
    refs: list[weakref.ref[CollectorEvent[Any]]] = []
    gc.disable()
    try:
        for batch in range(5):
            events = [await publisher.send(batch * 100 + i) for i in range(100)]
            for event in events:
                await event
            refs.extend(weakref.ref(e) for e in events)
            del events, event
        alive = [r() for r in refs if r() is not None]
        assert alive == []
    finally:
        gc.enable()
    await queue.shut_down_queue()


class _Raising(Collector):
    key = "c"

    async def process(self, payload: Payload[Any]) -> Any:
        raise Boom(payload.value)


async def _raise_boom(payload: Payload[Any], ctx: Context) -> Any:
    raise Boom(payload.value)


@pytest.mark.parametrize(
    "collector",
    [
        pytest.param(lambda: Collector("c", _raise_boom), id="processor"),
        pytest.param(lambda: Collector("c", _raise_boom, timeout=60), id="timeout"),
        pytest.param(_Raising, id="subclass"),
    ],
)
# Object lifetimes in this process: what a broker's transport keeps (a reply
# table, say) is its own promise.
@pytest.mark.transports("memory")
async def test_handler_exceptions_are_not_kept_alive(
    loop_guard: LoopErrors, collector: Callable[[], Collector]
) -> None:
    queue = make_queue([collector()], autoscale=False, max_consumers=2, logging=False)
    await queue.init_queue()
    publisher = queue.get_publisher()
    refs: list[weakref.ref[BaseException]] = []
    gc.disable()
    try:
        for i in range(20):
            event = await publisher.send(i)
            error = (await event)[0]
            assert isinstance(error, Error)
            assert isinstance(error.err, Boom)
            assert error.err.__traceback__ is not None
            refs.append(weakref.ref(error.err))
            del event, error
        assert [r() for r in refs if r() is not None] == []
    finally:
        gc.enable()
        await queue.shut_down_queue()


class _Value:
    """A payload value that can be weakly referenced."""


# Object lifetimes in this process: what a broker's transport keeps (a reply
# table, say) is its own promise.
@pytest.mark.transports("memory")
async def test_timed_out_handlers_leave_nothing_alive(loop_guard: LoopErrors) -> None:
    queue = _queue(_hang, timeout=0.01, autoscale=False, max_consumers=2)
    await queue.init_queue()
    publisher = queue.get_publisher()
    refs: list[weakref.ref[Any]] = []
    gc.disable()
    try:
        for _ in range(5):
            value = _Value()
            refs.append(weakref.ref(value))
            event = await publisher.send(value)
            async with asyncio.timeout(GUARD):
                result = (await event)[0]
            assert isinstance(result, Error)
            assert isinstance(result.err, TimeoutError)
            del value, event, result
        assert [r() for r in refs if r() is not None] == []
    finally:
        gc.enable()
        await queue.shut_down_queue()


# Object lifetimes in this process: what a broker's transport keeps (a reply
# table, say) is its own promise.
@pytest.mark.transports("memory")
async def test_timed_out_handlers_are_collected_by_gc(loop_guard: LoopErrors) -> None:
    # Whatever cycles remain, nothing outside them holds the payload.
    queue = _queue(_hang, timeout=0.01, autoscale=False, max_consumers=2)
    async with queue:
        value = _Value()
        ref = weakref.ref(value)
        result = (await (await queue.get_publisher().send(value)))[0]
        assert isinstance(result, Error)
        del value, result
        gc.collect()
        assert ref() is None


# --------------------------------------------------------------------------
# What the observers see


async def test_an_observer_sees_every_event_exactly_once(
    loop_guard: LoopErrors,
) -> None:
    """Answered by a handler, by an error, cancelled while running and
    cancelled while still queued at shutdown: each one observed once."""
    gate = Gate()

    async def handler(payload: Payload[Any], ctx: Context) -> Any:
        if payload.value == "fail":
            raise Boom("fail")
        if payload.value == "hold":
            return await gate(payload, ctx)
        return payload.value

    queue = _queue(
        handler, autoscale=False, max_consumers=2, consumer_shutdown_timeout=0.01
    )
    seen: list[int] = []
    queue.add_event_observer(lambda event: seen.append(event.id))
    async with asyncio.timeout(GUARD):
        async with queue:
            publisher = queue.get_publisher()
            done = [await publisher.send(v) for v in ("ok", "fail")]
            for event in done:
                await event
            running = [await publisher.send("hold") for _ in range(2)]
            await gate.until_running(2)
            queued = [await publisher.send("hold") for _ in range(3)]
    events = done + running + queued
    assert sorted(seen) == sorted(e.id for e in events)
    assert all([is_cancelled(await e) for e in running + queued])
    failed = (await done[1]).first()
    assert isinstance(failed, Error)
    assert isinstance(failed.err, Boom)


async def test_a_failing_teardown_is_logged_and_the_others_still_run(
    loop_guard: LoopErrors,
) -> None:
    log: list[tuple[str, str]] = []

    class Broken(Collector):
        async def teardown(self) -> None:
            log.append(("teardown", self.key))
            raise RuntimeError("teardown broke")

    class Recording(Collector):
        async def teardown(self) -> None:
            log.append(("teardown", self.key))

    queue = make_queue(
        [Recording("a", _echo), Broken("broken", _echo), Recording("c", _echo)]
    )
    with capture_logs() as logs:
        async with queue:
            pass
    assert log == [("teardown", "c"), ("teardown", "broken"), ("teardown", "a")]
    failures = [e for e in logs if e["event"] == "collector teardown failed"]
    assert [e["collector"] for e in failures] == ["broken"]
    assert queue.state == "closed"
