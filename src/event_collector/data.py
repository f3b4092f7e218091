"""Results, payloads and the collector context.

The names and behaviour follow the 0.2.x API: ``Ok`` / ``Error`` results that
work with ``match``, a ``ResultList`` per event, ``Payload`` with a delivery
mode, and ``Context`` with attribute and item access.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from ._compat import TypeAliasType
from ._payload_routing import NO_NAMES as _NO_NAMES
from ._payload_routing import check_headers as _check_headers
from ._payload_routing import names as _names
from ._payload_routing import routing as _routing
from ._results import Error, Ok, ResultList, abind, as_result

__all__ = [
    "Context",
    "Delivery",
    "Error",
    "Ok",
    "Payload",
    "Record",
    "Result",
    "ResultList",
    "abind",
    "as_result",
]

T = TypeVar("T")

Record = TypeAliasType("Record", dict[str, Any])
"""A plain mapping of field names to values."""

Result = TypeAliasType("Result", Ok[Any] | Error)
"""What a collector produces for one payload: :class:`Ok` or :class:`Error`."""


class Delivery(enum.Enum):
    """How the router picks the collectors of a payload."""

    BROADCAST = 0
    """Every collector."""
    KEY = 1
    """The collectors whose ``key`` is in ``Payload.keys``."""
    TOPIC = 2
    """The collectors subscribed to any of ``Payload.topics``."""


class Payload(Generic[T]):
    """A value sent to the queue, with how to deliver it.

    :param value: what the collectors receive as ``payload.value``.
    :param delivery: :class:`Delivery` mode. Without one, ``keys`` mean
        ``Delivery.KEY``, ``topics`` mean ``Delivery.TOPIC``, and neither
        means ``Delivery.BROADCAST``.
    :param keys: collector keys, for ``Delivery.KEY``.
    :param topics: topics, for ``Delivery.TOPIC``.
    :param priority: priority on a priority queue (lower runs first); the
        queue's ``default_priority`` when ``None``.
    :param ordering_key: events with the same key (a str or an int) are
        handled one at a time, in the order sent (see the flow-control
        guide); ``None`` for no ordering.
    :param headers: a small mapping of str names to str values that goes
        with the event through every transport (a trace's ``traceparent``,
        a request id); see :attr:`headers`.
    :raises ValueError: the arguments contradict each other: keys and topics
        without a delivery mode, names with ``Delivery.BROADCAST``, topics
        with ``Delivery.KEY`` or keys with ``Delivery.TOPIC``.
    :raises TypeError: ``delivery`` is not a :class:`Delivery`, or the
        headers are not str to str.

    The handler also sees which event the payload belongs to
    (:attr:`event_id`) and which delivery of it this is (:attr:`attempt`),
    to make its effects idempotent when a transport delivers an event
    again (see the scaling-out guide).
    """

    __slots__ = (
        "_attempt",
        "_eid",
        "_headers",
        "_sent_in",
        "delivery",
        "keys",
        "ordering_key",
        "priority",
        "topics",
        "value",
    )

    # The sender's context (a contextvars.Context), set by
    # sender_context.carry() at send and unset otherwise.
    _sent_in: Any

    def __init__(
        self,
        value: T,
        delivery: Delivery | None = None,
        keys: Iterable[str] | None = None,
        topics: Iterable[str] | None = None,
        priority: int | None = None,
        ordering_key: str | int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.value: T = value
        self.delivery: Delivery
        self.keys: tuple[str, ...]
        self.topics: tuple[str, ...]
        if keys is None and topics is None:
            # The common case, inlined: most payloads have no names
            # (benchmark: throughput, when payloads are sent).
            if delivery is None:
                delivery = Delivery.BROADCAST
            elif type(delivery) is not Delivery:
                raise TypeError(
                    f"delivery must be a Delivery (got delivery={delivery!r})"
                )
            self.delivery, self.keys, self.topics = delivery, _NO_NAMES, _NO_NAMES
        else:
            self.delivery, self.keys, self.topics = _routing(
                Delivery, delivery, keys, topics
            )
        self.priority: int | None = priority
        # type() first: a str or int key costs no isinstance (benchmark: flow).
        if (
            ordering_key is not None
            and type(ordering_key) not in (str, int)
            and (
                isinstance(ordering_key, bool)
                or not isinstance(ordering_key, str | int)
            )
        ):
            raise TypeError(
                "ordering_key must be a str, an int or None "
                f"(got ordering_key={ordering_key!r})"
            )
        self.ordering_key: str | int | None = ordering_key
        """The key this payload's event is ordered with, or ``None``."""
        # The event's id as the queue gave it: a number in this process
        # (made a string when read, so that the hot path does not format
        # it), a string from a broker; None until the payload is sent.
        self._eid: int | str | None = None
        self._attempt = 1
        # Made when first read: most payloads carry no headers.
        self._headers: dict[str, str] | None = (
            None if headers is None else _check_headers(headers)
        )

    @property
    def headers(self) -> dict[str, str]:
        """The event's headers: str names to str values, carried with it by
        every transport; empty unless set. At most 64 of them, their names
        and values adding up to at most 8,192 characters; names are
        case-sensitive. Change it before the payload is sent; a handler
        reads it only (in memory the sender and every collector of the event
        share this payload; on Redis each worker has a copy of its own).
        """
        headers = self._headers
        if headers is None:
            headers = self._headers = {}
        return headers

    @property
    def event_id(self) -> str:
        """The id of the event this payload was sent as: unique in the
        process for the in-memory transport, the stream entry's id on
        Redis (prefixed by the band's key on a priority queue; the same on
        every delivery of the event); ``""`` for a payload not sent yet."""
        eid = self._eid
        if type(eid) is str:
            return eid
        return "" if eid is None else str(eid)

    @property
    def attempt(self) -> int:
        """Which delivery of the event this is: 1 the first time; higher
        when a transport delivers it again (a worker died while handling
        it). Always 1 in memory."""
        return self._attempt

    def set_delivery(
        self,
        delivery: Delivery,
        keys: Iterable[str] | None = None,
        topics: Iterable[str] | None = None,
    ) -> None:
        """Change the delivery mode, and the keys or topics it uses.

        Keys or topics not given are left as they are. The contradictions
        the constructor refuses are refused here too (``ValueError``): names
        given with ``Delivery.BROADCAST``, topics with ``Delivery.KEY``, keys
        with ``Delivery.TOPIC``.
        """
        _routing(Delivery, delivery, keys, topics)  # the checks alone
        self.delivery = delivery
        if keys is not None:
            self.keys = _names(keys)
        if topics is not None:
            self.topics = _names(topics)

    def set_priority(self, priority: int) -> None:
        """Set the priority used on a priority queue."""
        self.priority = priority

    def __getstate__(self) -> Any:
        # What pickle and copy keep: every field (a subclass's too) but the
        # sender's context (sender_context.carry), which belongs to this
        # process and this send.
        state = object.__getstate__(self)
        if isinstance(state, tuple) and "_sent_in" in state[1]:
            fields, slots = state
            return fields, {k: v for k, v in slots.items() if k != "_sent_in"}
        return state

    def __repr__(self) -> str:
        extra = ""
        if self.keys:
            extra += f" keys={self.keys!r}"
        if self.topics:
            extra += f" topics={self.topics!r}"
        if self.priority is not None:
            extra += f" priority={self.priority}"
        if self.ordering_key is not None:
            extra += f" ordering_key={self.ordering_key!r}"
        if self._headers:
            extra += f" headers={self._headers!r}"
        return f"<Payload {self.delivery.name}{extra} value={self.value!r}>"


_new = object.__new__
_BROADCAST = Delivery.BROADCAST


def _plain_payload(value: T, eid: int | str) -> Payload[T]:
    """``Payload(value)`` of event ``eid``, made without the constructor's
    argument checks: what a consumer hands a handler for a plain value it
    was sent, once per event (benchmark: throughput). Sets every slot the
    constructor sets."""
    payload: Payload[T] = _new(Payload)
    payload.value = value
    payload.delivery = _BROADCAST
    payload.keys = payload.topics = _NO_NAMES
    payload.priority = payload.ordering_key = payload._headers = None
    payload._eid = eid
    payload._attempt = 1
    return payload


class Context:
    """Application values shared with a collector's handler.

    Values can be read and written as attributes (``ctx.db``) or items
    (``ctx["db"]``).
    """

    __slots__ = ("_data",)

    _data: dict[str, Any]

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        object.__setattr__(self, "_data", {} if data is None else data)

    def __getattr__(self, name: str) -> Any:
        if name == "_data":
            # Only reached on an instance that copy or pickle has not filled
            # in yet; looking it up in itself would recurse.
            raise AttributeError(name)
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(f"Context has no value {name!r}") from None

    def __reduce__(self) -> tuple[type[Context], tuple[dict[str, Any]]]:
        return (type(self), (dict(self._data),))

    def __setattr__(self, name: str, value: Any) -> None:
        self._data[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self._data[name]
        except KeyError:
            raise AttributeError(f"Context has no value {name!r}") from None

    def __getitem__(self, name: str) -> Any:
        return self._data[name]

    def __setitem__(self, name: str, value: Any) -> None:
        self._data[name] = value

    def __delitem__(self, name: str) -> None:
        del self._data[name]

    def __contains__(self, name: object) -> bool:
        return name in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def get(self, name: str, default: Any = None) -> Any:
        """Return the value of ``name``, or ``default``."""
        return self._data.get(name, default)

    def __repr__(self) -> str:
        return f"Context({self._data!r})"
