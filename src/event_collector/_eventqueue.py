"""The internal event queue: FIFO, LIFO or by priority, optionally bounded,
closable.

Besides ``put``, ``put_nowait``, ``get``, ``qsize``, ``open``, ``close``
and ``drain``, the consumers read the storage itself (``items``, true while
an event is queued), take with :meth:`EventQueue.taker` and wait on
:meth:`EventQueue.getter`, and the queue's monitor reads ``put_count`` and
sleeps on ``put_waiter``. Closing makes every put raise
:class:`~event_collector.exceptions.QueueClosed`, including the ones blocked
on a full queue, which is what lets a shutdown finish while handlers are
blocked publishing back into their own queue.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Callable
from typing import Any

from ._models import CollectorEvent
from .exceptions import QueueClosed, QueueFull

__all__ = ["EventQueue", "LifoEventQueue", "PriorityEventQueue"]

NOT_STARTED = "the collector queue is not running: call init_queue() or use async with"


class EventQueue:
    """First in, first out."""

    __slots__ = (
        "_closed",
        "_getters",
        "_held_putters",
        "_items",
        "_loop",
        "_maxsize",
        "_putters",
        "_store",
        "put_count",
        "put_waiter",
    )

    def __init__(self, maxsize: int = 0) -> None:
        self._maxsize = maxsize
        self._items: Any = self._new_storage()
        # What put_nowait calls to store an event: the deque's own append
        # (no Python frame on the send path; benchmark: throughput), or the
        # heap push.
        self._store: Callable[[CollectorEvent[Any]], None] = self._storer()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()
        # The putters that wait for room for an event held behind its
        # ordering key, which counts toward the bound too (see pass_room).
        self._held_putters: set[asyncio.Future[None]] = set()
        # Why the queue refuses puts, or None while it accepts them.
        self._closed: str | None = NOT_STARTED
        self._loop: asyncio.AbstractEventLoop | None = None
        self.put_count = 0
        """Events accepted so far (the arrival counter)."""
        self.put_waiter: asyncio.Future[None] | None = None
        """A future the next put resolves: how an idle monitor sleeps."""

    def _new_storage(self) -> Any:
        return deque()

    def _storer(self) -> Callable[[CollectorEvent[Any]], None]:
        store: Callable[[CollectorEvent[Any]], None] = self._items.append
        return store

    def _pop(self) -> CollectorEvent[Any]:
        return self._items.popleft()  # type: ignore[no-any-return]

    # -- state -------------------------------------------------------------

    def open(self) -> None:
        """Start accepting events (on the running loop, if there is one)."""
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._closed = None

    def close(self, reason: str) -> None:
        """Refuse every put from now on, waking blocked putters."""
        self._closed = reason
        while self._putters:
            fut = self._putters.popleft()
            if not fut.done() and not fut.get_loop().is_closed():
                fut.set_result(None)

    @property
    def closed_reason(self) -> str | None:
        """Why puts are refused, or ``None`` while the queue accepts them."""
        return self._closed

    @property
    def maxsize(self) -> int:
        """The bound on queued events; 0 for none."""
        return self._maxsize

    @property
    def items(self) -> Any:
        """The storage itself (true while an event is queued), for the
        consumers' fast path."""
        return self._items

    def taker(self) -> Callable[[], CollectorEvent[Any]]:
        """The cheapest callable that takes the next queued event.

        For an unbounded FIFO or LIFO queue it is the deque's own ``popleft``
        or ``pop``: no putter can be waiting for room there. Otherwise it is
        :meth:`get_nowait`. Decided once, by the consumer pool, not per
        event (benchmark: throughput).
        """
        take: Callable[[], CollectorEvent[Any]]
        take = self.get_nowait if self._maxsize else self._items.popleft
        return take

    def qsize(self) -> int:
        """Events waiting to be taken."""
        return len(self._items)

    # -- put ---------------------------------------------------------------

    def put_nowait(self, event: CollectorEvent[Any]) -> None:
        """Queue ``event`` or raise ``QueueClosed`` / ``QueueFull``."""
        if self._closed is not None:
            raise QueueClosed(self._closed)
        if self._maxsize and self._maxsize <= len(self._items):
            raise QueueFull(f"the event queue is full (maxsize={self._maxsize})")
        try:
            # Wake first, store after: a wake-up that fails (the queue's loop
            # is closed) must leave the event unaccepted. The woken consumer
            # runs later, when the event is there.
            if self._getters:
                self._wake(self._getters)
            waiter = self.put_waiter
            if waiter is not None:
                self.put_waiter = None
                if not waiter.done():
                    waiter.set_result(None)
        except RuntimeError as exc:
            if not self._loop_closed():
                raise
            self.close("the collector queue's event loop is closed")
            raise QueueClosed(self._closed) from exc
        self._store(event)
        self.put_count += 1

    async def put(self, event: CollectorEvent[Any]) -> None:
        """Queue ``event``, waiting for room in a bounded queue."""
        if self._closed is not None:
            raise QueueClosed(self._closed)
        maxsize = self._maxsize
        if maxsize and maxsize <= len(self._items):
            await self._wait_for_room()
        self.put_nowait(event)

    async def _wait_for_room(self) -> None:
        while self._maxsize <= len(self._items):
            await self.wait_for_room()
            if self._closed is not None:
                raise QueueClosed(self._closed)

    # -- flow control's own puts ---------------------------------------------

    def push(self, item: Any) -> None:
        """Store work flow control releases (an event held back by its
        ordering key, a collector call whose turn came), waking a consumer:
        it was accepted before, so neither the bound, nor closing, nor the
        arrival count apply."""
        if self._getters:
            self._wake(self._getters)
        waiter = self.put_waiter
        if waiter is not None:
            self.put_waiter = None
            if not waiter.done():
                waiter.set_result(None)
        self._store(item)

    def discard(self, event: CollectorEvent[Any]) -> bool:
        """Remove ``event`` if it is still queued (O(n)); return whether it
        was. Frees its room for a waiting put."""
        try:
            self._remove(event)
        except ValueError:
            return False
        if self._putters:
            self._wake(self._putters)
        return True

    def _remove(self, event: CollectorEvent[Any]) -> None:
        self._items.remove(event)

    async def wait_for_room(self, held: bool = False) -> None:
        """Wait until a take (or the queue closing) may have made room;
        ``held`` for an event that would be held behind its ordering key."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._putters.append(fut)
        if held:
            self._held_putters.add(fut)
        try:
            await fut
        except BaseException:
            fut.cancel()
            try:
                self._putters.remove(fut)
            except ValueError:
                # We were woken and then cancelled: pass the room on.
                if len(self._items) < self._maxsize:
                    self._wake(self._putters)
            raise
        finally:
            self._held_putters.discard(fut)

    def pass_room(self) -> None:
        """A held event's putter was woken but its event still finds no
        room (held events count toward the bound): hand the wake-up to the
        first putter of an event that would go into the queue, if there is
        room for it. Never to another held one, which could only pass it
        back."""
        if len(self._items) >= self._maxsize:
            return
        held = self._held_putters
        for fut in self._putters:
            if fut not in held and not fut.done():
                self._putters.remove(fut)
                fut.set_result(None)
                return

    # -- get ---------------------------------------------------------------

    def get_nowait(self) -> CollectorEvent[Any]:
        """Take the next event; ``IndexError`` when there is none."""
        event = self._pop()
        if self._putters:
            self._wake(self._putters)
        return event

    async def get(self) -> CollectorEvent[Any]:
        """Take the next event, waiting for one."""
        while not self._items:
            fut = self.getter()
            try:
                await fut
            except BaseException:
                self.forget_getter(fut)
                raise
        return self.get_nowait()

    def getter(self) -> asyncio.Future[None]:
        """A future resolved by a put when it is the oldest waiting one (the
        event may be taken by the time its waiter runs: look again). A
        consumer awaits it in place of :meth:`get`, one coroutine less each
        time it falls idle; if the wait ends in an exception, it must call
        :meth:`forget_getter`."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._getters.append(fut)
        return fut

    def forget_getter(self, fut: asyncio.Future[None]) -> None:
        """Withdraw a :meth:`getter` whose waiter was cancelled."""
        fut.cancel()
        try:
            self._getters.remove(fut)
        except ValueError:
            # Woken, then cancelled before running: another getter must
            # take the event this one was woken for.
            if self._items:
                self._wake(self._getters)

    def _loop_closed(self) -> bool:
        return self._loop is not None and self._loop.is_closed()

    @staticmethod
    def _wake(waiters: deque[asyncio.Future[None]]) -> None:
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def drain(self) -> list[CollectorEvent[Any]]:
        """Remove and return every queued event."""
        events = []
        while self._items:
            events.append(self._pop())
        return events


class LifoEventQueue(EventQueue):
    """Last in, first out."""

    __slots__ = ()

    def taker(self) -> Callable[[], CollectorEvent[Any]]:
        take: Callable[[], CollectorEvent[Any]]
        take = self.get_nowait if self._maxsize else self._items.pop
        return take

    def _pop(self) -> CollectorEvent[Any]:
        return self._items.pop()  # type: ignore[no-any-return]


class PriorityEventQueue(EventQueue):
    """Lowest ``priority`` first; equal priorities in the order sent."""

    __slots__ = ("_seq",)

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self._seq = itertools.count()

    def _new_storage(self) -> Any:
        return []

    def _storer(self) -> Callable[[CollectorEvent[Any]], None]:
        return self._push

    def _push(self, event: CollectorEvent[Any]) -> None:
        heapq.heappush(self._items, (event.priority, next(self._seq), event))

    def _pop(self) -> CollectorEvent[Any]:
        return heapq.heappop(self._items)[2]  # type: ignore[no-any-return]

    def _remove(self, event: CollectorEvent[Any]) -> None:
        items = self._items
        for index, entry in enumerate(items):
            if entry[2] is event:
                items[index] = items[-1]
                items.pop()
                heapq.heapify(items)
                return
        raise ValueError("not queued")

    def taker(self) -> Callable[[], CollectorEvent[Any]]:
        return self.get_nowait
