"""The values every part of the queue passes around: the event and the
queue types.

A leaf module: it imports nothing of the package but the results, so the
publisher, the consumers and every transport can import it without a cycle.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import enum
import itertools
from collections.abc import Generator
from typing import Any, Generic, TypeVar

from .data import Error, Ok, Payload, ResultList, _plain_payload, as_result

__all__ = [
    "DEFAULT_PRIORITY",
    "CollectorEvent",
    "Load",
    "Metrics",
    "QueueState",
    "QueueType",
]

T = TypeVar("T")

DEFAULT_PRIORITY: int = 100
"""The priority of an event sent without one, on a priority queue."""


class QueueType(enum.Enum):
    """The order in which consumers take events off the queue."""

    FIFO = 0
    """First in, first out (the default)."""
    PRIORITY = 1
    """Lowest priority number first; equal priorities in send order."""
    LIFO = 2
    """Last in, first out."""


_next_id = itertools.count(1).__next__


class _Pending(enum.Enum):
    """The answer of an event not answered yet: a member of an enum, so that
    a copied or unpickled event is still pending."""

    PENDING = "pending"


_PENDING = _Pending.PENDING


class CollectorEvent(Generic[T]):
    """One sent payload and, once handled, its results.

    ``await event`` or ``await event.wait()`` returns the
    :class:`~event_collector.data.ResultList`. Every event the queue accepted is
    answered exactly once: with the collectors' results, or with an
    ``Error`` that says why it was not handled. Dropping the reference to an
    event does not stop it being handled.
    """

    __slots__ = (
        "__weakref__",
        "_answer",
        "_by",
        "_payload",
        "_value",
        "_waiters",
        "finished_at",
        "id",
        "priority",
        "sent_at",
        "started_at",
    )

    ordering_key: str | int | None = None
    """The key the event is ordered with (``send(..., ordering_key=...)``),
    or ``None``. A class attribute here: an event sent with a key is a
    subclass's, whose slot holds it."""

    # Set by a consumer that calls the queue's lone collector itself (left
    # unset otherwise): the key the answer's result names when it is read.
    _by: str | None

    def __init__(self, payload: Payload[T] | T, priority: int, sent_at: float) -> None:
        self.id: int = _next_id()
        """A number unique to this event within the process."""
        # A plain value is kept as it is: its broadcast Payload is made when
        # a handler or a reader needs it, so that a queued event is one
        # object, not two, for the memory and for the garbage collector
        # (benchmarks: memory, io).
        self._payload: Payload[T] | None
        self._value: T | None
        if isinstance(payload, Payload):
            self._payload, self._value = payload, None
            payload._eid = self.id
        else:
            self._payload, self._value = None, payload
        self.priority: int = priority
        """Priority on a priority queue (lower first)."""
        self.sent_at: float = sent_at
        """Loop time (seconds) at which the event was accepted."""
        self.started_at: float | None = None
        """Loop time at which a consumer started handling it."""
        self.finished_at: float | None = None
        """Loop time at which it was answered."""
        # The answer: a ResultList, or what the lone collector's handler
        # returned, kept as it is (see _set_answer); _PENDING until then.
        self._answer: object = _PENDING
        self._waiters: list[asyncio.Future[None]] | None = None

    @property
    def payload(self) -> Payload[T]:
        """What was sent, as a :class:`~event_collector.data.Payload`.

        A plain value sent is wrapped in a broadcast ``Payload`` the first
        time this is read, and the same one is returned afterwards. The
        handler gets that one if it was read before the event was handled,
        and otherwise a ``Payload`` of its own with the same value.
        """
        payload = self._payload
        if payload is None:
            payload = self._payload = _plain_payload(self._value, self.id)  # type: ignore[arg-type]
        return payload

    # -- answering (used by the queue) --------------------------------------

    def set_result(self, result: ResultList) -> bool:
        """Answer the event; return ``False`` if it was answered already."""
        return self._set_answer(result)

    def _set_answer(self, answer: object) -> bool:
        """Answer the event with a ``ResultList``, or with the one value the
        lone collector's handler returned (a result or a plain value), which
        is kept as it is and made a ``ResultList`` when read.

        Keeping the bare value spares the garbage collector two objects per
        answered event (the list and an ``Ok``) for as long as the event is
        kept. The caller wraps a value that is itself a ``ResultList``.
        """
        # KeyedEvent._set_answer repeats these steps inline: keep the two
        # the same.
        if self._answer is not _PENDING:
            return False
        self._answer = answer
        waiters = self._waiters
        if waiters is not None:
            self._waiters = None
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
        return True

    # -- reading -------------------------------------------------------------

    def is_done(self) -> bool:
        """Whether the event has been answered."""
        return self._answer is not _PENDING

    done = is_done

    def get_result(self) -> ResultList | None:
        """The results, or ``None`` while the event is not answered.

        An event the consumer handed straight to the queue's lone plain
        collector, whose handler returned, keeps only what the handler
        returned, and each read makes a new ``ResultList`` of it: two reads
        give lists of the same results, not the same list. Treat the list
        as read-only.
        """
        answer = self._answer
        if isinstance(answer, ResultList):
            return answer
        if answer is _PENDING:
            return None
        # _by: the lone collector that returned it, set by the consumer
        # (unset for an answer a transport gave).
        try:
            by = self._by
        except AttributeError:
            return ResultList((as_result(answer),))
        if type(answer) is Ok and answer.collector is None:
            # What as_result does with the handler's own Ok, inlined: read
            # once per event (benchmark: flow).
            answer.collector = by
            return ResultList((answer,))
        return ResultList((as_result(answer, by),))

    def _errors(self) -> tuple[Error, ...]:
        """The ``Error`` results of an answered event, without making a
        ``ResultList`` for a lone handler's answer (for observers)."""
        answer = self._answer
        if isinstance(answer, ResultList):
            return tuple(r for r in answer if type(r) is Error)
        if type(answer) is Error:
            return (as_result(answer, getattr(self, "_by", None)),)  # type: ignore[return-value]
        return ()

    @property
    def service_time(self) -> float | None:
        """Seconds the handlers took, once answered by a consumer."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    @property
    def wait_time(self) -> float | None:
        """Seconds from send to answer, once answered."""
        if self.finished_at is None:
            return None
        return self.finished_at - self.sent_at

    async def wait(self, timeout: float | None = None) -> ResultList:  # noqa: ASYNC109
        """Wait for the results and return them.

        :param timeout: seconds to wait at most; on expiry ``TimeoutError``
            is raised and the event itself goes on and is still answered.
        """
        result = self.get_result()
        if result is not None:
            return result
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = [fut]
        else:
            self._waiters.append(fut)
        try:
            if timeout is None:
                await fut
            else:
                async with asyncio.timeout(timeout):
                    await fut
        finally:
            waiters = self._waiters
            if waiters is not None and fut in waiters:
                waiters.remove(fut)
        result = self.get_result()
        assert result is not None
        return result

    def __await__(self) -> Generator[Any, None, ResultList]:
        return self.wait().__await__()

    def __repr__(self) -> str:
        state = "done" if self._answer is not _PENDING else "pending"
        # Not self.payload: a repr (a log line) must not make and keep one.
        payload = self._payload
        if payload is None:
            payload = Payload(self._value)  # type: ignore[arg-type]
        return f"<CollectorEvent id={self.id} {state} payload={payload!r}>"


class QueueState(enum.StrEnum):
    """Where a collector queue is in its life; each member compares equal to
    its value (``queue.state == "running"``)."""

    CREATED = "created"
    """Built, not started."""
    STARTING = "starting"
    """``init_queue`` is setting the collectors up."""
    RUNNING = "running"
    """Accepting and handling events."""
    CLOSING = "closing"
    """Shutting down: refusing sends, draining, answering what is left."""
    CLOSED = "closed"
    """Shut down (or never started): every event is answered."""


@dataclasses.dataclass(frozen=True, slots=True)
class Metrics:
    """A snapshot of the queue's runtime measurements.

    Averages (``avg_load``, ``service_time``, ``wait_time``, the rates and
    ``wip``) read 0 during the first ``metrics_warmup_interval`` seconds.
    """

    timestamp: datetime.datetime
    """When the snapshot was taken (UTC)."""
    qsize: int
    """Events waiting in the queue."""
    busy: int
    """Consumers running a handler."""
    consumers: int
    """Consumers in the pool."""
    load: float
    """``(qsize + busy) / consumers``: 1 means every consumer has an event."""
    avg_load: float
    """Time-weighted mean of ``load`` over ``avg_load_interval`` seconds."""
    service_time: float
    """Mean seconds the handlers took, over the last
    ``event_service_data_window_size`` events."""
    wait_time: float
    """Mean seconds from send to answer, over the same events."""
    arrival_rate: float
    """Events accepted per second, over ``metrics_collector_window_size``."""
    departure_rate: float
    """Events answered per second, over the same window."""
    wip: float
    """Little's-law work in progress: ``arrival_rate x service_time``, the
    number of consumers the current load keeps busy."""
    event_count: int
    """Events answered by consumers since the queue started."""


@dataclasses.dataclass(frozen=True, slots=True)
class Load:
    """The queue's load at one moment."""

    qsize: int
    """Events waiting in the queue."""
    busy: int
    """Consumers running a handler."""
    consumers: int
    """Consumers in the pool."""
    ratio: float
    """``(qsize + busy) / consumers`` (0 without consumers)."""
