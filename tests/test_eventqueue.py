"""The internal event queue: order, bound, closing, waiters."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from event_collector._eventqueue import (
    NOT_STARTED,
    EventQueue,
    LifoEventQueue,
    PriorityEventQueue,
)
from event_collector.data import Payload
from event_collector.exceptions import QueueClosed, QueueFull
from event_collector.publisher import CollectorEvent


def ev(value: Any, priority: int = 100) -> CollectorEvent[Any]:
    return CollectorEvent(Payload(value), priority, 0.0)


def opened(cls: type[EventQueue] = EventQueue, maxsize: int = 0) -> EventQueue:
    queue = cls(maxsize)
    queue.open()
    return queue


def values(queue: EventQueue) -> list[Any]:
    return [e.payload.value for e in queue.drain()]


def test_new_queue_is_closed_until_opened() -> None:
    queue = EventQueue()
    assert queue.closed_reason == NOT_STARTED
    with pytest.raises(QueueClosed, match="not running"):
        queue.put_nowait(ev(1))
    queue.open()
    assert queue.closed_reason is None
    queue.put_nowait(ev(1))
    assert queue.qsize() == 1


async def test_put_on_closed_queue_raises_with_the_reason() -> None:
    queue = opened()
    queue.close("shut down for the test")
    with pytest.raises(QueueClosed, match="shut down for the test"):
        await queue.put(ev(1))
    with pytest.raises(QueueClosed, match="shut down for the test"):
        queue.put_nowait(ev(1))


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (EventQueue, [1, 2, 3, 4]),
        (LifoEventQueue, [4, 3, 2, 1]),
    ],
)
def test_fifo_and_lifo_order(cls: type[EventQueue], expected: list[int]) -> None:
    queue = opened(cls)
    for i in (1, 2, 3, 4):
        queue.put_nowait(ev(i))
    assert [queue.get_nowait().payload.value for _ in range(4)] == expected


def test_priority_order_lowest_first_ties_in_put_order() -> None:
    queue = opened(PriorityEventQueue)
    sent = [("a", 5), ("b", 1), ("c", 5), ("d", 1), ("e", 3), ("f", 5)]
    for value, priority in sent:
        queue.put_nowait(ev(value, priority))
    taken = [queue.get_nowait().payload.value for _ in sent]
    assert taken == ["b", "d", "e", "a", "c", "f"]


def test_priority_queue_never_compares_events() -> None:
    # Equal priorities must not fall through to comparing the events.
    queue = opened(PriorityEventQueue)
    for i in range(50):
        queue.put_nowait(ev({"unorderable": i}, 7))
    assert [e.payload.value["unorderable"] for e in queue.drain()] == list(range(50))


def test_put_count_and_qsize() -> None:
    queue = opened()
    for i in range(3):
        queue.put_nowait(ev(i))
    queue.get_nowait()
    assert queue.qsize() == 2
    assert queue.put_count == 3


def test_get_nowait_on_empty_queue_raises_index_error() -> None:
    with pytest.raises(IndexError):
        opened().get_nowait()


def test_bounded_queue_put_nowait_raises_queue_full() -> None:
    queue = opened(maxsize=2)
    assert queue.maxsize == 2
    queue.put_nowait(ev(1))
    assert queue.qsize() == 1
    queue.put_nowait(ev(2))
    assert queue.qsize() == queue.maxsize
    with pytest.raises(QueueFull, match="maxsize=2"):
        queue.put_nowait(ev(3))
    assert queue.put_count == 2


async def test_bounded_put_waits_for_room() -> None:
    queue = opened(maxsize=1)
    queue.put_nowait(ev(1))
    putter = asyncio.create_task(queue.put(ev(2)))
    await asyncio.sleep(0)
    assert not putter.done()
    assert queue.get_nowait().payload.value == 1
    await putter
    assert values(queue) == [2]


async def test_close_wakes_blocked_putters_with_queue_closed() -> None:
    queue = opened(maxsize=1)
    queue.put_nowait(ev(1))
    putters = [asyncio.create_task(queue.put(ev(i))) for i in (2, 3)]
    await asyncio.sleep(0)
    queue.close("closing for the test")
    for putter in putters:
        with pytest.raises(QueueClosed, match="closing for the test"):
            await putter
    assert values(queue) == [1]


async def test_cancelled_putter_passes_the_room_on() -> None:
    queue = opened(maxsize=1)
    queue.put_nowait(ev(1))
    first = asyncio.create_task(queue.put(ev(2)))
    second = asyncio.create_task(queue.put(ev(3)))
    await asyncio.sleep(0)
    queue.get_nowait()  # wakes `first`...
    first.cancel()  # ...which is cancelled before it runs
    await second
    with pytest.raises(asyncio.CancelledError):
        await first
    assert values(queue) == [3]


async def test_get_waits_for_a_put() -> None:
    queue = opened()
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()
    queue.put_nowait(ev("x"))
    assert (await getter).payload.value == "x"


async def test_cancelled_getter_passes_the_event_on() -> None:
    queue = opened()
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait(ev("x"))  # wakes `first`...
    first.cancel()  # ...which is cancelled before it runs
    assert (await second).payload.value == "x"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert queue.qsize() == 0


async def test_put_resolves_the_put_waiter_once() -> None:
    queue = opened()
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    queue.put_waiter = waiter
    queue.put_nowait(ev(1))
    assert waiter.done()
    assert queue.put_waiter is None
    queue.put_nowait(ev(2))  # no waiter: nothing to resolve


def test_drain_empties_the_queue_in_its_order() -> None:
    queue = opened(PriorityEventQueue)
    queue.put_nowait(ev("low", 9))
    queue.put_nowait(ev("high", 1))
    assert values(queue) == ["high", "low"]
    assert queue.qsize() == 0
    assert queue.drain() == []
