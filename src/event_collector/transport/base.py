"""The transport seam: where a collector queue's events come from and where
their answers go.

A collector queue does not know what carries its events. Its publisher puts
events into the transport; its consumers take them from the transport's
*inbox*, a local :class:`~event_collector._eventqueue.EventQueue` that the
transport keeps filled (the in-memory transport puts sends straight into
it; a broker's transport fetches into it for the idle consumers); each
answered event is *settled* (a broker acknowledges it and sends the answer
back); at shutdown the transport hands back what no consumer started; and
the monitor sizes the pool on the transport's *backlog*.

Every answer goes through the consumer pool's one settle path, which sets
the answer, updates the metrics, calls :attr:`Transport.settle` and then the
observers, so observers, metrics and acknowledgements always agree on what
happened to an event.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .._eventqueue import EventQueue
    from .._models import CollectorEvent, QueueType

__all__ = ["Transport"]


class Transport(Protocol):
    """What a :class:`~event_collector.queue.CollectorQueue` needs of the
    thing that carries its events (``CollectorQueue(..., transport=...)``).

    The queue calls :meth:`attach` once, in its constructor, then
    :meth:`start` when it starts, :meth:`close` when its shutdown begins,
    :meth:`hand_back` once its consumers have stopped, and :meth:`stop` last.
    """

    def put(self, event: CollectorEvent[Any]) -> Awaitable[None]:
        """Accept an event from a publisher, waiting for room when the
        backlog is bounded; raise ``QueueClosed`` when the transport does not
        accept. (An ``async def`` method fits.)"""
        ...

    def put_nowait(self, event: CollectorEvent[Any]) -> None:
        """Accept an event without waiting; raise ``QueueFull`` or
        ``QueueClosed``."""
        ...

    @property
    def settle(self) -> Callable[[CollectorEvent[Any]], None] | None:
        """Called once with each event the queue has answered (acknowledge
        it, send the answer back), or ``None`` when there is nothing to do,
        so that the hot path skips the call. An event a shutdown cancelled
        is answered ``Error(EventCancelled)`` here too; a broker's transport
        may leave such an event for redelivery rather than acknowledge it.
        What it raises is logged."""
        ...

    def backlog(self) -> int:
        """Events waiting for a consumer, as the autoscaler should count
        them."""
        ...

    def attach(self, *, queue_type: QueueType, maxsize: int) -> EventQueue:
        """Take the queue's settings and return the inbox its consumers take
        events from. Raise ``ConfigError`` for a setting the transport
        cannot keep (a queue type, a bound)."""
        ...

    @property
    def closed_reason(self) -> str | None:
        """Why the transport refuses events, or ``None`` while it accepts."""
        ...

    async def start(self) -> None:
        """Start accepting events (on the running loop)."""
        ...

    def close(self, reason: str) -> None:
        """Refuse events from now on (``QueueClosed(reason)``), waking the
        publishers that wait for room."""
        ...

    def hand_back(self) -> list[CollectorEvent[Any]]:
        """Take back what no consumer started. Return the events the queue
        must answer itself (with ``Error(EventCancelled)``): all of them in
        memory; none for a broker that redelivers them elsewhere."""
        ...

    async def stop(self) -> None:
        """Release what :meth:`start` acquired; called once, last."""
        ...
