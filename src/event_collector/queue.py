"""The collector queue: a self-scaling pool of consumers behind a queue.

A *collector queue* is a publisher-consumer queue built only on the standard
library and asyncio. Publishers ``send`` values; consumer tasks hand each one
to the router, which calls the collectors; the results come back through the
event. A monitor grows the pool when the load reaches one event per consumer
and shrinks it when the average load is low, never below the Little's-law
work in progress (arrival rate x service time) plus a margin.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from types import TracebackType

from . import messagebus as bus
from ._compat import TypeAliasType
from ._config import check_bool, check_int, check_number
from ._engine import Engine
from ._health import Health, read_health
from ._log import Logger, get_logger
from ._models import DEFAULT_PRIORITY, Load, Metrics, QueueState, QueueType
from .collector import Collector, _check_collectors
from .exceptions import ConfigError
from .publisher import EventPublisher
from .router import Router, SimpleRouter, _check_router
from .transport import MemoryTransport, Transport
from .types import EventObserver

__all__ = [
    "AVG_LOAD_INTERVAL",
    "CONSUMER_SHUTDOWN_TIMEOUT",
    "DEFAULT_MAX_CONSUMERS",
    "DEFAULT_MIN_CONSUMERS",
    "EVENT_SERVICE_DATA_WINDOW_SIZE",
    "METRICS_COLLECTOR_WINDOW_SIZE",
    "METRICS_WARMUP_INTERVAL",
    "MIN_METRICS_COLLECTOR_WINDOW_SIZE",
    "MONITOR_INTERVAL",
    "REPORT_INTERVAL",
    "WIP_MARGIN",
    "CollectorQueue",
    "InitializedQueue",
    "Load",
    "Metrics",
    "MonotonicTime",
    "QueueState",
    "ReportedMetrics",
    "ShutDownQueue",
]

MonotonicTime = TypeAliasType("MonotonicTime", float)
"""A reading of a monotonic clock, in seconds (``time.monotonic()``): only
differences between two readings mean anything."""

DEFAULT_MIN_CONSUMERS: int = 1
"""Default ``min_consumers``: consumers started with the queue."""

DEFAULT_MAX_CONSUMERS: int = 100_000
"""Default ``max_consumers``: the most consumers the pool grows to."""

CONSUMER_SHUTDOWN_TIMEOUT: float = 10.0
"""Default ``consumer_shutdown_timeout``: seconds a shutdown lets consumers
drain the queue before it cancels what is left."""

WIP_MARGIN: float = 0.15
"""Default ``wip_margin``: consumers added on top of the demand (15 %)."""

MONITOR_INTERVAL: float = 0.01
"""Default ``monitor_interval``: seconds between two load checks (10 ms)."""

REPORT_INTERVAL: float = 0.0
"""Default ``report_interval``: seconds between metrics reports (0: off)."""

AVG_LOAD_INTERVAL: float = 60.0
"""Default ``avg_load_interval``: seconds of load history in the average."""

METRICS_COLLECTOR_WINDOW_SIZE: float = 60.0
"""Default ``metrics_collector_window_size``: seconds of arrivals and
departures behind the rates."""

MIN_METRICS_COLLECTOR_WINDOW_SIZE: float = 5.0
"""The smallest rate window; a smaller ``metrics_collector_window_size`` is
raised to it (and logged)."""

EVENT_SERVICE_DATA_WINDOW_SIZE: int = 500
"""Default ``event_service_data_window_size``: events behind the service and
wait time averages."""

METRICS_WARMUP_INTERVAL: float = 3.0
"""Default ``metrics_warmup_interval``: seconds after start during which the
averages are reported as 0."""


@dataclasses.dataclass(slots=True)
class ReportedMetrics(bus.Message):
    """Dispatched on the queue's bus after each metrics report."""

    metrics: Metrics
    """The metrics just reported."""


@dataclasses.dataclass(slots=True)
class InitializedQueue(bus.Message):
    """Dispatched when the queue has started, before it handles an event."""

    collector_queue: CollectorQueue
    """The queue that started."""


@dataclasses.dataclass(slots=True)
class ShutDownQueue(bus.Message):
    """Dispatched when the queue has shut down and every event is answered."""

    collector_queue: CollectorQueue
    """The queue that shut down."""


_CROSS_THREAD_METRICS_TIMEOUT: float = 1.0
"""Seconds ``get_metrics`` called from another thread waits for the event
loop to take the measurement before it reads without the loop."""


class CollectorQueue:
    """A queue whose consumer pool grows and shrinks with the load.

    Use it as an async context manager, or call :meth:`init_queue` and
    :meth:`shut_down_queue`. Every argument is checked here; a wrong one
    raises :class:`~event_collector.exceptions.ConfigError` naming it.

    :param maxsize: bound on queued events (0: unbounded). With a bound,
        ``send`` waits for room and ``send_nowait`` raises ``QueueFull``.
    :param clock: the monotonic clock (seconds) behind the metrics;
        ``time.monotonic`` by default.
    :param transport: what carries the events (see
        :mod:`event_collector.transport`); by default a
        :class:`~event_collector.transport.MemoryTransport` in this process,
        which ``queue_type`` and ``maxsize`` configure. One transport serves
        one queue.
    """

    def __init__(
        self,
        collectors: Sequence[Collector | type[Collector]],
        router: type[Router] = SimpleRouter,
        autoscale: bool = True,
        min_consumers: int = DEFAULT_MIN_CONSUMERS,
        max_consumers: int = DEFAULT_MAX_CONSUMERS,
        wip_margin: float = WIP_MARGIN,
        monitor_interval: float = MONITOR_INTERVAL,
        report_interval: float = REPORT_INTERVAL,
        avg_load_interval: float = AVG_LOAD_INTERVAL,
        metrics_collector_window_size: float = METRICS_COLLECTOR_WINDOW_SIZE,
        event_service_data_window_size: int = EVENT_SERVICE_DATA_WINDOW_SIZE,
        metrics_warmup_interval: float = METRICS_WARMUP_INTERVAL,
        queue_type: QueueType = QueueType.FIFO,
        default_priority: int = DEFAULT_PRIORITY,
        consumer_shutdown_timeout: float = CONSUMER_SHUTDOWN_TIMEOUT,
        logging: bool = True,
        *,
        maxsize: int = 0,
        clock: Callable[[], float] = time.monotonic,
        transport: Transport | None = None,
    ) -> None:
        self.logging: bool = check_bool("logging", logging)
        """Whether the queue logs through the ``event_collector`` structlog
        logger; ``False`` writes nothing at all."""
        self._log: Logger = get_logger(self.logging, queue=f"{id(self):x}")

        self.collectors: list[Collector] = _check_collectors(collectors)
        """The collectors, instantiated where a class was given."""
        _check_router(router)
        self.router: type[Router] = router
        """The router class that delivers payloads to collectors."""
        self.autoscale: bool = check_bool("autoscale", autoscale)
        """Whether the pool follows the load; if not, it runs
        ``max_consumers`` consumers all along."""
        self.min_consumers: int = check_int("min_consumers", min_consumers, minimum=1)
        """The fewest consumers; started with the queue."""
        self.max_consumers: int = check_int("max_consumers", max_consumers)
        """The most consumers the pool grows to."""
        if self.max_consumers < self.min_consumers:
            raise ConfigError(
                "max_consumers must be >= min_consumers (got "
                f"max_consumers={max_consumers!r}, min_consumers={min_consumers!r})"
            )
        self.wip_margin: float = check_number(
            "wip_margin", wip_margin, minimum=0.0, maximum=1.0
        )
        """Fraction added to the demand when the pool is sized (0 to 1)."""
        self.monitor_interval: float = check_number(
            "monitor_interval", monitor_interval, above=0.0, unit="seconds"
        )
        """Seconds between two load checks of the monitor."""
        self.report_interval: float = check_number(
            "report_interval", report_interval, minimum=0.0, unit="seconds"
        )
        """Seconds between two metrics reports; 0 turns reports off."""
        self.avg_load_interval: float = check_number(
            "avg_load_interval", avg_load_interval, above=0.0, unit="seconds"
        )
        """Seconds of load history behind ``Metrics.avg_load``."""
        window = check_number(
            "metrics_collector_window_size",
            metrics_collector_window_size,
            above=0.0,
            unit="seconds",
        )
        if window < MIN_METRICS_COLLECTOR_WINDOW_SIZE:
            self._log.warning(
                "metrics_collector_window_size raised to its minimum",
                given=window,
                used=MIN_METRICS_COLLECTOR_WINDOW_SIZE,
            )
            window = MIN_METRICS_COLLECTOR_WINDOW_SIZE
        self.metrics_collector_window_size: float = window
        """Seconds of arrivals and departures behind the rates (at least 5)."""
        self.event_service_data_window_size: int = check_int(
            "event_service_data_window_size",
            event_service_data_window_size,
            minimum=1,
            maximum=sys.maxsize,
        )
        """Events behind the service and wait time averages."""
        self.metrics_warmup_interval: float = check_number(
            "metrics_warmup_interval",
            metrics_warmup_interval,
            minimum=0.0,
            unit="seconds",
        )
        """Seconds after start during which averages read 0."""
        if not isinstance(queue_type, QueueType):
            raise ConfigError(
                "queue_type must be a QueueType (FIFO, LIFO or PRIORITY) "
                f"(got queue_type={queue_type!r})"
            )
        self.queue_type: QueueType = queue_type
        """The order in which events are taken: FIFO, LIFO or PRIORITY."""
        self.default_priority: int = check_int("default_priority", default_priority)
        """Priority of events sent without one (lower runs first)."""
        self.consumer_shutdown_timeout: float = check_number(
            "consumer_shutdown_timeout", consumer_shutdown_timeout, unit="seconds"
        )
        """Seconds a shutdown lets consumers drain the queue before cancelling
        them; 0 or less waits as long as it takes."""
        self.maxsize: int = check_int("maxsize", maxsize, minimum=0)
        """Bound on queued events; 0 for none."""
        if not callable(clock):
            raise ConfigError(f"clock must be callable (got clock={clock!r})")
        self._clock = clock

        self._bus = bus.MessageBus(log=self._log)
        if transport is None:
            transport = MemoryTransport()
        elif not all(
            callable(getattr(transport, name, None))
            for name in ("attach", "start", "close", "hand_back", "stop")
        ):
            raise ConfigError(
                "transport must be a Transport (a MemoryTransport, say) "
                f"(got transport={transport!r})"
            )
        engine = self._engine = Engine(
            self,
            transport=transport,
            clock=clock,
            log=self._log,
            started=lambda: self._bus.dispatch(InitializedQueue(self)),
            shut_down=lambda: self._bus.dispatch(ShutDownQueue(self)),
            reported=lambda metrics: self._bus.dispatch(ReportedMetrics(metrics)),
            dead_lettered=self._bus.dispatch,
        )
        # The parts the queue's methods use, by their own names.
        self._transport, self._inbox = transport, engine.inbox
        self._pool, self._life = engine.pool, engine.life
        self._measurement, self._observers = engine.measurement, engine.observers

    # -- public queries ------------------------------------------------------

    def get_publisher(self) -> EventPublisher:
        """The publisher to ``send`` events with."""
        return self._engine.publisher

    def get_message_bus(self) -> bus.MessageBus:
        """The bus on which the queue announces ``InitializedQueue``,
        ``ShutDownQueue`` and ``ReportedMetrics``."""
        return self._bus

    @property
    def transport(self) -> Transport:
        """What carries the queue's events (a
        :class:`~event_collector.transport.MemoryTransport` by default)."""
        return self._transport

    def consumer_count(self) -> int:
        """Consumers in the pool now."""
        return self._pool.size

    def current_load(self) -> Load:
        """The load now: queued and busy events per consumer."""
        return self._engine.current_load()

    @property
    def state(self) -> QueueState:
        """``created``, ``starting``, ``running``, ``closing`` or ``closed``
        (a :class:`QueueState`, equal to those strings).

        A queue whose event loop ended without a shutdown reads ``closed``."""
        life = self._life
        life.check_loop()
        return life.state

    @property
    def is_running(self) -> bool:
        """Whether the queue accepts events."""
        return self.state == QueueState.RUNNING

    def get_metrics(self) -> Metrics:
        """Measure the queue now and return a :class:`Metrics` snapshot.

        Safe from any thread (a Prometheus exporter's, say): called outside
        the queue's event loop, the measurement runs on the loop, so it never
        races the monitor; if the loop does not answer within a second (it is
        blocked), the snapshot is read here without touching the queue's state."""
        return self._measurement.snapshot_from_any_thread(
            self._life.loop, self._engine.loop_thread, _CROSS_THREAD_METRICS_TIMEOUT
        )

    def health(self) -> Health:
        """The queue's :class:`~event_collector.health.Health` now (status,
        loop lag, monitor, oldest event). Never waits; safe from any thread."""
        return read_health(self.state, self._engine, self._clock)

    def add_event_observer(self, observer: EventObserver) -> None:
        """Call ``observer(event)`` each time an event is answered, however
        it is answered (results, errors, cancelled at shutdown), for
        histograms and error counters. It runs on the hot path: keep it
        quick. Its exceptions are logged."""
        self._observers.append(observer)

    def remove_event_observer(self, observer: EventObserver) -> None:
        """Stop calling ``observer``; nothing happens if it is not there."""
        if observer in self._observers:
            self._observers.remove(observer)

    # -- life cycle (the steps are in _lifecycle) ----------------------------

    async def init_queue(self) -> None:
        """Set up the collectors (in order), start the transport, the
        consumers and the monitor, then dispatch :class:`InitializedQueue`.

        If a collector's ``setup`` raises, the collectors already set up are
        torn down, nothing is left running and the exception propagates. If
        the start is cancelled (``asyncio.timeout`` around it, say) while an
        ``InitializedQueue`` handler runs, the queue shuts down at once, as
        for a cancelled :meth:`shut_down_queue`, before the cancellation
        propagates: nothing is left running and every event is answered."""
        await self._life.start()

    def request_shutdown(self) -> asyncio.Task[None]:
        """Start shutting down without waiting; return the shutdown task.

        For callbacks that cannot await (a ``loop.call_soon`` callback, a
        handler of another library's events). Calling it again returns the
        same task. To stop on SIGTERM, stop the senders first and let the
        queue shut down after them (see the shutdown guide): a signal
        handler that shuts the queue down while its senders go on makes
        their next ``send`` raise ``QueueClosed``."""
        return self._life.request()

    async def shut_down_queue(self) -> None:
        """Stop accepting events, drain, answer everything, tear down.

        ``send`` raises :class:`~event_collector.exceptions.QueueClosed` from the moment
        the shutdown starts, on the loop's next turn after the first call
        (the shutdown runs as a task of its own). Consumers get
        ``consumer_shutdown_timeout`` seconds to handle what is queued; then
        the handlers still running are cancelled and every event not handled
        is answered with ``Error(EventCancelled)``. Collectors are torn down
        in reverse order and :class:`ShutDownQueue` is dispatched.

        Safe to call several times and concurrently: every caller waits for
        the same shutdown. Called from the queue's own code (a handler, a
        collector's ``setup`` or ``teardown``, a handler of a message the
        queue dispatches, or a task any of these started), it starts the
        shutdown and returns at once: waiting there would wait on itself.
        Cancelling the caller (or ``asyncio.timeout`` around it) propagates
        at once and turns the rest of the shutdown into an immediate one: the
        drain is cut short and the remaining steps still run."""
        await self._life.shut_down()

    async def __aenter__(self) -> CollectorQueue:
        """Start the queue (:meth:`init_queue`) and return it."""
        await self.init_queue()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Shut the queue down (see :meth:`shut_down_queue`). If the body was
        cancelled (a timeout expired in it, say), the shutdown is an
        immediate one: queued events are not drained but answered with
        ``Error(EventCancelled)``, running handlers are cancelled, and the
        cancellation propagates once the queue is closed."""
        if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            self._life.hurry()
        await self.shut_down_queue()

    def __repr__(self) -> str:
        return (
            f"<CollectorQueue {self._life.state} consumers={self._pool.size} "
            f"qsize={self._transport.backlog()}>"
        )
