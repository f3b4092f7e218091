"""The collectors the webhook's workers run.

Start a worker with (from the root of the checkout)::

    .venv/bin/event-collector worker examples.redis_webhook.collectors:collectors \
        --redis redis://127.0.0.1:6379/0 --stream webhooks

and as many more as the load needs, on this machine or others.
"""

from __future__ import annotations

import asyncio
from typing import Any

from event_collector import Collector, Context, Payload


async def store(payload: Payload[Any], ctx: Context) -> dict[str, Any]:
    """Pretend to store the body somewhere slow. The event's id is the same
    on every delivery of the event, so a real store would key the record
    by it: a second delivery (its first worker died) overwrites the record
    instead of adding another."""
    await asyncio.sleep(0.005)
    return {"stored": payload.value, "key": payload.event_id}


async def count_fields(payload: Payload[Any], ctx: Context) -> int:
    """Count the body's fields; a body that is not an object is an error,
    which reaches the web process as a ``RemoteError``."""
    if not isinstance(payload.value, dict):
        raise ValueError(f"expected a JSON object, got {type(payload.value).__name__}")
    return len(payload.value)


collectors = [Collector("store", store), Collector("count", count_fields)]
"""What ``event-collector worker`` runs; the web process reads the keys
from it to label the results, which come back in this order."""
