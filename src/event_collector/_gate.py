"""Per-key ordering: events that share an ordering key run one at a time,
in the order they were sent.

The first event of a key goes into the queue like any other; the ones sent
while it is unanswered wait here, in a queue of their key, and are not in
the event queue at all: they are neither queued (``qsize``) nor busy, so
that a thousand events of one key make the pool grow by nothing. When an
event of a key is answered, the next one of that key goes into the queue.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._models import _PENDING, CollectorEvent
from ._outcome import cancelled
from .data import Error, Payload, ResultList, _plain_payload
from .exceptions import QueueClosed, QueueFull, Superseded

if TYPE_CHECKING:
    from ._eventqueue import EventQueue

__all__ = [
    "KeyGate",
    "KeyedEvent",
    "OrderingKey",
    "check_ordering_key",
    "keyed_event",
]

OrderingKey = str | int


def check_ordering_key(key: object) -> OrderingKey:
    """``key`` if it can be an ordering key (a str or an int), else
    ``TypeError``."""
    if type(key) is str or type(key) is int:
        return key
    if isinstance(key, bool) or not isinstance(key, str | int):
        raise TypeError(
            f"ordering_key must be a str or an int (got ordering_key={key!r})"
        )
    return key


class KeyedEvent(CollectorEvent[Any]):
    """An event sent with an ordering key: answering it lets the next
    event of its key go.

    Build one with :func:`keyed_event`. It has no constructor of its own
    (one frame less per event; benchmark: flow), so the publisher's hot
    path, which builds it inline, sets ``ordering_key`` and ``_gate`` at
    once, as ``keyed_event`` does: neither has a default.
    """

    __slots__ = ("_gate", "ordering_key")

    ordering_key: OrderingKey
    """The key whose events this one is ordered with."""
    _gate: KeyGate

    @property
    def payload(self) -> Payload[Any]:
        """What was sent, as a ``Payload`` carrying its ordering key; made
        when first read, like a plain event's."""
        payload = self._payload
        if payload is None:
            payload = self._payload = _plain_payload(self._value, self.id)
            payload.ordering_key = self.ordering_key
        return payload

    def _set_answer(self, answer: object) -> bool:
        # CollectorEvent._set_answer, inlined (one frame less per event;
        # benchmark: flow): keep the two the same.
        if self._answer is not _PENDING:
            return False
        self._answer = answer
        waiters = self._waiters
        if waiters is not None:
            self._waiters = None
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
        # If it was its key's head, the key's next event goes into the queue
        # (here rather than in a KeyGate method: benchmark: flow).
        gate = self._gate
        key = self.ordering_key
        state = gate._keys.get(key)
        if state is not None and state.head is self:
            gate._advance(key, state)
        return True


def keyed_event(
    payload: Payload[Any] | Any,
    priority: int,
    sent_at: float,
    key: OrderingKey,
    gate: KeyGate,
) -> KeyedEvent:
    """A :class:`KeyedEvent` of ``key``, whose answer ``gate`` hears of."""
    event = KeyedEvent(payload, priority, sent_at)
    event.ordering_key = key
    event._gate = gate
    return event


class _Key:
    """One key's state: the event out in the queue (or running), and the
    ones waiting behind it."""

    __slots__ = ("head", "waiting")

    def __init__(self, head: KeyedEvent) -> None:
        self.head: KeyedEvent = head
        self.waiting: deque[KeyedEvent] = deque()


class KeyGate:
    """Holds back the events of an ordering key while an earlier one of the
    same key is unanswered.

    :param inbox: the event queue the released events go into.
    :param settle: the pool's settle, to answer superseded and cancelled
        events.
    """

    def __init__(
        self,
        inbox: EventQueue,
        settle: Callable[..., bool],
    ) -> None:
        self._inbox = inbox
        self._push = inbox.push
        self._settle = settle
        self._keys: dict[OrderingKey, _Key] = {}
        self._closed = False
        self.held = 0
        """Events waiting behind an earlier event of their key."""

    @property
    def keys(self) -> int:
        """Keys with an unanswered event."""
        return len(self._keys)

    # -- sending --------------------------------------------------------------

    async def put(self, event: KeyedEvent, supersede: bool) -> None:
        """Accept ``event``: into the queue if its key is free, else behind
        the key's earlier events (waiting for room on a bounded queue:
        events held here count toward ``maxsize``)."""
        inbox = self._inbox
        state = self._keys.get(event.ordering_key)
        if state is None:
            await self._first(event, inbox.put)
            return
        maxsize = inbox.maxsize
        woken = False
        while True:
            if inbox.closed_reason is not None:
                raise QueueClosed(inbox.closed_reason)
            if not maxsize or inbox.qsize() + self.held < maxsize:
                break
            if woken:
                inbox.pass_room()
            await inbox.wait_for_room(held=True)
            woken = True
        # The key may have been freed (or superseded) while we waited.
        self._hold(event, supersede, self._keys.get(event.ordering_key))

    def put_nowait(self, event: KeyedEvent, supersede: bool) -> None:
        """Like :meth:`put`, raising ``QueueFull`` instead of waiting."""
        inbox = self._inbox
        state = self._keys.get(event.ordering_key)
        if state is None:
            self._enter(event, inbox.put_nowait)
            return
        # The queue's own fields, read directly (benchmark: flow).
        if inbox._closed is not None:
            raise QueueClosed(inbox._closed)
        maxsize = inbox._maxsize
        if maxsize and inbox.qsize() + self.held >= maxsize:
            raise QueueFull(f"the event queue is full (maxsize={maxsize})")
        if supersede:
            self._hold(event, supersede, state)
            return
        # _hold's common case, inlined (benchmark: flow).
        inbox.put_count += 1
        state.waiting.append(event)
        self.held += 1

    async def _first(self, event: KeyedEvent, put: Callable[..., Any]) -> None:
        key = event.ordering_key
        self._keys[key] = _Key(event)
        try:
            await put(event)
        except BaseException:
            self._forget(key, event)
            raise

    def _enter(self, event: KeyedEvent, put: Callable[..., Any]) -> None:
        key = event.ordering_key
        self._keys[key] = _Key(event)
        try:
            put(event)
        except BaseException:
            self._forget(key, event)
            raise

    def _forget(self, key: OrderingKey, event: KeyedEvent) -> None:
        """Undo the head an unaccepted send made, handing the key to the
        events that came behind it meanwhile."""
        state = self._keys.get(key)
        if state is not None and state.head is event:
            self._advance(key, state)

    def _hold(self, event: KeyedEvent, supersede: bool, state: _Key | None) -> None:
        # Accepted here, not by the queue's put: it counts as an arrival now.
        self._inbox.put_count += 1
        if state is None:
            self._enter(event, self._inbox.push)
            return
        if supersede:
            stale = list(state.waiting)
            state.waiting.clear()
            self.held -= len(stale)
            head = state.head
            if head.started_at is None and self._inbox.discard(head):
                # The key's event in the queue has not started: the new
                # event takes its place there.
                stale.append(head)
                state.head = event
                self._inbox.push(event)
            else:
                state.waiting.append(event)
                self.held += 1
            answer = ResultList(
                (Error(Superseded("a newer event of its ordering key replaced it")),)
            )
            for old in stale:
                self._settle(old, answer, ran=False, measured=False)
            return
        state.waiting.append(event)
        self.held += 1

    # -- answering --------------------------------------------------------------

    def _advance(self, key: OrderingKey, state: _Key) -> None:
        waiting = state.waiting
        if not waiting:
            del self._keys[key]
            return
        nxt = state.head = waiting.popleft()
        self.held -= 1
        if not self._closed:
            self._push(nxt)

    def cancel(self, reason: str) -> None:
        """Answer every held event with ``Error(EventCancelled(reason))``
        and release nothing more (the queue is shutting down)."""
        self._closed = True
        answer = cancelled(reason)
        stop: BaseException | None = None
        for state in list(self._keys.values()):
            waiting = list(state.waiting)
            state.waiting.clear()
            self.held -= len(waiting)
            for event in waiting:
                try:
                    self._settle(event, answer, ran=False, measured=False)
                except BaseException as exc:  # an observer's SystemExit
                    stop = stop or exc
        if stop is not None:
            raise stop
