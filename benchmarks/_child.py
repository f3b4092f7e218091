"""One side of the ``flow`` and ``instrument`` targets, in a process of its
own.

Run by path (``python benchmarks/_child.py --mode MODE``), not as a module
of the ``benchmarks`` package, so that it imports nothing but
``event_collector``: whichever the ``PYTHONPATH`` it is given names, this
checkout's or an older commit's. And in a process of its own, so that what
one mode imports (the OpenTelemetry SDK, say) cannot change another's
figures. It measures what :func:`benchmarks.library.library_throughput`
measures, with the public API every compared version shares: one run for
each line it reads, so that the parent can alternate the runs of several
such processes. ``--mode`` sets the queue up:

- ``plain``: nothing installed (what runs for an older commit);
- ``otel-idle``: ``event_collector.otel.instrument(queue)`` with no tracer
  provider set, OpenTelemetry's API installed;
- ``otel-sdk``: ``instrument(queue, tracer_provider=...)`` with the SDK's
  tracer provider, a batch span processor and an exporter that drops what
  it gets;
- ``sender-context``: ``event_collector.sender_context.carry(queue)``,
  each send made from a context with a structlog binding;
- ``prometheus``: ``event_collector.prometheus.instrument(queue)`` on a
  registry of its own (the queue's metrics and the per-collector ones).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import event_collector
from event_collector import Collector, CollectorQueue, Ok

MODES = ("plain", "otel-idle", "otel-sdk", "sender-context", "prometheus")


async def _trivial(payload: Any, ctx: Any) -> Ok[int]:
    return Ok(1)


def _setup(mode: str) -> Callable[[CollectorQueue], None]:
    """What ``mode`` does to each queue before it starts."""
    kept: list[Any] = []  # what the setup returns stays alive with the process
    if mode == "plain":
        return lambda queue: None
    if mode == "otel-idle":
        from event_collector.otel import instrument

        return lambda queue: kept.append(instrument(queue))
    if mode == "otel-sdk":
        from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        from event_collector.otel import instrument

        class Dropped(SpanExporter):
            def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Dropped()))
        return lambda queue: kept.append(instrument(queue, provider))
    if mode == "sender-context":
        import structlog

        from event_collector.sender_context import carry

        structlog.contextvars.bind_contextvars(request_id="r-1")
        return lambda queue: kept.append(carry(queue))
    if mode == "prometheus":
        from prometheus_client import CollectorRegistry

        from event_collector import prometheus

        def export(queue: CollectorQueue) -> None:
            name = f"bench-{len(kept)}"  # a queue per run, each its own label
            kept.append(prometheus.instrument(queue, registry=registry, name=name))

        registry = CollectorRegistry()
        return export
    raise SystemExit(f"unknown mode {mode!r}")


async def _throughput(
    count: int, setup: Callable[[CollectorQueue], None]
) -> tuple[float, float]:
    """Wall and CPU seconds to send ``count`` events to one consumer
    running a trivial handler and await every answer."""
    queue = CollectorQueue(
        [Collector("bench", _trivial)],
        min_consumers=1,
        max_consumers=1,
        autoscale=False,
        logging=False,
    )
    setup(queue)
    async with queue:
        send = queue.get_publisher().send
        wall, cpu = time.perf_counter(), time.process_time()
        events = [await send(i) for i in range(count)]
        for event in events:
            await event.wait()
        return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    """Say ``ready`` once warm, then measure a run for each line read from
    stdin, printing a JSON line for each, until stdin ends."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--mode", choices=MODES, default="plain")
    args = parser.parse_args()
    factory: Any = asyncio.new_event_loop
    if args.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    setup = _setup(args.mode)

    def measure() -> tuple[float, float]:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(_throughput(args.events, setup))

    measure()  # a warm-up run, not reported
    print(json.dumps({"ready": True, "module": event_collector.__file__}), flush=True)
    for _ in sys.stdin:
        wall, cpu = measure()
        figures = {
            "events_per_s": args.events / wall,
            "cpu_events_per_s": args.events / cpu,
        }
        print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
