"""How a payload's delivery mode, keys and topics are read and checked
(``Payload`` and ``Payload.set_delivery``)."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import TypeVar

__all__ = ["NO_NAMES", "names", "routing"]

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
