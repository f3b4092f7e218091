"""The transport seam: a transport written with plain methods runs a queue,
and the queue settles every answered event through it exactly once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conftest import Gate, LoopErrors, is_cancelled
from event_collector import Collector, CollectorQueue, ConfigError, Ok, QueueType
from event_collector._eventqueue import EventQueue
from event_collector._models import CollectorEvent
from event_collector.transport import MemoryTransport, Transport


class Recording:
    """A transport over a local queue that records what the queue does
    with it, written with methods (as a broker's transport would be)."""

    def __init__(self) -> None:
        self.inbox = EventQueue()
        self.settled: list[int] = []
        self.calls: list[str] = []

    def attach(self, *, queue_type: QueueType, maxsize: int) -> EventQueue:
        if queue_type is not QueueType.FIFO:
            raise ConfigError(f"queue_type: only FIFO here (got {queue_type})")
        self.calls.append("attach")
        return self.inbox

    async def put(self, event: CollectorEvent[Any]) -> None:
        self.inbox.put_nowait(event)

    def put_nowait(self, event: CollectorEvent[Any]) -> None:
        self.inbox.put_nowait(event)

    def settle(self, event: CollectorEvent[Any]) -> None:
        assert event.is_done()  # answered before it is settled
        self.settled.append(event.id)

    def backlog(self) -> int:
        return self.inbox.qsize()

    @property
    def closed_reason(self) -> str | None:
        return self.inbox.closed_reason

    async def start(self) -> None:
        self.calls.append("start")
        self.inbox.open()

    def close(self, reason: str) -> None:
        self.calls.append("close")
        self.inbox.close(reason)

    def hand_back(self) -> list[CollectorEvent[Any]]:
        self.calls.append("hand_back")
        return self.inbox.drain()

    async def stop(self) -> None:
        self.calls.append("stop")


def _members(cls: type) -> set[str]:
    return {name for name in vars(cls) if not name.startswith("_")}


def test_a_transport_with_methods_fits_the_protocol() -> None:
    # mypy --strict checks these two assignments against the protocol...
    transport: Transport = Recording()
    default: Transport = MemoryTransport()
    # ...and at run time both have every member the protocol names.
    wanted = _members(Transport)
    assert wanted >= {"attach", "put", "put_nowait", "settle", "backlog", "stop"}
    assert all(hasattr(transport, name) for name in wanted)
    default.attach(queue_type=QueueType.FIFO, maxsize=0)
    assert all(hasattr(default, name) for name in wanted)


async def test_every_answered_event_is_settled_once(loop_guard: LoopErrors) -> None:
    gate = Gate()
    transport = Recording()
    queue = CollectorQueue(
        [Collector("c", gate)],
        transport=transport,
        autoscale=False,
        max_consumers=1,
        consumer_shutdown_timeout=0.01,
        logging=False,
    )
    assert queue.transport is transport
    async with asyncio.timeout(10):
        async with queue:
            publisher = queue.get_publisher()
            handled = await publisher.send("handled")
            gate.open()
            assert (await handled).first() == Ok("handled")
            gate.opened.clear()
            running = await publisher.send("running")
            await gate.until_running(1)
            queued = await publisher.send("queued")
    assert is_cancelled(await running)
    assert is_cancelled(await queued)
    assert sorted(transport.settled) == sorted(e.id for e in (handled, running, queued))
    assert transport.calls == ["attach", "start", "close", "hand_back", "stop"]


def test_a_transport_refuses_a_setting_with_a_config_error() -> None:
    with pytest.raises(ConfigError, match="queue_type"):
        CollectorQueue(
            [Collector("c", Gate())], queue_type=QueueType.LIFO, transport=Recording()
        )


def test_a_memory_transport_serves_one_queue() -> None:
    transport = MemoryTransport()
    CollectorQueue([Collector("c", Gate())], transport=transport)
    with pytest.raises(ConfigError, match="one CollectorQueue"):
        CollectorQueue([Collector("c", Gate())], transport=transport)


def test_something_else_as_transport_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="transport"):
        CollectorQueue([Collector("c", Gate())], transport=object())  # type: ignore[arg-type]
