"""A Starlette webhook receiver that hands each POSTed JSON body to a fleet
of workers through Redis, and answers with their results.

The web process runs no queue: it opens a publisher on the Redis stream in
its lifespan. Each ``POST /events`` publishes the request's JSON body and
waits for the workers' answer (``collectors.py`` says what they run).

Run it with (from the root of the checkout, with the README's ``.venv``
and a Redis on 127.0.0.1:6379)::

    .venv/bin/pip install -e ".[redis]" starlette uvicorn
    .venv/bin/event-collector worker examples.redis_webhook.collectors:collectors \
        --redis redis://127.0.0.1:6379/0 --stream webhooks &
    .venv/bin/uvicorn examples.redis_webhook.app:app

    curl -s -X POST localhost:8000/events -d '{"order": 42, "items": 3}'

``REDIS_URL`` and ``WEBHOOK_STREAM`` in the environment change the Redis
and the stream (``redis://127.0.0.1:6379/0`` and ``webhooks`` by default);
give the workers the same.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from event_collector import Error, Ok, QueueClosed, RemoteError
from event_collector.redis import RedisPublisher, RedisTransport

from .collectors import collectors

RESULT_TIMEOUT = 30.0
"""Seconds a request waits for Redis to take its event and for the answer,
before answering 504 (the event may still run)."""

KEYS = [collector.key for collector in collectors]
"""The collectors' keys, in the order of their results."""


def as_json(result: Ok[Any] | Error) -> dict[str, Any]:
    match result:
        case Ok(value):
            return {"ok": True, "value": value}
        case Error(RemoteError() as err):
            # Raised by a handler in a worker: .type names its class.
            return {"ok": False, "error": f"{err.type}: {err}"}
        case Error(err):
            kind = type(err).__name__ if isinstance(err, BaseException) else "error"
            return {"ok": False, "error": f"{kind}: {err}"}
    raise TypeError(f"not a result: {result!r}")  # pragma: no cover


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    transport = RedisTransport(
        os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        stream=os.environ.get("WEBHOOK_STREAM", "webhooks"),
    )
    # The server finishes its requests before it leaves this block, so
    # closing the publisher leaves no request without its answer.
    async with transport.publisher() as publisher:
        app.state.publisher = publisher
        yield


async def post_event(request: Request) -> Response:
    try:
        body = await request.json()
    except ValueError:
        return JSONResponse({"error": "the body must be JSON"}, status_code=400)
    publisher: RedisPublisher = request.app.state.publisher
    try:
        async with asyncio.timeout(RESULT_TIMEOUT):
            event = await publisher.send(body)
            results = await event.wait()
    except QueueClosed as exc:
        # The publisher is closing, or Redis refused the write.
        return JSONResponse({"error": str(exc)}, status_code=503)
    except ValueError as exc:
        # Over max_payload_bytes, or a NaN, which JSON does not carry.
        return JSONResponse({"error": str(exc)}, status_code=422)
    except TimeoutError:
        return JSONResponse({"error": "no answer in time"}, status_code=504)
    if len(results) != len(KEYS):
        # One error for the whole event, not a result per collector: it was
        # dead-lettered, or lost by a Redis that restarted empty.
        return JSONResponse(as_json(results.first()), status_code=502)
    return JSONResponse(
        {
            "event_id": event.payload.event_id,
            "results": {
                key: as_json(result) for key, result in zip(KEYS, results, strict=True)
            },
        }
    )


app = Starlette(
    routes=[Route("/events", post_event, methods=["POST"])], lifespan=lifespan
)
