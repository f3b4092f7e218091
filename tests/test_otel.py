"""OpenTelemetry traces (``event_collector.otel``), read back from the
SDK's in-memory exporter: which spans a send and a collector call make,
how they are parented and linked, what they say, what failures look like,
and that nothing is installed until a tracer provider exists. The same
links are checked across two processes on a real Redis.

Every test passes its own tracer provider, except those about the global
one, which run in a process of their own: OpenTelemetry lets a process
set its global provider once.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from structlog.testing import capture_logs

from conftest import Gate, LoopErrors, is_cancelled, wait_for
from event_collector import (
    BatchCollector,
    Collector,
    CollectorQueue,
    Context,
    Error,
    Ok,
    Payload,
    QueueClosed,
)
from event_collector.otel import DEFAULT_DESTINATION, Tracing, instrument
from event_collector.redis import RedisTransport
from redis_server import RedisServer, _die_with_parent, redis_server  # noqa: F401

APP = Path(__file__).with_name("otel_worker_app.py")
SRC = Path(__file__).resolve().parent.parent / "src"
GUARD = 30.0
"""Seconds a subprocess or an answer may take before the test fails."""

_streams = itertools.count(1)


class Spans:
    """An SDK tracer provider whose finished spans are kept in memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests")

    def finished(self, name: str | None = None) -> list[ReadableSpan]:
        return [
            s
            for s in self.exporter.get_finished_spans()
            if name is None or s.name == name
        ]

    def one(self, name: str) -> ReadableSpan:
        found = self.finished(name)
        assert len(found) == 1, [s.name for s in self.finished()]
        return found[0]


@pytest.fixture
def spans() -> Iterator[Spans]:
    recorded = Spans()
    yield recorded
    recorded.provider.shutdown()


def ids(span: ReadableSpan) -> tuple[int, int]:
    """(trace id, span id) of a finished span."""
    context = span.get_span_context()
    assert context is not None
    return context.trace_id, context.span_id


def is_child(child: ReadableSpan, parent: ReadableSpan) -> bool:
    trace_id, span_id = ids(parent)
    return (
        child.parent is not None
        and child.parent.trace_id == trace_id
        and child.parent.span_id == span_id
        and ids(child)[0] == trace_id
    )


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def exception_types(span: ReadableSpan) -> list[Any]:
    return [
        (e.attributes or {}).get("exception.type")
        for e in span.events
        if e.name == "exception"
    ]


@pytest.fixture
async def traced(spans: Spans) -> AsyncIterator[tuple[CollectorQueue, list[Any]]]:
    """A running queue, traced, whose one collector records the headers it
    sees and makes a span of its own inside the call's."""
    seen: list[Any] = []

    async def handle(payload: Payload[Any], ctx: Context) -> Any:
        with spans.tracer.start_as_current_span("handle"):
            seen.append((dict(payload.headers), baggage.get_baggage("tenant")))
        return payload.value

    async with CollectorQueue([Collector("handle", handle)]) as queue:
        instrument(queue, spans.provider)
        yield queue, seen


# -- one send, one call ------------------------------------------------------------


async def test_the_call_span_is_a_child_of_the_send_span(
    loop_guard: LoopErrors, spans: Spans, traced: tuple[CollectorQueue, list[Any]]
) -> None:
    queue, seen = traced
    with spans.tracer.start_as_current_span("request") as request:
        event = await queue.get_publisher().send(3)
        current = trace.get_current_span()
    assert current is request, "the send span is not left current"
    assert await event.wait() == [Ok(3, "handle")]

    send = spans.one("send event_collector")
    process = spans.one("process event_collector")
    handle = spans.one("handle")
    assert send.kind is SpanKind.PRODUCER
    assert process.kind is SpanKind.CONSUMER
    assert is_child(send, spans.one("request"))
    assert is_child(process, send)
    assert is_child(handle, process)
    trace_id, send_id = ids(send)
    headers, _ = seen[0]
    assert headers["traceparent"].startswith(f"00-{trace_id:032x}-{send_id:016x}-")

    event_id = event.payload.event_id
    assert event_id
    assert attrs(send) == {
        "messaging.system": "event_collector",
        "messaging.destination.name": DEFAULT_DESTINATION,
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.message.id": event_id,
    }
    assert attrs(process) == {
        "messaging.system": "event_collector",
        "messaging.destination.name": DEFAULT_DESTINATION,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.message.id": event_id,
        "event_collector.collector": "handle",
        "event_collector.attempt": 1,
    }
    assert send.status.status_code is StatusCode.UNSET
    assert process.status.status_code is StatusCode.UNSET


async def test_send_nowait_and_a_payload_of_the_senders_are_traced_too(
    spans: Spans, traced: tuple[CollectorQueue, list[Any]]
) -> None:
    queue, seen = traced
    publisher = queue.get_publisher()
    first = publisher.send_nowait(1)
    second = await publisher.send(Payload(2, headers={"request-id": "r2"}))
    await first.wait()
    await second.wait()
    sends = spans.finished("send event_collector")
    processes = spans.finished("process event_collector")
    assert len(sends) == len(processes) == 2
    by_id = {attrs(s)["messaging.message.id"]: s for s in sends}
    for process in processes:
        assert is_child(process, by_id[attrs(process)["messaging.message.id"]])
    assert {first.payload.event_id, second.payload.event_id} == set(by_id)
    assert seen[1][0]["request-id"] == "r2"
    assert "traceparent" in seen[1][0]


async def test_baggage_travels_with_the_event(
    spans: Spans, traced: tuple[CollectorQueue, list[Any]]
) -> None:
    queue, seen = traced
    token = otel_context.attach(baggage.set_baggage("tenant", "t-42"))
    try:
        event = await queue.get_publisher().send("x")
    finally:
        otel_context.detach(token)
    await event.wait()
    headers, tenant = seen[0]
    assert tenant == "t-42"
    assert "tenant=t-42" in headers["baggage"]


async def test_a_broadcast_makes_one_call_span_per_collector(spans: Spans) -> None:
    async def handle(payload: Payload[Any], ctx: Context) -> Any:
        return payload.value

    keys = ["a", "b", "c"]
    async with CollectorQueue([Collector(k, handle) for k in keys]) as queue:
        instrument(queue, spans.provider, name="orders")
        results = await (await queue.get_publisher().send(1)).wait()
    assert [r.collector for r in results] == keys
    send = spans.one("send orders")
    processes = spans.finished("process orders")
    assert sorted(attrs(p)["event_collector.collector"] for p in processes) == keys
    assert all(is_child(p, send) for p in processes)
    assert {attrs(p)["messaging.destination.name"] for p in processes} == {"orders"}


# -- failures ----------------------------------------------------------------------


class Declined(Exception):
    """A handler's own exception."""


async def test_what_fails_in_a_call_is_recorded_on_its_span(spans: Spans) -> None:
    async def raises(payload: Payload[Any], ctx: Context) -> Any:
        raise Declined("no")

    async def returns_error(payload: Payload[Any], ctx: Context) -> Any:
        return Error(ValueError("bad value"))

    async def returns_message(payload: Payload[Any], ctx: Context) -> Any:
        return Error("out of stock")

    async def never_answers(payload: Payload[Any], ctx: Context) -> Any:
        await asyncio.Event().wait()

    collectors = [
        Collector("raises", raises),
        Collector("returns_error", returns_error),
        Collector("returns_message", returns_message),
        Collector("slow", never_answers, timeout=0.05),
    ]
    async with CollectorQueue(collectors) as queue:
        instrument(queue, spans.provider)
        results = await (await queue.get_publisher().send(1)).wait()
    assert all(isinstance(r, Error) for r in results)
    by_collector = {
        attrs(s)["event_collector.collector"]: s
        for s in spans.finished("process event_collector")
    }
    assert set(by_collector) == {c.key for c in collectors}
    for span in by_collector.values():
        assert span.status.status_code is StatusCode.ERROR

    raised = by_collector["raises"]
    assert attrs(raised)["error.type"] == f"{__name__}.Declined"
    assert exception_types(raised) == [f"{__name__}.Declined"]
    assert raised.status.description == "Declined: no"

    returned = by_collector["returns_error"]
    assert attrs(returned)["error.type"] == "ValueError"
    assert exception_types(returned) == ["ValueError"]

    message = by_collector["returns_message"]
    assert attrs(message)["error.type"] == "_OTHER"
    assert message.status.description == "out of stock"
    assert exception_types(message) == []

    timed_out = by_collector["slow"]
    assert attrs(timed_out)["error.type"] == "TimeoutError"
    assert exception_types(timed_out) == ["TimeoutError"]


async def test_a_call_the_shutdown_cancels_is_marked_cancelled_not_crashed(
    loop_guard: LoopErrors, spans: Spans
) -> None:
    gate = Gate()
    queue = CollectorQueue([Collector("held", gate)], consumer_shutdown_timeout=0.01)
    async with queue:
        instrument(queue, spans.provider)
        event = await queue.get_publisher().send(1)
        await gate.until_running(1)
    assert is_cancelled(await event.wait())
    process = spans.one("process event_collector")
    assert process.status.status_code is StatusCode.ERROR
    assert attrs(process)["error.type"] == "cancelled"
    assert process.events == ()
    assert process.end_time is not None


async def test_a_send_that_fails_is_recorded_on_its_span(spans: Spans) -> None:
    async def handle(payload: Payload[Any], ctx: Context) -> Any:
        return payload.value

    queue = CollectorQueue([Collector("handle", handle)])
    async with queue:
        instrument(queue, spans.provider)
        with pytest.raises(TypeError, match="priority must be an int"):
            await queue.get_publisher().send(1, priority="high")  # type: ignore[arg-type]
    with pytest.raises(QueueClosed):
        await queue.get_publisher().send(2)
    bad, closed = spans.finished("send event_collector")
    for span in (bad, closed):
        assert span.status.status_code is StatusCode.ERROR
        assert exception_types(span) == [attrs(span)["error.type"]]
        assert "messaging.message.id" not in attrs(span)
    assert attrs(bad)["error.type"] == "TypeError"
    assert attrs(closed)["error.type"] == "event_collector.exceptions.QueueClosed"
    assert spans.finished("process event_collector") == []


# -- tracing that fails ---------------------------------------------------------------


class _BrokenProcessor(SpanProcessor):
    """A span processor that raises where it is told to."""

    def __init__(self, *, on_start: bool = False, on_end: bool = False) -> None:
        self.fail_start, self.fail_end = on_start, on_end

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if self.fail_start:
            raise RuntimeError("processor broke on start")

    def on_end(self, span: Any) -> None:
        if self.fail_end:
            raise RuntimeError("processor broke on end")


class _BrokenPropagator(TraceContextTextMapPropagator):
    def inject(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("propagator broke on inject")

    def extract(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("propagator broke on extract")


async def _echo(payload: Payload[Any], ctx: Context) -> Any:
    return payload.value


@pytest.mark.parametrize(
    ("processor", "steps"),
    [
        (
            _BrokenProcessor(on_start=True),
            ["start a send span", "start a process span"],
        ),
        (_BrokenProcessor(on_end=True), ["end a send span", "end a process span"]),
    ],
    ids=["on-start", "on-end"],
)
async def test_a_failing_span_processor_breaks_no_send_and_no_call(
    spans: Spans, processor: SpanProcessor, steps: list[str]
) -> None:
    spans.provider.add_span_processor(processor)
    batch = BatchCollector("rows", _echo_batch, max_size=2, max_wait=GUARD)
    with capture_logs() as logs:
        async with CollectorQueue([Collector("one", _echo), batch]) as queue:
            instrument(queue, spans.provider)
            publisher = queue.get_publisher()
            one = [await publisher.send(Payload(n, keys=["one"])) for n in range(3)]
            rows = [await publisher.send(Payload(n, keys=["rows"])) for n in (7, 8)]
            now = publisher.send_nowait(Payload(9, keys=["one"]))
            answers = [await e.wait() for e in [*one, *rows, now]]
    # Every send went in once, every call ran: the tracing is what failed.
    assert answers == [[Ok(0)], [Ok(1)], [Ok(2)], [Ok(7)], [Ok(8)], [Ok(9)]]
    failed = [e for e in logs if e["event"].startswith("tracing failed")]
    assert sorted(e["step"] for e in failed) == sorted(steps)  # once each
    assert all(isinstance(e["exc_info"], RuntimeError) for e in failed)


async def test_the_traceparent_does_not_judge_the_applications_own_headers(
    spans: Spans,
) -> None:
    # In memory nothing encodes headers: one the application wrote into
    # payload.headers by hand is its business, and there is room beside it.
    async with CollectorQueue([Collector("echo", _echo)], logging=False) as queue:
        instrument(queue, spans.provider)
        payload = Payload(1)
        payload.headers["count"] = 3  # type: ignore[assignment]
        with capture_logs() as logs:
            event = await queue.get_publisher().send(payload)
            assert await event.wait() == [Ok(1)]
    assert sorted(payload.headers) == ["count", "traceparent"]
    assert [e for e in logs if e["event"].startswith("tracing failed")] == []


async def test_a_handler_does_not_run_in_the_tracings_failure(spans: Spans) -> None:
    spans.provider.add_span_processor(_BrokenProcessor(on_start=True))
    handling: list[Any] = []

    async def fails(payload: Payload[Any], ctx: Context) -> Any:
        handling.append(sys.exc_info()[1])
        raise ValueError("the handler's own")

    async with CollectorQueue([Collector("fails", fails)], logging=False) as queue:
        instrument(queue, spans.provider)
        (error,) = await (await queue.get_publisher().send(1)).wait()
    # Nothing was being handled when the handler ran, and its error is its
    # own, with no tracing failure chained to it.
    assert handling == [None]
    assert isinstance(error, Error)
    assert isinstance(error.err, ValueError)
    assert error.err.__context__ is None


async def _echo_batch(payloads: list[Payload[Any]], ctx: Context) -> list[Any]:
    return [p.value for p in payloads]


async def test_a_failing_propagator_breaks_no_send_and_no_call(
    spans: Spans, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(propagate, "_HTTP_TEXT_FORMAT", _BrokenPropagator())
    with capture_logs() as logs:
        async with CollectorQueue([Collector("one", _echo)]) as queue:
            instrument(queue, spans.provider)
            events = [await queue.get_publisher().send(n) for n in range(3)]
            answers = [await e.wait() for e in events]
    assert answers == [[Ok(0)], [Ok(1)], [Ok(2)]]
    failed = [e for e in logs if e["event"].startswith("tracing failed")]
    assert sorted(e["step"] for e in failed) == [
        "inject the trace context",
        "start a process span",
    ]
    # The sends' spans were made and ended; the calls went untraced.
    assert len(spans.finished("send event_collector")) == 3
    assert spans.finished("process event_collector") == []


async def test_a_send_whose_headers_leave_no_room_goes_without_its_traceparent(
    spans: Spans,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    full = {f"h{n}": "v" for n in range(64)}  # as many headers as an event has
    publisher = RedisTransport(redis_server.url, stream="otel-full").publisher()
    with capture_logs() as logs:
        async with publisher:
            instrument(publisher, spans.provider)
            crowded = await publisher.send(Payload(1, headers=full))
            roomy = await publisher.send(Payload(2, headers={"h0": "v"}))
    # Redis took both; the first has no room for a traceparent, and says so.
    assert crowded.payload.headers == full
    assert crowded.payload.event_id
    assert sorted(roomy.payload.headers) == ["h0", "traceparent"]
    (failed,) = [e for e in logs if e["event"].startswith("tracing failed")]
    assert failed["step"] == "make room for the trace context"
    assert "would make 65, over 64" in str(failed["exc_info"])
    assert len(spans.finished("send otel-full")) == 2


# -- batches -------------------------------------------------------------------------


async def test_a_batch_call_has_one_span_linked_to_every_send(spans: Spans) -> None:
    async def insert(payloads: list[Payload[Any]], ctx: Context) -> list[Any]:
        with spans.tracer.start_as_current_span("insert rows"):
            return [
                Error(Declined(p.value)) if p.value == "bad" else p.value
                for p in payloads
            ]

    # max_wait is a guard: the batch goes when its three payloads are there.
    batch = BatchCollector("rows", insert, max_size=3, max_wait=GUARD)
    queue = CollectorQueue([batch])
    # Its tasks start in this span's context, which the calls must not take.
    with spans.tracer.start_as_current_span("startup"):
        await queue.init_queue()
    try:
        instrument(queue, spans.provider)
        publisher = queue.get_publisher()
        events = [await publisher.send(v) for v in ("a", "bad", "c")]
        answers = [await e.wait() for e in events]
    finally:
        await queue.shut_down_queue()
    assert [type(a[0]) for a in answers] == [Ok, Error, Ok]
    sends = spans.finished("send event_collector")
    process = spans.one("process event_collector")
    assert process.kind is SpanKind.CONSUMER
    assert attrs(process)["messaging.batch.message_count"] == 3
    assert attrs(process)["event_collector.collector"] == "rows"
    assert [link.context.span_id for link in process.links] == [
        ids(s)[1] for s in sends
    ]
    assert [
        (link.attributes or {})["messaging.message.id"] for link in process.links
    ] == [e.payload.event_id for e in events]
    assert process.parent is None, "a batch starts a trace of its own"
    assert is_child(spans.one("insert rows"), process)
    assert process.status.status_code is StatusCode.ERROR
    assert process.status.description == "1 of 3 results are errors"
    assert exception_types(process) == [f"{__name__}.Declined"]


# -- turning it on and off -------------------------------------------------------------


async def test_uninstrument_stops_new_spans_and_removes_the_probe(
    loop_guard: LoopErrors, spans: Spans
) -> None:
    seen: list[dict[str, str]] = []

    async def handle(payload: Payload[Any], ctx: Context) -> Any:
        seen.append(dict(payload.headers))
        return payload.value

    async with CollectorQueue([Collector("handle", handle)]) as queue:
        publisher, collector = queue.get_publisher(), queue.collectors[0]
        tracing = instrument(queue, spans.provider)
        assert tracing.enabled
        assert tracing.state == "tracing"
        with pytest.raises(ValueError, match="traced already"):
            instrument(queue, spans.provider)
        await (await publisher.send(1)).wait()
        assert len(spans.finished()) == 2

        tracing.uninstrument()
        tracing.uninstrument()  # again: nothing happens
        assert tracing.state == "removed"
        assert not tracing.enabled
        assert not tracing.check_provider()
        assert publisher._probes == ()
        assert collector._probed is None
        await (await publisher.send(2)).wait()
        assert len(spans.finished()) == 2
        assert "traceparent" in seen[0]
        assert seen[1] == {}

        again = instrument(queue, spans.provider)
        await (await publisher.send(3)).wait()
        again.uninstrument()
    assert len(spans.finished()) == 4


async def test_the_given_provider_is_used_not_the_global_one(spans: Spans) -> None:
    global_provider = trace.get_tracer_provider()

    async def handle(payload: Payload[Any], ctx: Context) -> Any:
        return payload.value

    async with CollectorQueue([Collector("handle", handle)]) as queue:
        tracing = instrument(queue, spans.provider)
        await (await queue.get_publisher().send(1)).wait()
        tracing.uninstrument()
    assert len(spans.finished()) == 2
    scopes = {s.instrumentation_scope for s in spans.finished()}
    assert {scope.name for scope in scopes if scope is not None} == {"event_collector"}
    assert trace.get_tracer_provider() is global_provider


async def test_a_noop_provider_installs_nothing() -> None:
    async def handle(payload: Payload[Any], ctx: Context) -> Any:
        return payload.value

    async with CollectorQueue([Collector("handle", handle)]) as queue:
        tracing = instrument(queue, trace.NoOpTracerProvider())
        assert tracing.state == "off"
        assert not tracing.check_provider()
        assert queue.get_publisher()._probes == ()
        assert queue.collectors[0]._probed is None
        tracing.uninstrument()
        assert tracing.state == "removed"


async def test_a_redis_publisher_is_watched_for_a_provider_while_open(
    redis_server: RedisServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No global provider is ever set in this process: the Tracing waits.
    monkeypatch.setattr("event_collector.otel.PROVIDER_CHECK_INTERVAL", 0.01)
    publisher = RedisTransport(redis_server.url, stream="otel-closed").publisher()
    async with publisher:
        tracing = instrument(publisher)
        assert tracing.state == "waiting"
        assert tracing._timer is not None
        looked = tracing._timer
        # It looks again, and again, while the publisher is open.
        await wait_for(lambda: tracing._timer not in (looked, None), guard=GUARD)
    await wait_for(lambda: tracing._timer is None, guard=GUARD)
    # Stopped while closed: a while later it still looks for nothing.
    for _ in range(5):
        await asyncio.sleep(0.02)
        assert tracing._timer is None
    assert tracing.state == "waiting"
    # Started again, it is watched again; uninstrument() stops that for good.
    async with publisher:
        assert tracing._timer is not None
        tracing.uninstrument()
        assert tracing._timer is None
        assert publisher._on_start == []


def test_instrument_refuses_what_it_cannot_trace(spans: Spans) -> None:
    queue = CollectorQueue([Collector("x", Gate())])
    with pytest.raises(TypeError, match="got target=object"):
        instrument(object(), spans.provider)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got tracer_provider='global'"):
        instrument(queue, "global")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="got name=''"):
        instrument(queue, spans.provider, name="")
    tracing = instrument(queue, spans.provider, name="orders")
    assert isinstance(tracing, Tracing)
    assert repr(tracing) == (
        "<Tracing tracing destination='orders' system='event_collector'>"
    )
    tracing.uninstrument()


def run_app(role: str, options: dict[str, Any], log: Path) -> subprocess.Popen[str]:
    """Start ``tests/otel_worker_app.py role options``, its standard error
    going to ``log``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(SRC), str(APP.parent), env.get("PYTHONPATH", "")]
    )
    env.pop("PYTHONASYNCIODEBUG", None)
    env.pop("OTEL_PYTHON_TRACER_PROVIDER", None)
    with open(log, "w") as err:
        return subprocess.Popen(
            [sys.executable, str(APP), role, json.dumps(options)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
            preexec_fn=_die_with_parent(),
        )


@pytest.mark.slow
def test_with_no_provider_nothing_is_installed_until_one_is_set(
    tmp_path: Path,
) -> None:
    process = run_app("deferred", {}, tmp_path / "deferred.log")
    out, _ = process.communicate(timeout=GUARD * 2)
    assert process.returncode == 0, (tmp_path / "deferred.log").read_text()
    report = json.loads(out)
    # Before: waiting, no probe on any publisher or collector, no header.
    assert report["states_before"] == ["waiting"] * 4
    assert report["probes_before"] == [0, 0, 0, False, False, False]
    assert report["headers_before"] == [{}, {}, {}]
    # A publisher has no start to wait for: without a loop it is refused.
    assert "no event loop" in report["outside_a_loop"]
    # Once the global provider is set: check_provider() starts at once, the
    # watchers within about PROVIDER_CHECK_INTERVAL (a queue instrumented
    # before its start, one instrumented while it ran, a publisher).
    assert report["told_at_once"] is True
    assert report["others_at_once"] == [False, False, False]
    assert report["states_after"] == ["tracing"] * 4, report["watched_after"]
    assert report["publisher_probes"] == 1
    assert report["late_state"] == "tracing"
    assert report["headers_after"] == [["traceparent"]] * 3
    recorded = report["spans"]
    sends = [s for s in recorded if s["kind"] == "PRODUCER"]
    processes = [s for s in recorded if s["kind"] == "CONSUMER"]
    assert len(sends) == len(processes) == 3
    send_ids = {s["span_id"] for s in sends}
    assert {p["parent_id"] for p in processes} == send_ids


# -- across two processes, on Redis ---------------------------------------------------


@pytest.mark.slow
async def test_a_worker_process_continues_the_publishers_trace(
    spans: Spans,
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    stream = f"otel-{next(_streams)}"
    spans_file = tmp_path / "worker-spans.jsonl"
    options = {"url": redis_server.url, "stream": stream, "spans": str(spans_file)}
    worker = run_app("worker", options, tmp_path / "worker.log")
    try:
        assert worker.stdout is not None
        async with asyncio.timeout(GUARD):
            ready = await asyncio.to_thread(worker.stdout.readline)
        assert ready.startswith("READY "), (tmp_path / "worker.log").read_text()
        consumer = ready.split()[1]

        transport = RedisTransport(redis_server.url, stream=stream)
        async with transport.publisher() as publisher:
            tracing = instrument(publisher, spans.provider)
            assert tracing.destination == stream
            with spans.tracer.start_as_current_span("request"):
                many = await publisher.send_many(
                    [Payload(n, keys=["work"]) for n in (1, 2)]
                )
                failing = await publisher.send(Payload("x", keys=["fail"]))
            async with asyncio.timeout(GUARD):
                answers = [await e.wait() for e in (*many, failing)]
            tracing.uninstrument()
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, GUARD) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(GUARD)
        if worker.stdout is not None:
            worker.stdout.close()

    recorded = [json.loads(line) for line in spans_file.read_text().splitlines()]
    remote = {
        s["attributes"]["messaging.message.id"]: s
        for s in recorded
        if s["kind"] == "CONSUMER"
    }
    request = spans.one("request")
    by_id = {
        attrs(s)["messaging.message.id"]: s for s in spans.finished(f"send {stream}")
    }
    sends = [by_id[e.payload.event_id] for e in (*many, failing)]
    assert len(by_id) == 3
    assert len(remote) == 3
    for send, event in zip(sends, (*many, failing), strict=True):
        event_id = event.payload.event_id
        assert is_child(send, request)
        assert attrs(send) == {
            "messaging.system": "redis",
            "messaging.destination.name": stream,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.message.id": event_id,
        }
        trace_id, send_id = ids(send)
        process = remote[event_id]
        assert process["name"] == f"process {stream}"
        assert process["trace_id"] == f"{trace_id:032x}"
        assert process["parent_id"] == f"{send_id:016x}"
        assert process["attributes"] == {
            "messaging.system": "redis",
            "messaging.destination.name": stream,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.consumer.group.name": "event-collector",
            "messaging.client.id": consumer,
            "messaging.message.id": event_id,
            "event_collector.collector": "fail" if event is failing else "work",
            "event_collector.attempt": 1,
            **({"error.type": "ValueError"} if event is failing else {}),
        }

    # The worker's handler saw the send span's traceparent, and its own span
    # is a child of the call's.
    for answer, send in zip(answers[:2], sends[:2], strict=True):
        (result,) = answer
        assert isinstance(result, Ok)
        trace_id, send_id = ids(send)
        assert result.value["traceparent"].startswith(
            f"00-{trace_id:032x}-{send_id:016x}-"
        )
    handles = [s for s in recorded if s["name"] == "handle"]
    assert sorted(h["parent_id"] for h in handles) == sorted(
        remote[e.payload.event_id]["span_id"] for e in many
    )

    failed = remote[failing.payload.event_id]
    assert failed["status"] == "ERROR"
    assert failed["description"] == "ValueError: declined 'x'"
    assert [e["name"] for e in failed["events"]] == ["exception"]
    assert failed["events"][0]["attributes"]["exception.type"] == "ValueError"
    (error,) = answers[2]
    assert isinstance(error, Error)
    for process in remote.values():
        if process is not failed:
            assert process["status"] == "UNSET"
