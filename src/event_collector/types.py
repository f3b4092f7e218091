"""The callable contracts of event-collector, named once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from ._compat import TypeAliasType
from .data import Context, Payload
from .messagebus import BusHandler

if TYPE_CHECKING:
    from ._models import CollectorEvent

__all__ = [
    "BatchProcessor",
    "BusHandler",
    "EventObserver",
    "LifecycleManager",
    "Processor",
]

Processor = TypeAliasType(
    "Processor", Callable[[Payload[Any], Context], Awaitable[Any]]
)
"""A collector's handler: ``async def processor(payload, ctx)``.

It returns a result (:class:`~event_collector.data.Ok` /
:class:`~event_collector.data.Error`) or any plain value, which is wrapped in
``Ok``; an exception it raises becomes an ``Error``.
"""

BatchProcessor = TypeAliasType(
    "BatchProcessor",
    Callable[[list[Payload[Any]], Context], Awaitable[Sequence[Any]]],
)
"""A batch collector's handler: ``async def processor(payloads, ctx)``,
returning one result or plain value per payload, in their order."""

LifecycleManager = TypeAliasType(
    "LifecycleManager", Callable[[Context], AbstractAsyncContextManager[Any]]
)
"""A factory of an async context manager, given the collector's context:
entered at the collector's ``setup``, exited at its ``teardown``."""

EventObserver = TypeAliasType("EventObserver", Callable[["CollectorEvent[Any]"], None])
"""Called with every event the moment it is answered (see
``CollectorQueue.add_event_observer``). It must be quick; what it raises is
logged, and the next observer still sees the event."""
