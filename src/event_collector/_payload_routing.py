"""How a payload's delivery mode, keys, topics and headers are read and
checked (``Payload``, ``Payload.set_delivery`` and ``send(headers=)``)."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import TypeVar

__all__ = [
    "MAX_HEADERS",
    "MAX_HEADER_CHARS",
    "NO_NAMES",
    "check_headers",
    "names",
    "routing",
]

MAX_HEADERS = 64
"""The most headers an event may carry."""

MAX_HEADER_CHARS = 8192
"""The most characters an event's header names and values may add up to."""

D = TypeVar("D", bound=enum.Enum)

NO_NAMES: tuple[str, ...] = ()


def names(given: Iterable[str] | None) -> tuple[str, ...]:
    """Keys or topics as a tuple; one string is one name, not its letters."""
    if given is None:
        return NO_NAMES
    if isinstance(given, str):
        return (given,)
    return tuple(given)


def routing(
    kind: type[D],
    delivery: D | None,
    keys: Iterable[str] | None,
    topics: Iterable[str] | None,
) -> tuple[D, tuple[str, ...], tuple[str, ...]]:
    """A payload's delivery mode, keys and topics, with the mode inferred
    from the names given and contradictions refused. ``kind`` is the
    ``Delivery`` enum (passed in: this module must not import ``data``)."""
    broadcast, by_key, by_topic = kind["BROADCAST"], kind["KEY"], kind["TOPIC"]
    if delivery is None:
        if keys is not None and topics is not None:
            raise ValueError(
                "Payload: give keys or topics, not both, or name the delivery "
                f"mode (got keys={keys!r}, topics={topics!r})"
            )
        delivery = by_key if keys is not None else by_topic
    elif type(delivery) is not kind:
        raise TypeError(f"delivery must be a Delivery (got delivery={delivery!r})")
    elif delivery is broadcast:
        raise ValueError(
            "Payload: Delivery.BROADCAST goes to every collector and takes no "
            f"keys or topics (got keys={keys!r}, topics={topics!r})"
        )
    elif delivery is by_key and topics is not None:
        raise ValueError(
            f"Payload: Delivery.KEY routes by keys, not topics (got topics={topics!r})"
        )
    elif delivery is by_topic and keys is not None:
        raise ValueError(
            f"Payload: Delivery.TOPIC routes by topics, not keys (got keys={keys!r})"
        )
    return delivery, names(keys), names(topics)


def check_headers(given: object) -> dict[str, str]:
    """A payload's headers as a new dict, checked: a mapping of non-empty
    str names to str values, at most ``MAX_HEADERS`` of them adding up to
    at most ``MAX_HEADER_CHARS`` characters (``TypeError``, ``ValueError``)."""
    if not isinstance(given, Mapping):
        raise TypeError(
            f"headers must be a mapping of str to str (got headers={given!r})"
        )
    headers = dict(given)
    if len(headers) > MAX_HEADERS:
        raise ValueError(f"headers: at most {MAX_HEADERS} headers (got {len(headers)})")
    size = 0
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(
                f"headers must map str names to str values (got {name!r}: {value!r})"
            )
        if not name:
            raise ValueError("headers: a header name must not be empty")
        size += len(name) + len(value)
    if size > MAX_HEADER_CHARS:
        raise ValueError(
            f"headers: names and values add up to {size} characters "
            f"(at most {MAX_HEADER_CHARS})"
        )
    return headers
