"""The in-memory transport: the default one, a FIFO, LIFO or priority queue
in the process itself."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .._eventqueue import EventQueue, LifoEventQueue, PriorityEventQueue
from .._models import CollectorEvent, QueueType
from ..exceptions import ConfigError

__all__ = ["MemoryTransport"]

_QUEUE_CLASSES: dict[QueueType, type[EventQueue]] = {
    QueueType.FIFO: EventQueue,
    QueueType.LIFO: LifoEventQueue,
    QueueType.PRIORITY: PriorityEventQueue,
}


class MemoryTransport:
    """Events sent in this process, handled in this process.

    What ``CollectorQueue`` uses when no ``transport`` is given; its
    ``queue_type`` and ``maxsize`` choose the order and the bound. Sends go
    straight into the inbox the consumers take from: the publisher calls the
    inbox's own ``put`` and ``put_nowait``, with no frame of this class in
    between (benchmark: throughput), and there is nothing to settle.
    """

    __slots__ = ("_inbox", "backlog", "put", "put_nowait", "settle")

    def __init__(self) -> None:
        self._inbox: EventQueue | None = None
        self.put: Callable[[CollectorEvent[Any]], Awaitable[None]]
        self.put_nowait: Callable[[CollectorEvent[Any]], None]
        self.backlog: Callable[[], int]
        self.settle: Callable[[CollectorEvent[Any]], None] | None = None

    def attach(self, *, queue_type: QueueType, maxsize: int) -> EventQueue:
        """Make the inbox of the queue's type and bound (once)."""
        if self._inbox is not None:
            raise ConfigError(
                "transport: a MemoryTransport serves one CollectorQueue; "
                "give each queue its own"
            )
        inbox = self._inbox = _QUEUE_CLASSES[queue_type](maxsize)
        self.put = inbox.put
        self.put_nowait = inbox.put_nowait
        self.backlog = inbox.qsize
        return inbox

    @property
    def closed_reason(self) -> str | None:
        """Why sends are refused, or ``None`` while they are accepted."""
        return self._attached().closed_reason

    async def start(self) -> None:
        """Accept sends from now on."""
        self._attached().open()

    def close(self, reason: str) -> None:
        """Refuse sends from now on."""
        self._attached().close(reason)

    def hand_back(self) -> list[CollectorEvent[Any]]:
        """Every event still queued: nobody else will handle them."""
        return self._attached().drain()

    async def stop(self) -> None:
        """Nothing to release."""

    def _attached(self) -> EventQueue:
        if self._inbox is None:
            raise RuntimeError("the MemoryTransport is not attached to a queue")
        return self._inbox

    def __repr__(self) -> str:
        inbox = self._inbox
        qsize = "detached" if inbox is None else f"qsize={inbox.qsize()}"
        return f"<MemoryTransport {qsize}>"
