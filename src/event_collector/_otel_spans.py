"""The probe behind :mod:`event_collector.otel`: a producer span around
each send, a consumer span around each collector call, and the attribute
names they carry.

Only the OpenTelemetry API is used here (``trace``, ``context``,
``propagate``): the application brings the SDK, or nothing at all.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer

from ._log import get_logger, report_exception
from ._outcome import propagates
from ._payload_routing import MAX_HEADER_CHARS, MAX_HEADERS
from ._probes import BatchCall, Call, Probe
from .collector import BatchCollector, Collector
from .data import Error, Payload

__all__ = ["TraceProbe", "Where"]

# OpenTelemetry's messaging semantic conventions, written out: the
# opentelemetry-semantic-conventions package is not a dependency.
SYSTEM = "messaging.system"
DESTINATION = "messaging.destination.name"
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
MESSAGE_ID = "messaging.message.id"
CONSUMER_GROUP = "messaging.consumer.group.name"
CLIENT_ID = "messaging.client.id"
BATCH_COUNT = "messaging.batch.message_count"
ERROR_TYPE = "error.type"
# This package's own.
COLLECTOR = "event_collector.collector"
ATTEMPT = "event_collector.attempt"

CANCELLED = "cancelled"
"""``error.type`` of a call stopped by its consumer's cancellation."""

# The context a consumer span is parented in: the message's own, never the
# consumer task's (which it copied from whoever started the queue).
_NO_CONTEXT = Context()


@dataclasses.dataclass(frozen=True, slots=True)
class Where:
    """What the spans say about where the messages go."""

    system: str
    """``messaging.system``."""
    destination: str
    """``messaging.destination.name``."""
    group: str | None = None
    """``messaging.consumer.group.name`` of consumer spans, if any."""
    client_id: str | None = None
    """``messaging.client.id`` of consumer spans, if any."""


class TraceProbe(Probe):
    """Spans for every send and every collector call (see ``_probes``)."""

    def __init__(self, tracer: Tracer, where: Where) -> None:
        self._tracer = tracer
        common: dict[str, Any] = {SYSTEM: where.system, DESTINATION: where.destination}
        self._send_name = f"send {where.destination}"
        self._send_attributes = {
            **common,
            OPERATION_TYPE: "send",
            OPERATION_NAME: "send",
        }
        self._process_name = f"process {where.destination}"
        process = {**common, OPERATION_TYPE: "process", OPERATION_NAME: "process"}
        if where.group is not None:
            process[CONSUMER_GROUP] = where.group
        if where.client_id is not None:
            process[CLIENT_ID] = where.client_id
        self._process_attributes = process
        self._logged: set[str] = set()  # steps whose failure was logged

    def broken(self, step: str, exc: Exception) -> None:
        """The tracing itself failed at ``step`` (a span processor or a
        propagator that raises): the event goes on untraced there. Logged
        the first time for each step only."""
        if step not in self._logged:
            self._logged.add(step)
            report_exception(
                _log,
                "tracing failed; the event goes on without it (logged once)",
                exc,
                step=step,
            )

    def safely(self, step: str, do: Callable[..., Any], *args: Any) -> None:
        """``do(*args)``, whose failure is the tracing's, never the event's."""
        try:
            do(*args)
        except Exception as exc:
            self.broken(step, exc)

    def sending(self, payload: Payload[Any]) -> _Send:
        return _Send(self, payload)

    def wrap(self, collector: Collector, call: Call) -> Call:
        tracer = self._tracer
        name = self._process_name
        attributes = {**self._process_attributes, COLLECTOR: collector.key}

        async def traced(payload: Payload[Any]) -> Any:
            try:
                parent = propagate.extract(payload.headers, context=_NO_CONTEXT)
                span = tracer.start_span(
                    name,
                    parent,
                    SpanKind.CONSUMER,
                    {
                        **attributes,
                        MESSAGE_ID: payload.event_id,
                        ATTEMPT: payload.attempt,
                    },
                )
            except Exception as exc:
                self.broken("start a process span", exc)
                span = None
            # Called outside the except clause: the handler must not run
            # while the tracing's error is being handled (its context).
            token = None if span is None else self._current(span, parent)
            if token is None:
                return await call(payload)
            assert span is not None
            try:
                value = await call(payload)
            except BaseException as exc:
                self.safely("record a call's error", _raised, span, exc)
                raise
            else:
                if isinstance(value, Error):
                    self.safely("record a call's error", _answered, span, value)
            finally:
                self._done(span, token)
            return value

        return traced

    def wrap_batch(self, collector: BatchCollector, call: BatchCall) -> BatchCall:
        tracer = self._tracer
        name = self._process_name
        attributes = {**self._process_attributes, COLLECTOR: collector.key}

        async def traced(payloads: list[Payload[Any]]) -> Sequence[Any]:
            try:
                span = tracer.start_span(
                    name,
                    _NO_CONTEXT,
                    SpanKind.CONSUMER,
                    {**attributes, BATCH_COUNT: len(payloads)},
                    _links(payloads),
                )
            except Exception as exc:
                self.broken("start a process span", exc)
                span = None
            token = None if span is None else self._current(span, _NO_CONTEXT)
            if token is None:
                return await call(payloads)
            assert span is not None
            try:
                values = await call(payloads)
            except BaseException as exc:
                self.safely("record a call's error", _raised, span, exc)
                raise
            else:
                if isinstance(values, list | tuple):
                    errors = [v for v in values if isinstance(v, Error)]
                    if errors:
                        self.safely(
                            "record a call's error",
                            _batch_answered,
                            span,
                            errors,
                            len(values),
                        )
            finally:
                self._done(span, token)
            return values

        return traced

    def _current(self, span: Span, parent: Context) -> object | None:
        """Make ``span`` current (the token to detach it with), or end it
        and return ``None`` if that fails: the call then runs untraced."""
        try:
            return otel_context.attach(trace.set_span_in_context(span, parent))
        except Exception as exc:
            self.broken("make a process span current", exc)
        self.safely("end a process span", span.end)
        return None

    def _done(self, span: Span, token: object) -> None:
        """Leave ``span``'s context and end the span."""
        self.safely("leave a process span", otel_context.detach, token)
        self.safely("end a process span", span.end)

    def __repr__(self) -> str:
        return f"<TraceProbe {self._send_name!r}>"


class _Send:
    """The producer span of one send: started and injected into the
    payload's headers on entry, given the message id and ended on exit.

    It is not made current: ``send_many`` holds several open at once. If
    the tracing fails, the send goes on without its span, or its header."""

    __slots__ = ("_payload", "_probe", "_span")

    def __init__(self, probe: TraceProbe, payload: Payload[Any]) -> None:
        self._probe = probe
        self._payload = payload
        self._span: Span | None = None

    def __enter__(self) -> None:
        probe = self._probe
        try:
            span = probe._tracer.start_span(
                probe._send_name,
                kind=SpanKind.PRODUCER,
                attributes=probe._send_attributes,
            )
        except Exception as exc:
            probe.broken("start a send span", exc)
            return
        self._span = span
        carried: dict[str, str] = {}
        probe.safely(
            "inject the trace context",
            propagate.inject,
            carried,
            trace.set_span_in_context(span),
        )
        if carried:
            headers = self._payload.headers
            room = _no_room(headers, carried)
            if room is None:
                headers.update(carried)
            else:
                probe.broken("make room for the trace context", room)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span = self._span
        if span is None:
            return
        self._span = None
        self._probe.safely("end a send span", _sent, span, exc, self._payload)


def _sent(span: Span, exc: BaseException | None, payload: Payload[Any]) -> None:
    """End the producer span of a send that raised ``exc``, or not."""
    if exc is not None:
        # Not the id: an event made and then refused is no message.
        _failed(span, exc)
    elif event_id := payload.event_id:
        span.set_attribute(MESSAGE_ID, event_id)
    span.end()


def _no_room(headers: dict[str, str], carried: dict[str, str]) -> ValueError | None:
    """Why ``carried`` cannot join ``headers`` within the limits every
    transport keeps (:data:`MAX_HEADERS`, :data:`MAX_HEADER_CHARS`), or
    ``None`` if it can. Only the room is judged: headers of the
    application's that break the rules are for the transport to refuse."""
    merged = {**headers, **carried}
    if len(merged) > MAX_HEADERS:
        return ValueError(
            f"the trace context's {len(carried)} header(s) would make "
            f"{len(merged)}, over {MAX_HEADERS}"
        )
    size = sum(
        len(k) + len(v)
        for k, v in merged.items()
        if isinstance(k, str) and isinstance(v, str)
    )
    if size > MAX_HEADER_CHARS:
        return ValueError(
            f"the trace context would make the headers {size} characters, "
            f"over {MAX_HEADER_CHARS}"
        )
    return None


def _links(payloads: list[Payload[Any]]) -> list[Link]:
    """A link to each payload's producer span (those that carry one)."""
    links = []
    for payload in payloads:
        remote = propagate.extract(payload.headers, context=_NO_CONTEXT)
        span_context = trace.get_current_span(remote).get_span_context()
        if span_context.is_valid:
            event_id = payload.event_id
            links.append(
                Link(span_context, {MESSAGE_ID: event_id} if event_id else None)
            )
    return links


def _error_type(exc: BaseException) -> str:
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _failed(span: Span, exc: BaseException) -> None:
    """Record ``exc`` on ``span``, whose operation failed with it."""
    if not span.is_recording():
        return
    span.record_exception(exc)
    span.set_attribute(ERROR_TYPE, _error_type(exc))
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def _raised(span: Span, exc: BaseException) -> None:
    """A collector call ended with ``exc``: an error, unless it is the
    running task's own cancellation (the queue stopping the consumer), which
    is marked as such, without an exception event: nothing crashed."""
    if isinstance(exc, asyncio.CancelledError) and propagates(exc):
        if span.is_recording():
            span.set_attribute(ERROR_TYPE, CANCELLED)
            span.set_status(
                Status(StatusCode.ERROR, "cancelled before the handler finished")
            )
        return
    _failed(span, exc)


def _answered(span: Span, error: Error) -> None:
    """The handler returned ``error``."""
    err = error.err
    if isinstance(err, BaseException):
        _failed(span, err)
    elif span.is_recording():
        span.set_attribute(ERROR_TYPE, "_OTHER")
        span.set_status(Status(StatusCode.ERROR, err))


def _batch_answered(span: Span, errors: list[Error], count: int) -> None:
    """A batch call returned ``errors`` among its ``count`` results."""
    if not span.is_recording():
        return
    for error in errors:
        if isinstance(error.err, BaseException):
            span.record_exception(error.err)
    first = errors[0].err
    span.set_attribute(
        ERROR_TYPE, _error_type(first) if isinstance(first, BaseException) else "_OTHER"
    )
    span.set_status(
        Status(StatusCode.ERROR, f"{len(errors)} of {count} results are errors")
    )


_log = get_logger()
