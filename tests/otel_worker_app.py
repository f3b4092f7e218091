"""Processes for the OpenTelemetry tests (``tests/test_otel.py``).

``python tests/otel_worker_app.py worker '<json options>'`` runs a traced
:class:`~event_collector.CollectorQueue` on a
:class:`~event_collector.redis.RedisTransport` (``url``, ``stream``) until
SIGTERM. The global tracer provider is an SDK one whose spans are written,
as each ends, to the file ``spans`` as JSON lines (see
:class:`JsonLinesExporter`). It prints ``READY <consumer>`` once the queue
takes events. Its collectors: ``work`` makes a span of its own
(``handle``) and answers the ``traceparent`` header it was given;
``fail`` raises ``ValueError``.

``python tests/otel_worker_app.py deferred '{}'`` instruments queues and
a Redis publisher in a process of its own (the global provider can be
set once per process) before any tracer provider is set, then sets one,
and prints what it saw as one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from event_collector import Collector, CollectorQueue, Context, Payload
from event_collector.otel import instrument
from event_collector.redis import RedisTransport

NOWHERE = "redis://127.0.0.1:1/0"
"""A Redis URL nothing is sent to: the publishers made with it never start."""

GUARD = 20.0
"""Seconds the deferred check waits for the watcher before it gives up."""


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """What the tests read of a finished span, as plain JSON values."""
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": None if span.parent is None else f"{span.parent.span_id:016x}",
        "status": span.status.status_code.name,
        "description": span.status.description,
        "attributes": dict(span.attributes or {}),
        "events": [
            {"name": event.name, "attributes": dict(event.attributes or {})}
            for event in span.events
        ],
        "links": [f"{link.context.span_id:016x}" for link in span.links],
    }


class JsonLinesExporter(SpanExporter):
    """Appends each finished span to a file as one JSON line, written with
    one ``write`` on an ``O_APPEND`` descriptor: a reader never sees half a
    line."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            os.write(self._fd, (json.dumps(span_record(span)) + "\n").encode())
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        os.close(self._fd)


async def work(payload: Payload[Any], ctx: Context) -> Any:
    with trace.get_tracer("otel_worker_app").start_as_current_span("handle"):
        return {"value": payload.value, "traceparent": payload.headers["traceparent"]}


async def fail(payload: Payload[Any], ctx: Context) -> Any:
    raise ValueError(f"declined {payload.value!r}")


async def run_worker(options: dict[str, Any]) -> None:
    provider = TracerProvider()
    provider.add_span_processor(
        SimpleSpanProcessor(JsonLinesExporter(options["spans"]))
    )
    trace.set_tracer_provider(provider)
    transport = RedisTransport(options["url"], stream=options["stream"])
    queue = CollectorQueue(
        [Collector("work", work), Collector("fail", fail)],
        transport=transport,
        report_interval=0,
    )
    tracing = instrument(queue)  # the global provider, set above
    assert tracing.enabled, tracing
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with queue:
        print(f"READY {transport.consumer}", flush=True)
        await stop.wait()
    provider.shutdown()


async def run_deferred(report: dict[str, Any]) -> dict[str, Any]:
    """Queues and a Redis publisher instrumented before any provider is
    set; what they do before and after one is."""
    seen: list[dict[str, str]] = []

    async def record(payload: Payload[Any], ctx: Context) -> Any:
        seen.append(dict(payload.headers))
        return payload.value

    # Never started: only the waiting is looked at.
    publisher = RedisTransport(NOWHERE, stream="s").publisher()
    waiting_p = instrument(publisher)
    before_start = CollectorQueue([Collector("a", record)], report_interval=0)
    waiting_a = instrument(before_start)
    async with (
        before_start,
        CollectorQueue([Collector("b", record)], report_interval=0) as running,
        CollectorQueue([Collector("c", record)], report_interval=0) as told,
    ):
        waiting_b = instrument(running)
        waiting_c = instrument(told)
        queues = (before_start, running, told)
        watched = (waiting_a, waiting_b, waiting_p)
        report["states_before"] = [
            t.state for t in (waiting_a, waiting_b, waiting_c, waiting_p)
        ]
        report["probes_before"] = [len(q.get_publisher()._probes) for q in queues] + [
            q.collectors[0]._probed is not None for q in queues
        ]
        for queue in queues:
            await (await queue.get_publisher().send("untraced")).wait()
        report["headers_before"] = list(seen)
        seen.clear()

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        # No await in between: the watchers cannot have run yet.
        report["told_at_once"] = waiting_c.check_provider()
        report["others_at_once"] = [t.enabled for t in watched]
        started = time.monotonic()
        while not all(t.enabled for t in watched):
            if time.monotonic() - started > GUARD:
                break
            await asyncio.sleep(0.01)
        report["watched_after"] = round(time.monotonic() - started, 3)
        report["states_after"] = [
            t.state for t in (waiting_a, waiting_b, waiting_c, waiting_p)
        ]
        report["publisher_probes"] = len(publisher._probes)
        waiting_p.uninstrument()
        late = instrument(CollectorQueue([Collector("d", record)]))
        report["late_state"] = late.state
        late.uninstrument()
        for queue in queues:
            await (await queue.get_publisher().send("traced")).wait()
        report["headers_after"] = [sorted(h) for h in seen]
        spans = exporter.get_finished_spans()
        report["spans"] = [span_record(span) for span in spans]
    return report


def main(argv: list[str]) -> int:
    structlog.configure(
        processors=[structlog.processors.KeyValueRenderer(key_order=["event"])],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    role, options = argv[1], json.loads(argv[2])
    if role == "worker":
        asyncio.run(run_worker(options))
    elif role == "deferred":
        report: dict[str, Any] = {}
        try:
            instrument(RedisTransport(NOWHERE, stream="s").publisher())
        except RuntimeError as exc:
            report["outside_a_loop"] = str(exc)
        print(json.dumps(asyncio.run(run_deferred(report))), flush=True)
    else:
        raise SystemExit(f"unknown role {role!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
