"""Publishing: send, send_nowait, send_threadsafe, wait; CollectorEvent."""

from __future__ import annotations

import asyncio
import copy
import pickle
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from conftest import FakeClock, Gate
from event_collector import Collector, CollectorQueue, QueueClosed, QueueFull
from event_collector.data import Context, Delivery, Error, Ok, Payload, ResultList
from event_collector.publisher import (
    DEFAULT_PRIORITY,
    CollectorEvent,
    EventPublisher,
    QueueType,
)


async def echo(payload: Payload[Any], ctx: Context) -> Any:
    return payload.value


@pytest.fixture
async def queue() -> AsyncIterator[CollectorQueue]:
    async with CollectorQueue([Collector("echo", echo)], logging=False) as q:
        yield q


def test_constants() -> None:
    assert DEFAULT_PRIORITY == 100
    assert [t.name for t in QueueType] == ["FIFO", "PRIORITY", "LIFO"]


async def test_send_wraps_plain_values_in_a_broadcast_payload(
    queue: CollectorQueue,
) -> None:
    pub = queue.get_publisher()
    assert isinstance(pub, EventPublisher)
    event = await pub.send({"data": 1})
    assert isinstance(event, CollectorEvent)
    assert isinstance(event.payload, Payload)
    assert event.payload.value == {"data": 1}
    assert event.payload.delivery is Delivery.BROADCAST
    assert await event.wait() == [Ok({"data": 1})]


async def test_send_keeps_a_payload_as_it_is(queue: CollectorQueue) -> None:
    payload = Payload("x", delivery=Delivery.KEY, keys=["echo"])
    event = await queue.get_publisher().send(payload)
    assert event.payload is payload
    assert await event.wait() == [Ok("x")]


async def test_a_lone_handlers_answer_is_made_a_result_list_when_read() -> None:
    """With one collector the event keeps what the handler returned; each
    read gives an equal ResultList of its own, so changing one read changes
    nothing, and a returned Ok or Error is the very object the handler made."""
    made: dict[str, Any] = {}

    async def handler(payload: Payload[str], ctx: Context) -> Any:
        kind = payload.value
        if kind == "plain":
            return 42
        if kind == "list":
            made[kind] = ResultList([Ok(1)])
        else:
            made[kind] = Ok("mine") if kind == "ok" else Error("theirs")
        return made[kind]

    async with CollectorQueue([Collector("h", handler)], logging=False) as q:
        pub = q.get_publisher()
        plain, ok, error, as_list = [
            await pub.send(k) for k in ("plain", "ok", "error", "list")
        ]
        first = await plain.wait()
        assert first == [Ok(42)]
        first.append(Ok("changed by the reader"))
        assert plain.get_result() == [Ok(42)]
        assert await plain == [Ok(42)]

        for event, kind in ((ok, "ok"), (error, "error")):
            results = await event.wait()
            assert len(results) == 1
            assert results[0] is made[kind]
            assert event.get_result() == results
        # A ResultList returned is one value, not the event's results.
        assert await as_list.wait() == [Ok(made["list"])]


def test_a_copied_or_unpickled_pending_event_is_still_pending() -> None:
    event: CollectorEvent[int] = CollectorEvent(7, DEFAULT_PRIORITY, 0.0)
    for twin in (copy.copy(event), copy.deepcopy(event)):
        assert not twin.is_done()
        assert twin.get_result() is None
    thawed = pickle.loads(pickle.dumps(event))
    assert not thawed.is_done()
    assert thawed.payload.value == 7
    assert "pending" in repr(thawed)


async def test_a_plain_values_payload_is_made_once_when_read() -> None:
    seen: list[Payload[Any]] = []

    async def keep(payload: Payload[Any], ctx: Context) -> Any:
        seen.append(payload)
        return payload.value

    async with CollectorQueue([Collector("keep", keep)], logging=False) as q:
        pub = q.get_publisher()
        # Not read before it is handled: the handler gets a Payload of the
        # value, and a reader later gets one, the same on every read.
        first = await pub.send(1)
        assert await first.wait() == [Ok(1)]
        assert seen[0].value == 1
        assert seen[0].delivery is Delivery.BROADCAST
        assert first.payload is first.payload
        assert first.payload.value == 1
        # Read (and changed) before it is handled: the handler gets that one.
        second = pub.send_nowait(2)
        second.payload.set_priority(7)
        assert await second.wait() == [Ok(2)]
        assert seen[1] is second.payload
        assert seen[1].priority == 7


def test_a_queued_plain_event_holds_no_payload_object() -> None:
    event: CollectorEvent[int] = CollectorEvent(5, 100, 0.0)
    assert event._payload is None  # one object per queued event, not two
    assert repr(event) == (
        f"<CollectorEvent id={event.id} pending payload=<Payload BROADCAST value=5>>"
    )


class TaggedPayload(Payload[Any]):
    __slots__ = ()


async def test_send_keeps_payload_subclasses(queue: CollectorQueue) -> None:
    payload = TaggedPayload("sub")
    event = await queue.get_publisher().send(payload)
    assert event.payload is payload


async def test_event_priority_comes_from_argument_payload_or_default() -> None:
    q = CollectorQueue(
        [Collector("echo", echo)],
        queue_type=QueueType.PRIORITY,
        default_priority=42,
        logging=False,
    )
    async with q:
        pub = q.get_publisher()
        assert (await pub.send(1)).priority == 42
        assert (await pub.send(Payload(1, priority=7))).priority == 7
        assert (await pub.send(Payload(1, priority=7), priority=3)).priority == 3
        assert (await pub.send(1, priority=0)).priority == 0
        await pub.wait()


@pytest.mark.parametrize("priority", ["1", 1.5, True])
async def test_priority_must_be_an_int(queue: CollectorQueue, priority: Any) -> None:
    with pytest.raises(TypeError, match="priority must be an int"):
        await queue.get_publisher().send(1, priority=priority)
    with pytest.raises(TypeError, match="priority must be an int"):
        queue.get_publisher().send_nowait(1, priority=priority)


async def test_send_before_start_and_after_shutdown_raises_queue_closed() -> None:
    q = CollectorQueue([Collector("echo", echo)], logging=False)
    pub = q.get_publisher()
    with pytest.raises(QueueClosed, match="not running"):
        await pub.send(1)
    with pytest.raises(QueueClosed, match="not running"):
        pub.send_nowait(1)
    async with q:
        await (await pub.send(1)).wait()
    with pytest.raises(QueueClosed, match="shut down"):
        await pub.send(1)


async def test_send_nowait(queue: CollectorQueue) -> None:
    event = queue.get_publisher().send_nowait("now")
    assert await event.wait() == [Ok("now")]


async def test_bounded_queue_send_waits_and_send_nowait_raises() -> None:
    gate = Gate()
    q = CollectorQueue(
        [Collector("b", gate)],
        autoscale=False,
        max_consumers=1,
        maxsize=1,
        logging=False,
    )
    async with q:
        pub = q.get_publisher()
        first = await pub.send(1)
        await gate.until_running(1)  # the consumer holds event 1
        second = await pub.send(2)  # fills the queue
        with pytest.raises(QueueFull, match="maxsize=1"):
            pub.send_nowait(3)
        third_send = asyncio.ensure_future(pub.send(3))
        await asyncio.sleep(0)
        assert not third_send.done()
        gate.open()
        third = await third_send
        results = [await e.wait() for e in (first, second, third)]
    assert results == [[Ok(1)], [Ok(2)], [Ok(3)]]


async def test_publisher_wait_returns_when_everything_sent_is_handled() -> None:
    gate = Gate()
    async with CollectorQueue([Collector("b", gate)], logging=False) as q:
        pub = q.get_publisher()
        events = [await pub.send(i) for i in range(5)]
        waiter = asyncio.ensure_future(pub.wait())
        await asyncio.sleep(0)
        assert not waiter.done()
        gate.open()
        await asyncio.wait_for(waiter, 10)
        assert all(e.is_done() for e in events)


async def test_send_threadsafe_from_another_thread(queue: CollectorQueue) -> None:
    pub = queue.get_publisher()
    outcome: list[ResultList] = []

    def worker() -> None:
        outcome.append(pub.send_threadsafe("from thread").result(timeout=10))

    thread = threading.Thread(target=worker)
    thread.start()
    await asyncio.to_thread(thread.join, 10)
    assert outcome == [[Ok("from thread")]]


def test_send_threadsafe_without_a_running_queue_fails_the_future() -> None:
    q = CollectorQueue([Collector("echo", echo)], logging=False)
    future = q.get_publisher().send_threadsafe(1)
    with pytest.raises(QueueClosed, match="not running"):
        future.result(timeout=1)


def test_publisher_repr() -> None:
    q = CollectorQueue([Collector("echo", echo)], logging=False)
    assert repr(q.get_publisher()) == "<EventPublisher FIFO qsize=0>"
    assert q.get_publisher().queue_type is QueueType.FIFO


# -- CollectorEvent -------------------------------------------------------------


async def test_event_answer_is_seen_by_every_waiter() -> None:
    event: CollectorEvent[int] = CollectorEvent(Payload(1), 100, 1.0)
    assert not event.is_done()
    assert not event.done()
    assert event.get_result() is None
    assert event.service_time is None
    assert event.wait_time is None
    assert "pending" in repr(event)
    waiters = [asyncio.ensure_future(event.wait()) for _ in range(3)]
    awaited = asyncio.ensure_future(_await(event))
    await asyncio.sleep(0)
    answer = ResultList([Ok(1)])
    assert event.set_result(answer) is True
    assert event.set_result(ResultList([Error("late")])) is False
    for waiter in (*waiters, awaited):
        assert await waiter is answer
    assert event.is_done()
    assert event.get_result() is answer
    assert await event.wait() is answer
    assert "done" in repr(event)


async def _await(event: CollectorEvent[Any]) -> ResultList:
    return await event


async def test_event_wait_timeout_leaves_the_event_pending() -> None:
    event: CollectorEvent[int] = CollectorEvent(Payload(1), 100, 0.0)
    with pytest.raises(TimeoutError):
        await event.wait(timeout=0.001)
    assert not event.is_done()
    answer = ResultList([Ok(2)])
    event.set_result(answer)
    assert await event.wait(timeout=0.001) is answer


async def test_event_ids_are_unique() -> None:
    events: list[CollectorEvent[int]] = [
        CollectorEvent(Payload(i), 100, 0.0) for i in range(3)
    ]
    assert len({e.id for e in events}) == 3


async def test_event_times_come_from_the_queue_clock(clock: FakeClock) -> None:
    gate = Gate()
    q = CollectorQueue([Collector("b", gate)], clock=clock, logging=False)
    async with q:
        clock.now = 10.0
        event = await q.get_publisher().send(1)
        assert event.sent_at == 10.0
        clock.now = 10.5
        await gate.until_running(1)
        assert event.started_at == 10.5
        clock.now = 12.0
        gate.open()
        await event.wait()
    assert event.finished_at == 12.0
    assert event.service_time == pytest.approx(1.5)
    assert event.wait_time == pytest.approx(2.0)
