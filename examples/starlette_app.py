"""A Starlette service that hands every POSTed JSON body to a collector queue.

The queue starts and stops with the application (its lifespan). Each
``POST /events`` publishes the request's JSON body and answers with the
collectors' results; ``GET /metrics`` serves the queue's Prometheus metrics.

Run it with (from the root of the repository's checkout, with the README's
``.venv``)::

    .venv/bin/pip install -e ".[prometheus]" starlette uvicorn
    .venv/bin/uvicorn --app-dir examples starlette_app:app

    curl -s -X POST localhost:8000/events -d '{"order": 42, "items": 3}'

Stop it with Ctrl-C or SIGTERM: the server finishes the requests it has,
then runs the lifespan's exit, which drains the queue and shuts it down.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from event_collector import (
    Collector,
    CollectorQueue,
    Context,
    Error,
    Ok,
    Payload,
    QueueClosed,
)
from event_collector.prometheus import instrument

RESULT_TIMEOUT = 30.0
"""Seconds a request waits for its results before answering 504."""


async def store(payload: Payload[Any], ctx: Context) -> dict[str, Any]:
    """Pretend to store the body somewhere slow; echo what was stored."""
    await asyncio.sleep(0.005)
    return {"stored": payload.value}


async def count_fields(payload: Payload[Any], ctx: Context) -> int:
    """Count the body's fields; a body that is not an object is an error."""
    if not isinstance(payload.value, dict):
        raise ValueError(f"expected a JSON object, got {type(payload.value).__name__}")
    return len(payload.value)


def as_json(result: Ok[Any] | Error) -> dict[str, Any]:
    match result:
        case Ok(value):
            return {"ok": True, "value": value}
        case Error(err):
            kind = type(err).__name__ if isinstance(err, BaseException) else "error"
            return {"ok": False, "error": f"{kind}: {err}"}
    raise TypeError(f"not a result: {result!r}")  # pragma: no cover


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    # No signal handler here: the server owns SIGTERM and Ctrl-C. It stops
    # taking connections, finishes the requests in flight, and only then
    # leaves this block, so the queue drains after the last request.
    queue = CollectorQueue(
        [Collector("store", store), Collector("count", count_fields)],
        max_consumers=200,
    )
    registry = CollectorRegistry()
    exporter = instrument(queue, registry=registry, name="http")
    async with queue:
        app.state.queue = queue
        app.state.registry = registry
        try:
            yield
        finally:
            exporter.unregister()


async def post_event(request: Request) -> Response:
    try:
        body = await request.json()
    except ValueError:
        return JSONResponse({"error": "the body must be JSON"}, status_code=400)
    queue: CollectorQueue = request.app.state.queue
    try:
        event = await queue.get_publisher().send(body)
    except QueueClosed:
        # The queue has shut down: the application is stopping.
        return JSONResponse({"error": "shutting down"}, status_code=503)
    try:
        results = await event.wait(timeout=RESULT_TIMEOUT)
    except TimeoutError:
        return JSONResponse({"error": "no result in time"}, status_code=504)
    # A broadcast payload reaches every collector, in the queue's order.
    keys = [collector.key for collector in queue.collectors]
    return JSONResponse(
        {
            "results": {
                key: as_json(result) for key, result in zip(keys, results, strict=False)
            }
        }
    )


async def metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


app = Starlette(
    routes=[
        Route("/events", post_event, methods=["POST"]),
        Route("/metrics", metrics, methods=["GET"]),
    ],
    lifespan=lifespan,
)


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app)
