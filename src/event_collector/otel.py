"""OpenTelemetry traces of collector queues: a span for each send and one
for each collector call, joined across processes.

One call traces a queue, or a Redis publisher::

    from event_collector.otel import instrument

    async with CollectorQueue(collectors) as queue:
        tracing = instrument(queue)
        ...
        tracing.uninstrument()  # when tracing should stop

Each send makes a span of kind ``PRODUCER`` (``send <destination>``), a
child of the sender's current span, and writes its W3C ``traceparent``
(and any baggage) into the event's headers. Each collector call on the
event makes a span of kind ``CONSUMER`` (``process <destination>``), a
child of that send span, made current while the handler runs, so that
the spans the handler makes are its children. The headers travel with
the event, in memory and through Redis, so a worker process continues the
trace its publisher began. A batch collector's call makes one span, linked
to the send span of each event in the batch.

Only the ``opentelemetry-api`` package is used, which the ``otel`` extra
installs (``pip install "event-collector[otel]"``); the application
chooses the SDK and the exporter. Until a tracer provider is set, nothing
is installed on the queue and sends and calls cost what they cost without
tracing (see :func:`instrument`).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import trace
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "event_collector.otel needs opentelemetry-api; install it with the "
        'otel extra: pip install "event-collector[otel]"'
    ) from exc

from . import __version__
from ._instrument import install
from ._otel_spans import TraceProbe, Where
from .queue import CollectorQueue, InitializedQueue, QueueState, ShutDownQueue

if TYPE_CHECKING:
    from .messagebus import BusEventQueue
    from .redis import RedisPublisher

__all__ = [
    "DEFAULT_DESTINATION",
    "PROVIDER_CHECK_INTERVAL",
    "TRACER_NAME",
    "Tracing",
    "instrument",
]

DEFAULT_DESTINATION = "event_collector"
"""``messaging.destination.name`` of a queue that is not on Redis, unless
``instrument`` is given a ``name``."""

PROVIDER_CHECK_INTERVAL = 1.0
"""Seconds between two looks for a global tracer provider, while a
:class:`Tracing` waits for one."""

TRACER_NAME = "event_collector"
"""The instrumentation scope of the spans (the tracer's name)."""

_traced: weakref.WeakSet[Any] = weakref.WeakSet()
"""Targets a live :class:`Tracing` has (waiting or tracing)."""


class Tracing:
    """The tracing of one queue or Redis publisher; made by
    :func:`instrument`.

    It is *waiting* until a tracer provider is set, *tracing* once spans
    are made, *off* when the provider is a no-op one (nothing will be
    traced), *removed* after :meth:`uninstrument`.
    """

    __slots__ = ("_given", "_remove", "_state", "_target", "_timer", "_where")

    def __init__(
        self,
        target: CollectorQueue | RedisPublisher,
        where: Where,
        tracer_provider: trace.TracerProvider | None,
    ) -> None:
        self._target = target
        self._where = where
        self._given = tracer_provider
        self._state = "waiting"
        self._remove: Callable[[], None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def target(self) -> CollectorQueue | RedisPublisher:
        """The traced queue or publisher."""
        return self._target

    @property
    def destination(self) -> str:
        """The ``messaging.destination.name`` of the spans."""
        return self._where.destination

    @property
    def state(self) -> str:
        """``"waiting"``, ``"tracing"``, ``"off"`` or ``"removed"``."""
        return self._state

    @property
    def enabled(self) -> bool:
        """Whether spans are being made (the state is ``"tracing"``)."""
        return self._state == "tracing"

    def check_provider(self) -> bool:
        """Look for the tracer provider now and start tracing if there is
        one; return whether spans are being made.

        A waiting ``Tracing`` looks by itself every
        :data:`PROVIDER_CHECK_INTERVAL` seconds while its queue runs; a
        program that sets the provider late calls this to start at once.
        Call it from the event loop's thread.
        """
        if self._state != "waiting":
            return self._state == "tracing"
        provider = _resolved(self._given)
        if provider is None:
            return False
        self._stop_watching()
        if isinstance(provider, trace.NoOpTracerProvider):
            self._state = "off"
            return False
        tracer = provider.get_tracer(TRACER_NAME, __version__)
        self._remove = install(self._target, TraceProbe(tracer, self._where))
        self._state = "tracing"
        return True

    def uninstrument(self) -> None:
        """Stop tracing: sends and calls from now on make no span (those
        under way finish theirs). Calling it again does nothing."""
        if self._state == "removed":
            return
        self._state = "removed"
        self._stop_watching()
        remove, self._remove = self._remove, None
        if remove is not None:
            remove()
        _traced.discard(self._target)

    # -- waiting for a provider ---------------------------------------------------

    def _wait(self) -> None:
        """Look for a provider every PROVIDER_CHECK_INTERVAL seconds while the
        target runs (set up when there is none yet)."""
        target = self._target
        if isinstance(target, CollectorQueue):
            bus = target.get_message_bus()
            bus.add_msg_handler(InitializedQueue, self._started)
            bus.add_msg_handler(ShutDownQueue, self._shut_down)
            loop = target._life.loop
            if loop is not None and target.state == QueueState.RUNNING:
                # Safe from any thread, the loop's own included.
                loop.call_soon_threadsafe(self._watch, loop)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "instrument: no tracer provider is set yet, and no event loop "
                "runs here to wait for one on: call instrument(publisher) from "
                "the async code that uses the publisher, or set the tracer "
                "provider first"
            ) from None
        # A Redis publisher: watched until it closes, again once restarted.
        target._on_start.append(self._restarted)
        self._watch(loop)

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._state == "waiting" and self._timer is None:
            self._timer = loop.call_later(PROVIDER_CHECK_INTERVAL, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        if getattr(self._target, "_closed", False):
            return  # a Redis publisher closed: no more sends to trace
        if not self.check_provider():
            self._watch(loop)

    def _restarted(self) -> None:
        if not self.check_provider():
            self._watch(asyncio.get_running_loop())

    async def _started(self, message: InitializedQueue, pending: BusEventQueue) -> None:
        if message.collector_queue is self._target and not self.check_provider():
            self._watch(asyncio.get_running_loop())

    async def _shut_down(self, message: ShutDownQueue, pending: BusEventQueue) -> None:
        if message.collector_queue is self._target and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _stop_watching(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        target = self._target
        if isinstance(target, CollectorQueue):
            bus = target.get_message_bus()
            bus.del_msg_handler(InitializedQueue, self._started)
            bus.del_msg_handler(ShutDownQueue, self._shut_down)
        else:
            with contextlib.suppress(ValueError):
                target._on_start.remove(self._restarted)

    def __repr__(self) -> str:
        return (
            f"<Tracing {self._state} destination={self._where.destination!r} "
            f"system={self._where.system!r}>"
        )


def instrument(
    target: CollectorQueue | RedisPublisher,
    tracer_provider: trace.TracerProvider | None = None,
    *,
    name: str | None = None,
) -> Tracing:
    """Trace the sends and the collector calls of ``target``.

    Spans, named ``send <destination>`` and ``process <destination>``, carry
    the messaging attributes of OpenTelemetry's semantic conventions:
    ``messaging.system`` (``"redis"`` on Redis, ``"event_collector"``
    otherwise), ``messaging.destination.name``, ``messaging.operation.type``
    and ``messaging.operation.name`` (``"send"`` or ``"process"``) and
    ``messaging.message.id`` (the event id, once it is known); a Redis
    worker's spans also have ``messaging.consumer.group.name`` and
    ``messaging.client.id`` (its name in the group). A call's span says
    which collector ran (``event_collector.collector``) and which delivery
    it was (``event_collector.attempt``); a batch's span has
    ``messaging.batch.message_count``. A send or a call that fails, by an
    exception or by returning an ``Error``, has the status ``ERROR``, the
    exception as an event and ``error.type``; a call stopped by the queue
    (a shutdown whose drain time ran out) has ``error.type`` ``cancelled``.

    With no tracer provider yet (``tracer_provider`` is ``None`` and the
    global one is not set), nothing is installed: sends and calls stay as
    fast as untraced ones. While the queue runs, the global provider is
    looked for every :data:`PROVIDER_CHECK_INTERVAL` seconds (on a Redis
    publisher, from the event loop ``instrument`` is called on, while the
    publisher is not closed: from its next start after a close), so spans
    start within about a second of ``trace.set_tracer_provider``; or call
    :meth:`Tracing.check_provider`. A no-op provider
    (``NoOpTracerProvider``) traces nothing, ever.

    :param target: a :class:`~event_collector.queue.CollectorQueue`, on any
        transport, running or not yet started; or a
        :class:`~event_collector.redis.RedisPublisher`.
    :param tracer_provider: the provider of the tracer; the global one
        (``opentelemetry.trace.get_tracer_provider()``) when ``None``.
    :param name: ``messaging.destination.name``; by default the stream's
        name on Redis, :data:`DEFAULT_DESTINATION` otherwise.
    :raises TypeError: ``target`` is not a queue or a Redis publisher, or
        ``tracer_provider`` is not a ``TracerProvider``.
    :raises ValueError: ``name`` is empty or not a str, or ``target`` is
        traced already (call the other ``Tracing``'s ``uninstrument()``).
    :raises RuntimeError: a Redis publisher, with no provider set yet,
        instrumented where no event loop runs.
    :returns: the :class:`Tracing`; its ``uninstrument()`` stops tracing.
    """
    if tracer_provider is not None and not isinstance(
        tracer_provider, trace.TracerProvider
    ):
        raise TypeError(
            "tracer_provider must be an opentelemetry TracerProvider or None "
            f"(got tracer_provider={tracer_provider!r})"
        )
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"name must be a non-empty str or None (got name={name!r})")
    where = _where(target, name)
    if target in _traced:
        raise ValueError(
            f"{target!r} is traced already: call uninstrument() on its Tracing "
            "before instrumenting it again"
        )
    tracing = Tracing(target, where, tracer_provider)
    if not tracing.check_provider() and tracing.state == "waiting":
        tracing._wait()
    _traced.add(target)
    return tracing


def _resolved(given: trace.TracerProvider | None) -> trace.TracerProvider | None:
    """The provider to use, or ``None`` while the global one is not set."""
    if given is not None and not isinstance(given, trace.ProxyTracerProvider):
        return given
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider):
        return None
    return provider


def _where(target: Any, name: str | None) -> Where:
    """What the spans of ``target`` say about their destination."""
    # Read from the loaded module, never imported here: Redis is an extra,
    # and a target cannot be a Redis one unless that module is loaded.
    redis = sys.modules.get("event_collector.redis")
    if isinstance(target, CollectorQueue):
        transport = target.transport
        if redis is not None and isinstance(transport, redis.RedisTransport):
            return Where(
                "redis", name or transport.stream, transport.group, transport.consumer
            )
        return Where("event_collector", name or DEFAULT_DESTINATION)
    if redis is not None and isinstance(target, redis.RedisPublisher):
        return Where("redis", name or target._config.keys.stream)
    raise TypeError(
        "instrument a CollectorQueue or a RedisPublisher "
        f"(got target={type(target).__name__})"
    )
