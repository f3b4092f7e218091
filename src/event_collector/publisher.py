"""Publishing events: ``EventPublisher``; ``CollectorEvent`` and ``QueueType``
are defined in a leaf module and importable from here."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from ._gate import KeyedEvent, OrderingKey, check_ordering_key, keyed_event
from ._models import DEFAULT_PRIORITY, CollectorEvent, QueueType
from ._payload_routing import check_headers
from ._probes import sending
from .data import Payload, ResultList
from .exceptions import ConfigError, QueueClosed

if TYPE_CHECKING:
    from ._gate import KeyGate
    from ._probes import Probe
    from .transport import Transport

__all__ = ["DEFAULT_PRIORITY", "CollectorEvent", "EventPublisher", "QueueType"]


class EventPublisher:
    """Sends values to a collector queue; get it from
    ``CollectorQueue.get_publisher()``.

    Whether a send waits for the transport (a bounded queue, a broker) is
    decided at construction; a plain value sent without a priority takes
    the shortest path.
    """

    __slots__ = (
        "_awaits_put",
        "_clock",
        "_default_priority",
        "_gate",
        "_join",
        "_loop_ref",
        "_probes",
        "_put",
        "_put_nowait",
        "_transport",
        "queue_type",
    )

    def __init__(
        self,
        transport: Transport,
        *,
        awaits_put: bool,
        queue_type: QueueType,
        default_priority: int,
        clock: Callable[[], float],
        loop_ref: Callable[[], asyncio.AbstractEventLoop | None],
        join: Callable[[], Awaitable[None]],
        gate: KeyGate | None = None,
    ) -> None:
        self._transport = transport
        # The transport's own put methods, read once: send calls them
        # directly (benchmark: throughput).
        self._put = transport.put
        self._put_nowait = transport.put_nowait
        self._awaits_put = awaits_put
        self.queue_type: QueueType = queue_type
        """The queue's type."""
        self._default_priority = default_priority
        self._clock = clock
        self._loop_ref = loop_ref
        self._join = join
        self._gate = gate
        self._probes: tuple[Probe, ...] = ()  # instrumentation (see _probes)

    def _make_event(
        self,
        value: Any,
        priority: int | None,
        ordering_key: OrderingKey | None = None,
        supersede: bool = False,
    ) -> CollectorEvent[Any]:
        if ordering_key is None and isinstance(value, Payload):
            ordering_key = value.ordering_key
        if ordering_key is None:
            if supersede:
                raise ValueError("supersede=True needs an ordering_key")
        else:
            check_ordering_key(ordering_key)
            if self._gate is None:
                raise ConfigError(
                    "ordering_key: per-key ordering works with the in-memory "
                    f"transport only; {type(self._transport).__name__} does not "
                    "support it yet"
                )
        if priority is None:
            if isinstance(value, Payload) and value.priority is not None:
                priority = value.priority
                if isinstance(priority, bool) or not isinstance(priority, int):
                    raise TypeError(
                        f"Payload.priority must be an int or None (got {priority!r})"
                    )
            else:
                priority = self._default_priority
        elif isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError(f"priority must be an int (got priority={priority!r})")
        if ordering_key is None:
            return CollectorEvent(value, priority, self._clock())
        assert self._gate is not None
        if not isinstance(value, Payload):
            value = Payload(value, ordering_key=ordering_key)
        elif value.ordering_key != ordering_key:
            value.ordering_key = ordering_key
        return keyed_event(value, priority, self._clock(), ordering_key, self._gate)

    async def send(
        self,
        value: Any,
        *,
        priority: int | None = None,
        ordering_key: OrderingKey | None = None,
        supersede: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> CollectorEvent[Any]:
        """Queue ``value`` for the collectors and return its event.

        :param value: a :class:`~event_collector.data.Payload`, or any value,
            which is wrapped in a broadcast ``Payload``.
        :param priority: on a priority queue, lower runs first; defaults to
            ``Payload.priority``, then the queue's ``default_priority``.
        :param ordering_key: events with the same key (a str or an int) are
            handled one at a time, in the order sent; defaults to
            ``Payload.ordering_key``.
        :param supersede: with an ordering key, answer the key's events that
            have not started with ``Error(Superseded)``: only the newest
            is handled.
        :param headers: str names to str values that go with the event
            (``payload.headers``), added to a ``Payload``'s own.
        :raises QueueClosed: the queue is not running.
        :raises ConfigError: an ordering key on a transport that carries
            events to other processes.
        :raises TypeError, ValueError: headers that are not str to str, or
            too many of them (at most 64, of 8,192 characters in all).

        On a bounded queue (``maxsize``) it waits for room; events held
        behind their ordering key count toward it.
        """
        # The common case (a plain value, no priority) is inlined: send is
        # the hot path of every publisher (benchmark: throughput).
        if (
            priority is None
            and ordering_key is None
            and not supersede
            and headers is None
            and not self._probes
            and not isinstance(value, Payload)
        ):
            event = CollectorEvent(value, self._default_priority, self._clock())
        elif headers is not None or self._probes:
            payload = _with_headers(value, headers)
            with sending(self._probes, payload):
                return await self._send(payload, priority, ordering_key, supersede)
        else:
            gate = self._gate
            if (
                gate is not None
                and ordering_key is not None
                and priority is None
                and not supersede
                and not self._awaits_put
                and not isinstance(value, Payload)
            ):
                # The common keyed send, inlined (benchmark: flow): the
                # key checked (a str or an int passes at once), the event
                # made as keyed_event makes it. The event makes its Payload
                # when it goes into the queue.
                kind = type(ordering_key)
                if kind is not str and kind is not int:
                    check_ordering_key(ordering_key)
                event = KeyedEvent(value, self._default_priority, self._clock())
                event.ordering_key = ordering_key
                event._gate = gate
                gate.put_nowait(event, False)
                return event
            event = self._make_event(value, priority, ordering_key, supersede)
            if type(event) is KeyedEvent:
                assert gate is not None  # checked by _make_event
                if self._awaits_put:
                    await gate.put(event, supersede)
                else:
                    gate.put_nowait(event, supersede)
                return event
        if self._awaits_put:
            await self._put(event)
        else:
            self._put_nowait(event)
        return event

    async def _send(
        self,
        value: Any,
        priority: int | None,
        ordering_key: OrderingKey | None,
        supersede: bool,
    ) -> CollectorEvent[Any]:
        """``send`` without its inlined paths (a payload with headers, or
        under a probe)."""
        event = self._make_event(value, priority, ordering_key, supersede)
        if type(event) is KeyedEvent:
            assert self._gate is not None  # checked by _make_event
            if self._awaits_put:
                await self._gate.put(event, supersede)
            else:
                self._gate.put_nowait(event, supersede)
        elif self._awaits_put:
            await self._put(event)
        else:
            self._put_nowait(event)
        return event

    def send_nowait(
        self,
        value: Any,
        *,
        priority: int | None = None,
        ordering_key: OrderingKey | None = None,
        supersede: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> CollectorEvent[Any]:
        """Like :meth:`send`, without waiting.

        :raises QueueFull: a bounded queue has no room.
        :raises QueueClosed: the queue is not running.
        """
        if headers is not None or self._probes:
            value = _with_headers(value, headers)
            with sending(self._probes, value):
                return self._send_nowait(value, priority, ordering_key, supersede)
        return self._send_nowait(value, priority, ordering_key, supersede)

    def _send_nowait(
        self,
        value: Any,
        priority: int | None,
        ordering_key: OrderingKey | None,
        supersede: bool,
    ) -> CollectorEvent[Any]:
        event = self._make_event(value, priority, ordering_key, supersede)
        if type(event) is KeyedEvent:
            assert self._gate is not None  # checked by _make_event
            self._gate.put_nowait(event, supersede)
        else:
            self._put_nowait(event)
        return event

    def send_threadsafe(
        self,
        value: Any,
        *,
        priority: int | None = None,
        ordering_key: OrderingKey | None = None,
        supersede: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> concurrent.futures.Future[ResultList]:
        """Publish from another thread (an MQTT client's callback, say).

        Returns a :class:`concurrent.futures.Future` of the event's results.
        Don't block on it in the event loop's own thread.
        """
        loop = self._loop_ref()
        closed = self._transport.closed_reason
        if closed is not None or loop is None or loop.is_closed():
            # Fail at once: a stopped loop would never run the send, and the
            # caller would wait on the future forever.
            fut: concurrent.futures.Future[ResultList] = concurrent.futures.Future()
            fut.set_exception(QueueClosed(closed or "the queue's event loop is closed"))
            return fut
        return asyncio.run_coroutine_threadsafe(
            self._send_and_wait(value, priority, ordering_key, supersede, headers),
            loop,
        )

    async def wait(self) -> None:
        """Wait until every event sent so far has been handled."""
        await self._join()

    async def _send_and_wait(
        self,
        value: Any,
        priority: int | None,
        ordering_key: OrderingKey | None,
        supersede: bool,
        headers: Mapping[str, str] | None,
    ) -> ResultList:
        event = await self.send(
            value,
            priority=priority,
            ordering_key=ordering_key,
            supersede=supersede,
            headers=headers,
        )
        return await event.wait()

    def __repr__(self) -> str:
        return (
            f"<EventPublisher {self.queue_type.name} qsize={self._transport.backlog()}>"
        )


def _with_headers(value: Any, headers: Mapping[str, str] | None) -> Payload[Any]:
    """``value`` as a ``Payload`` (a plain value is wrapped in a broadcast
    one) with ``headers`` added to its own."""
    if not isinstance(value, Payload):
        return Payload(value, headers=headers)
    if headers is not None:
        # Checked alone first, so that what is wrong with them is said in
        # their terms, not in those of the merge.
        value._headers = check_headers({**value.headers, **check_headers(headers)})
    return value
