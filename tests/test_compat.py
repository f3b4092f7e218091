"""Code written for the published 0.2.x API runs unchanged: its import paths,
``Payload`` with a delivery mode, ``Context``, ``lifecycle``, results,
``abind``, queue types, the publisher, events and the message bus."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from event_collector.collector import Collector
from event_collector.data import (
    Context,
    Delivery,
    Error,
    Ok,
    Payload,
    ResultList,
    abind,
)
from event_collector.messagebus import (
    BusEventQueue,
    Command,
    Message,
    MessageBus,
)
from event_collector.publisher import CollectorEvent, EventPublisher, QueueType
from event_collector.queue import CollectorQueue, InitializedQueue, ShutDownQueue
from event_collector.router import Router, SimpleRouter


def test_the_top_level_package_exports_the_same_objects() -> None:
    import event_collector

    for name in (
        "Collector",
        "CollectorQueue",
        "Context",
        "Delivery",
        "Error",
        "Ok",
        "Payload",
        "ResultList",
        "abind",
        "QueueType",
        "EventPublisher",
        "CollectorEvent",
        "Router",
        "SimpleRouter",
        "Message",
        "Command",
        "MessageBus",
        "InitializedQueue",
        "ShutDownQueue",
    ):
        assert name in event_collector.__all__, name
    assert event_collector.Payload is Payload
    assert event_collector.CollectorQueue is CollectorQueue
    assert event_collector.SimpleRouter is SimpleRouter
    assert event_collector.Router is Router


# An application written against 0.2.x: a store behind a lifecycle, handlers
# that use the context both ways, payloads routed by key and topic.


@contextlib.asynccontextmanager
async def open_store(ctx: Context) -> AsyncIterator[None]:
    ctx.store = {}
    ctx["opened"] = True
    yield
    ctx.store.clear()
    ctx["opened"] = False


async def save(payload: Payload[Any], ctx: Context) -> Any:
    key, value = payload.value
    ctx["store"][key] = value
    return await abind(count, ctx)


async def count(ctx: Context) -> int:
    return len(ctx.store)


async def audit(payload: Payload[Any], ctx: Context) -> Any:
    if payload.value == "fail":
        raise ValueError("audit refused")
    return Ok(f"audited {payload.value}")


async def test_a_0_2_application_runs_unchanged() -> None:
    store_ctx = Context()
    store = Collector("store", save, ctx=store_ctx, lifecycle=open_store)
    auditor = Collector("audit", audit, topics=["audit"])
    queue = CollectorQueue(
        [store, auditor],
        min_consumers=1,
        max_consumers=10,
        queue_type=QueueType.FIFO,
        logging=False,
    )
    async with queue:
        assert store_ctx.opened is True
        publisher = queue.get_publisher()
        assert isinstance(publisher, EventPublisher)

        saved = await publisher.send(
            Payload(("a", 1), delivery=Delivery.KEY, keys=["store"])
        )
        assert isinstance(saved, CollectorEvent)
        results = await saved.wait()
        assert isinstance(results, ResultList)
        assert saved.is_done()
        assert saved.get_result() is results
        assert results.size() == 1
        # abind's Ok is returned as it is, not wrapped twice.
        assert results.first().ok()
        assert results.first().unwrap() == 1

        audited = await publisher.send(
            Payload("order-7", delivery=Delivery.TOPIC, topics=["audit"])
        )
        first = (await audited.wait()).first()
        assert first.ok()
        assert not first.error()
        assert first.unwrap() == "audited order-7"

        refused = await publisher.send(
            Payload("fail", delivery=Delivery.TOPIC, topics=["audit"])
        )
        failure = (await refused.wait()).first()
        assert failure.error()
        assert not failure.ok()
        with pytest.raises(ValueError, match="audit refused"):
            failure.unwrap()

        both = await publisher.send(
            Payload(("b", 2), delivery=Delivery.BROADCAST, priority=1)
        )
        results = await both.wait()
        assert [r.ok() for r in results.iter()] == [True, True]
        assert len(results.results) == 2
        assert isinstance(results.results[0], Ok)
    assert store_ctx.opened is False
    assert store_ctx.store == {}


async def test_result_matching_as_in_0_2() -> None:
    async def maybe(payload: Payload[Any], ctx: Context) -> Any:
        if payload.value < 0:
            return Error("negative", details={"value": payload.value})
        return payload.value

    async with CollectorQueue([Collector("m", maybe)], logging=False) as queue:
        publisher = queue.get_publisher()
        events = [await publisher.send(v) for v in (1, -1)]
        outcomes = []
        for event in events:
            match (await event.wait()).first():
                case Ok(value):
                    outcomes.append(("ok", value))
                case Error(err):
                    outcomes.append(("error", err))
    assert outcomes == [("ok", 1), ("error", "negative")]


@pytest.mark.parametrize("queue_type", [QueueType.FIFO, QueueType.LIFO])
async def test_queue_types_of_0_2(queue_type: QueueType) -> None:
    async def echo(payload: Payload[Any], ctx: Context) -> Any:
        return payload.value

    queue = CollectorQueue([Collector("e", echo)], queue_type=queue_type, logging=False)
    async with queue:
        event = await queue.get_publisher().send("x")
        assert (await event.wait()).first().unwrap() == "x"


async def test_priority_queue_with_payload_priority() -> None:
    async def echo(payload: Payload[Any], ctx: Context) -> Any:
        return payload.value

    queue = CollectorQueue(
        [Collector("e", echo)], queue_type=QueueType.PRIORITY, logging=False
    )
    async with queue:
        event = await queue.get_publisher().send(Payload("p", priority=1))
        assert event.priority == 1
        assert (await event.wait()).first().unwrap() == "p"


class Started(Message):
    pass


class Stop(Command):
    pass


async def test_message_bus_of_0_2() -> None:
    seen: list[str] = []

    async def on_init(msg: InitializedQueue, queue: BusEventQueue) -> None:
        seen.append("initialized")
        queue.append(Started())

    async def on_started(msg: Started, queue: BusEventQueue) -> None:
        seen.append("started")

    async def on_stop(cmd: Stop, queue: BusEventQueue) -> None:
        seen.append("stop")

    async def on_shutdown(msg: ShutDownQueue, queue: BusEventQueue) -> None:
        seen.append("shut down")

    async def echo(payload: Payload[Any], ctx: Context) -> Any:
        return payload.value

    collector_queue = CollectorQueue([Collector("e", echo)], logging=False)
    msgbus = collector_queue.get_message_bus()
    assert isinstance(msgbus, MessageBus)
    msgbus.add_msg_handler(InitializedQueue, on_init)
    msgbus.add_msg_handler(Started, on_started)
    msgbus.add_cmd_handler(Stop, on_stop)
    msgbus.add_msg_handler(ShutDownQueue, on_shutdown)
    async with collector_queue:
        await msgbus.dispatch(Stop())
    assert seen == ["initialized", "started", "stop", "shut down"]


async def test_abind_of_0_2() -> None:
    async def divide(a: int, b: int) -> float:
        return a / b

    assert (await abind(divide, 1, 2)).unwrap() == 0.5
    failed = await abind(divide, 1, 0)
    assert failed.error()
    with pytest.raises(ZeroDivisionError):
        failed.unwrap()
