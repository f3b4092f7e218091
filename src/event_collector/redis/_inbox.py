"""Where a worker's consumers take events from, and what such an event
carries."""

from __future__ import annotations

import asyncio
from typing import Any

from .._eventqueue import EventQueue
from .._models import CollectorEvent

__all__ = ["Delivered", "Inbox"]


class Inbox(EventQueue):
    """The queue's inbox on Redis: a local FIFO the fetcher fills with what
    the idle consumers can start; a consumer falling idle wakes the
    fetcher."""

    __slots__ = ("demand",)

    def __init__(self) -> None:
        super().__init__(0)
        self.demand = asyncio.Event()
        """Set when a consumer waits for an event."""

    def getter(self) -> asyncio.Future[None]:
        self.demand.set()
        return super().getter()

    def idle_consumers(self) -> int:
        """Consumers waiting for an event, less the events already here."""
        return sum(1 for f in self._getters if not f.done()) - len(self._items)


class Delivered(CollectorEvent[Any]):
    """An event as a worker holds it: the entry it came from."""

    __slots__ = ("band", "entry_id", "reply_to")

    def __init__(
        self,
        payload: Any,
        sent_at: float,
        *,
        band: int,
        entry_id: str,
        event_id: str,
        reply_to: bytes,
        attempt: int,
    ) -> None:
        super().__init__(payload, 0, sent_at)
        payload._eid = event_id
        payload._attempt = attempt
        self.band = band
        self.entry_id = entry_id
        self.reply_to = reply_to
