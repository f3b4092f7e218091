"""The collectors the MQTT ingester runs on every reading.

Each event's value is ``{"topic": "sensors/kitchen/reading", "reading":
{...}}``: the MQTT topic the message came on and its JSON body. Both
collectors receive every event:

``store``
    appends the reading, with its topic and the event's id, as one line of
    JSON to a file (``readings.jsonl`` by default); answers with the id.
``alarm``
    answers whether the reading's ``value`` is at or over ``ALARM_AT``; a
    reading without a numeric ``value`` is an error, which the ingester logs.

Write your own in their place: any :class:`~event_collector.Collector`
list works, the ingester only needs their keys to label the results.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from event_collector import Collector, Context, LifecycleManager, Payload

ALARM_AT = 100.0
"""The value at and over which ``alarm`` answers True."""


def open_store(path: Path) -> LifecycleManager:
    """The ``store`` collector's lifecycle: the file is opened (for appending)
    when the queue starts and closed when it has shut down."""

    @asynccontextmanager
    async def lifecycle(ctx: Context) -> AsyncIterator[None]:
        with path.open("a", encoding="utf-8") as file:
            ctx.file = file
            yield

    return lifecycle


async def store(payload: Payload[dict[str, Any]], ctx: Context) -> str:
    """Append the reading to the store; answer with the event's id.

    One short write and a flush, done in the event loop: a real store would
    await its database client here instead.
    """
    record = {"event_id": payload.event_id, **payload.value}
    ctx.file.write(json.dumps(record) + "\n")
    ctx.file.flush()
    return payload.event_id


async def alarm(payload: Payload[dict[str, Any]], ctx: Context) -> bool:
    """Whether the reading is at or over ``ALARM_AT``."""
    reading = payload.value["reading"]
    value = reading.get("value") if isinstance(reading, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"the reading has no numeric 'value': {reading!r}")
    return value >= ALARM_AT


def make_collectors(store_path: Path) -> list[Collector]:
    """The ingester's collectors, ``store`` writing to ``store_path``."""
    return [
        Collector("store", store, lifecycle=open_store(store_path)),
        Collector("alarm", alarm),
    ]
