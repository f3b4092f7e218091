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
import concurrent.futures
import contextvars
import dataclasses
import datetime
import inspect
import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from . import messagebus as bus
from ._compat import TypeAliasType
from ._config import check_bool, check_int, check_number
from ._eventqueue import EventQueue, LifoEventQueue, PriorityEventQueue
from ._monitor import Monitor
from ._outcome import propagates
from .autoscale import load_ratio
from .collector import Collector
from .consumers import ConsumerPool, current_owner
from .exceptions import ConfigError
from .log import Logger, get_logger, report_exception
from .metrics import LoadAverage, RateMeter, ServiceWindow
from .publisher import DEFAULT_PRIORITY, CollectorEvent, EventPublisher, QueueType
from .router import Router, SimpleRouter
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


@dataclasses.dataclass(frozen=True, slots=True)
class Metrics:
    """A snapshot of the queue's runtime measurements.

    Averages (``avg_load``, ``service_time``, ``wait_time``, the rates and
    ``wip``) read 0 during the first ``metrics_warmup_interval`` seconds.
    """

    timestamp: datetime.datetime
    """When the snapshot was taken (UTC)."""
    qsize: int
    """Events waiting in the queue."""
    busy: int
    """Consumers running a handler."""
    consumers: int
    """Consumers in the pool."""
    load: float
    """``(qsize + busy) / consumers``: 1 means every consumer has an event."""
    avg_load: float
    """Time-weighted mean of ``load`` over ``avg_load_interval`` seconds."""
    service_time: float
    """Mean seconds the handlers took, over the last
    ``event_service_data_window_size`` events."""
    wait_time: float
    """Mean seconds from send to answer, over the same events."""
    arrival_rate: float
    """Events accepted per second, over ``metrics_collector_window_size``."""
    departure_rate: float
    """Events answered per second, over the same window."""
    wip: float
    """Little's-law work in progress: ``arrival_rate x service_time``, the
    number of consumers the current load keeps busy."""
    event_count: int
    """Events answered by consumers since the queue started."""


@dataclasses.dataclass(frozen=True, slots=True)
class Load:
    """The queue's load at one moment."""

    qsize: int
    """Events waiting in the queue."""
    busy: int
    """Consumers running a handler."""
    consumers: int
    """Consumers in the pool."""
    ratio: float
    """``(qsize + busy) / consumers`` (0 without consumers)."""


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


CROSS_THREAD_METRICS_TIMEOUT: float = 1.0
"""Seconds ``get_metrics`` called from another thread waits for the event
loop to take the measurement before it reads without the loop."""

_QUEUE_CLASSES: dict[QueueType, type[EventQueue]] = {
    QueueType.FIFO: EventQueue,
    QueueType.LIFO: LifoEventQueue,
    QueueType.PRIORITY: PriorityEventQueue,
}

_inside: contextvars.ContextVar[tuple[CollectorQueue, ...]] = contextvars.ContextVar(
    "event_collector_inside", default=()
)
"""The queues whose start or shutdown the running code is part of."""

_CREATED, _STARTING, _RUNNING, _CLOSING, _CLOSED = (
    "created",
    "starting",
    "running",
    "closing",
    "closed",
)


def _check_collectors(collectors: Any) -> list[Collector]:
    if isinstance(collectors, str | bytes) or not isinstance(collectors, Sequence):
        raise ConfigError(
            "collectors must be a list of Collector instances or subclasses "
            f"(got collectors={collectors!r})"
        )
    if not collectors:
        raise ConfigError("collectors must not be empty (got collectors=[])")
    instances: list[Collector] = []
    for item in collectors:
        if isinstance(item, type) and issubclass(item, Collector):
            try:
                instances.append(item())
            except ConfigError:
                raise
            except Exception as exc:
                raise ConfigError(
                    f"collectors: the Collector subclass {item.__qualname__} must "
                    "be constructible with no arguments; pass an instance instead "
                    f"(calling {item.__qualname__}() raised {exc!r})"
                ) from exc
        elif isinstance(item, Collector):
            instances.append(item)
        else:
            raise ConfigError(
                "collectors must hold Collector instances or subclasses "
                f"(got {item!r} in collectors)"
            )
    keys = [c.key for c in instances]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ConfigError(
            f"collectors must have unique keys (got duplicate keys {duplicates} "
            "in collectors)"
        )
    return instances


class CollectorQueue:
    """A queue whose consumer pool grows and shrinks with the load.

    Use it as an async context manager, or call :meth:`init_queue` and
    :meth:`shut_down_queue`. Every argument is checked here;
    a wrong one raises :class:`~event_collector.ConfigError` naming it.

    :param maxsize: bound on queued events (0: unbounded). With a bound,
        ``send`` waits for room and ``send_nowait`` raises ``QueueFull``.
    :param clock: the monotonic clock (seconds) behind the metrics;
        ``time.monotonic`` by default.
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
    ) -> None:
        self.logging: bool = check_bool("logging", logging)
        """Whether the queue logs through the ``event_collector`` structlog
        logger; ``False`` writes nothing at all."""
        self._log: Logger = get_logger(self.logging, queue=f"{id(self):x}")

        collector_list = _check_collectors(collectors)
        self.collectors: list[Collector] = collector_list
        """The collectors, instantiated where a class was given."""
        if not (isinstance(router, type) and issubclass(router, Router)):
            raise ConfigError(
                "router must be a Router subclass (the class, not an instance) "
                f"(got router={router!r})"
            )
        if inspect.isabstract(router):
            missing = ", ".join(sorted(getattr(router, "__abstractmethods__", ())))
            raise ConfigError(
                "router must be a concrete Router subclass that implements "
                f"{missing} (got router={router!r}, which is abstract)"
            )
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
        self._queue: EventQueue = _QUEUE_CLASSES[queue_type](self.maxsize)
        self._observers: list[EventObserver] = []
        self._service_times = ServiceWindow(self.event_service_data_window_size)
        self._wait_times = ServiceWindow(self.event_service_data_window_size)
        try:
            self._route = router({c.key: c for c in collector_list})
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"router: {router.__qualname__}(collectors) raised {exc!r}"
            ) from exc
        self._pool = ConsumerPool(
            self._queue,
            self._route.handle_event,
            clock=clock,
            service_times=self._service_times,
            wait_times=self._wait_times,
            log=self._log,
            owner=self,
            observers=self._observers,
            direct=self._route._direct,
            checked=type(self._route).handle_event is SimpleRouter.handle_event,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._publisher = EventPublisher(
            self._queue,
            queue_type=queue_type,
            default_priority=self.default_priority,
            clock=clock,
            loop_ref=lambda: self._loop,
            join=self._pool.wait_idle,
        )
        self._state = _CREATED
        self._started_at = 0.0
        self._load_average: LoadAverage | None = None
        self._arrivals: RateMeter | None = None
        self._departures: RateMeter | None = None
        self._background: list[asyncio.Task[None]] = []
        self._shutdown_task: asyncio.Task[None] | None = None
        self._hurry: asyncio.Event | None = None
        self._init_done = asyncio.Event()

    # -- public queries ------------------------------------------------------

    def get_publisher(self) -> EventPublisher:
        """The publisher to ``send`` events with."""
        return self._publisher

    def get_message_bus(self) -> bus.MessageBus:
        """The bus on which the queue announces ``InitializedQueue``,
        ``ShutDownQueue`` and ``ReportedMetrics``."""
        return self._bus

    def consumer_count(self) -> int:
        """Consumers in the pool now."""
        return self._pool.size

    def current_load(self) -> Load:
        """The load now: queued and busy events per consumer."""
        qsize = self._queue.qsize()
        busy = self._pool.busy
        consumers = self._pool.size
        return Load(qsize, busy, consumers, load_ratio(qsize, busy, consumers))

    @property
    def state(self) -> str:
        """``created``, ``starting``, ``running``, ``closing`` or ``closed``.

        A queue whose event loop ended without a shutdown reads ``closed``.
        """
        if (
            self._state == _RUNNING
            and self._loop is not None
            and self._loop.is_closed()
        ):
            self._orphan()
        return self._state

    @property
    def is_running(self) -> bool:
        """Whether the queue accepts events."""
        return self.state == _RUNNING

    def get_metrics(self) -> Metrics:
        """Measure the queue now and return a :class:`Metrics` snapshot.

        Safe from any thread (a Prometheus exporter's, say): called outside
        the queue's event loop, the measurement runs on the loop, so it never
        races the monitor; if the loop does not answer within
        ``CROSS_THREAD_METRICS_TIMEOUT`` seconds (it is blocked), the
        snapshot is read from here without touching the queue's state.
        """
        loop = self._loop
        if (
            loop is not None
            and self._loop_thread != threading.get_ident()
            and loop.is_running()
        ):
            future: concurrent.futures.Future[Metrics] = concurrent.futures.Future()

            def measure() -> None:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(self._measure(update=True))
                    except BaseException as exc:
                        future.set_exception(exc)

            try:
                loop.call_soon_threadsafe(measure)
                return future.result(timeout=CROSS_THREAD_METRICS_TIMEOUT)
            except (RuntimeError, concurrent.futures.TimeoutError):
                future.cancel()  # the loop closed or is blocked
            return self._measure(update=False)
        return self._measure(update=True)

    def _measure(self, *, update: bool) -> Metrics:
        now = self._clock()
        load = self.current_load()
        avg_load = service_time = wait_time = arrival = departure = 0.0
        if self._warm(now):
            avg_load = self._average_load(now, update)
            service_time = self._service_times.mean()
            wait_time = self._wait_times.mean()
            arrival, departure = self._rates(now)
        return Metrics(
            timestamp=datetime.datetime.now(datetime.UTC),
            qsize=load.qsize,
            busy=load.busy,
            consumers=load.consumers,
            load=load.ratio,
            avg_load=avg_load,
            service_time=service_time,
            wait_time=wait_time,
            arrival_rate=arrival,
            departure_rate=departure,
            wip=arrival * service_time,
            event_count=self._pool.finished,
        )

    def add_event_observer(self, observer: EventObserver) -> None:
        """Call ``observer(event)`` each time a consumer answers an event
        (for histograms, error counters...). It runs on the hot path: keep it
        quick. Its exceptions are logged."""
        self._observers.append(observer)

    def remove_event_observer(self, observer: EventObserver) -> None:
        """Stop calling ``observer``; nothing happens if it is not there."""
        if observer in self._observers:
            self._observers.remove(observer)

    # -- measurements --------------------------------------------------------

    def _warm(self, now: float) -> bool:
        return self._state != _CREATED and (
            now - self._started_at >= self.metrics_warmup_interval
        )

    def _average_load(self, now: float, update: bool = True) -> float:
        average = self._load_average
        if average is None:
            return 0.0
        if update:
            # The monitor stops sampling while the queue idles: bring the
            # average up to now with the load as it is.
            average.add(self.current_load().ratio, now)
        return average.mean(now)

    def _arrival_rate(self, now: float) -> float:
        arrivals = self._arrivals
        if arrivals is None:
            return 0.0
        arrivals.count = self._queue.put_count
        return arrivals.rate(now)

    def _rates(self, now: float) -> tuple[float, float]:
        departures = self._departures
        if departures is None:
            return 0.0, 0.0
        departures.count = self._pool.finished
        return self._arrival_rate(now), departures.rate(now)

    def _wip(self, now: float) -> float:
        if not self._warm(now):
            return 0.0
        return self._arrival_rate(now) * self._service_times.mean()

    # -- life cycle ----------------------------------------------------------

    async def init_queue(self) -> None:
        """Set up the collectors (in order), start the consumers and the
        monitor, then dispatch :class:`InitializedQueue`.

        If a collector's ``setup`` raises, the collectors already set up are
        torn down, nothing is left running and the exception propagates. If
        the start is cancelled (``asyncio.timeout`` around it, say) while an
        ``InitializedQueue`` handler runs, the queue shuts down at once, as
        for a cancelled :meth:`shut_down_queue`, before the cancellation
        propagates: nothing is left running and every event is answered.
        """
        if self._state != _CREATED:
            raise RuntimeError(
                f"init_queue() needs a new CollectorQueue; this one is {self._state}"
            )
        self._state = _STARTING
        # The start's own code (setups, InitializedQueue handlers) and the
        # tasks it starts must not wait on a shutdown it would hold up.
        token = _inside.set((*_inside.get(), self))
        try:
            await self._start()
        finally:
            _inside.reset(token)

    async def _start(self) -> None:
        ready: list[Collector] = []
        try:
            for collector in self.collectors:
                await collector.setup()
                ready.append(collector)
        except BaseException:
            await self._teardown(ready)
            self._close_unstarted("the collector queue failed to start")
            raise

        loop = self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._started_at = self._clock()
        self._load_average = LoadAverage(self.avg_load_interval, clock=self._clock)
        self._arrivals = RateMeter(
            self.metrics_collector_window_size, clock=self._clock
        )
        self._departures = RateMeter(
            self.metrics_collector_window_size, clock=self._clock
        )
        monitor = Monitor(
            self._queue,
            self._pool,
            clock=self._clock,
            load_average=self._load_average,
            arrivals=self._arrivals,
            departures=self._departures,
            wip=self._wip,
            min_consumers=self.min_consumers,
            max_consumers=self.max_consumers,
            autoscale=self.autoscale,
            interval=self.monitor_interval,
            wip_margin=self.wip_margin,
            log=self._log,
        )
        self._hurry = asyncio.Event()
        self._queue.open()
        self._pool.grow(
            self.min_consumers if self.autoscale else self.max_consumers, eager=False
        )
        self._background.append(
            loop.create_task(monitor.run(), name="event-collector-monitor")
        )
        if self.report_interval > 0:
            self._background.append(
                loop.create_task(self._reporter(), name="event-collector-reporter")
            )
        for task in self._background:
            task.add_done_callback(self._background_done)
        self._state = _RUNNING
        self._init_done.set()
        self._log.info(
            "collector queue started",
            collectors=[c.key for c in self.collectors],
            consumers=self._pool.size,
            queue_type=self.queue_type.name,
        )
        try:
            await self._bus.dispatch(InitializedQueue(self))
        except BaseException:
            # Only a cancellation (or KeyboardInterrupt, SystemExit) gets out
            # of a dispatch: shut down at once rather than leave the queue
            # running for a caller that never got it.
            self._hurry.set()
            await self._await_shutdown(self.request_shutdown())
            raise

    def request_shutdown(self) -> asyncio.Task[None]:
        """Start shutting down without waiting; return the shutdown task.

        For callbacks that cannot await, such as a signal handler installed
        with ``loop.add_signal_handler``. Calling it again returns the same
        task.
        """
        if self._state == _CREATED:
            self._close_unstarted()
        task = self._shutdown_task
        if task is None:
            loop = self._loop or asyncio.get_running_loop()
            task = self._shutdown_task = loop.create_task(
                self._shut_down(), name="event-collector-shutdown"
            )
            task.add_done_callback(self._background_done)
        return task

    async def shut_down_queue(self) -> None:
        """Stop accepting events, drain, answer everything, tear down.

        ``send`` raises :class:`~event_collector.QueueClosed` from the moment
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
        drain is cut short and the remaining steps still run.
        """
        if self._state == _CREATED:
            self._close_unstarted()
            return
        if self._state == _CLOSED and self._shutdown_task is None:
            return
        task = self.request_shutdown()
        if current_owner.get() is self or self in _inside.get():
            return
        await self._await_shutdown(task)

    async def _await_shutdown(self, task: asyncio.Task[None]) -> None:
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done() and self._hurry is not None:
                self._hurry.set()
            raise

    def _close_unstarted(
        self, reason: str = "the collector queue was shut down before it started"
    ) -> None:
        self._state = _CLOSED
        self._queue.close(reason)
        self._init_done.set()

    async def _shut_down(self) -> None:
        # This task's own context: what it runs (teardowns, ShutDownQueue
        # handlers, and the shutdowns of other queues they ask for) must not
        # wait on it.
        _inside.set((*_inside.get(), self))
        if self._state == _STARTING:  # init_queue is still setting up
            await self._init_done.wait()
        if self._state != _RUNNING:
            return
        self._state = _CLOSING
        self._queue.close("the collector queue is shut down")
        self._log.info(
            "collector queue shutting down",
            qsize=self._queue.qsize(),
            busy=self._pool.busy,
        )
        leftovers: list[CollectorEvent[Any]] = []
        try:
            try:
                await self._drain()
            finally:
                for task in self._background:
                    task.cancel()
                await asyncio.gather(*self._background, return_exceptions=True)
                await self._pool.stop()
        finally:
            # Whatever happened above, every event is answered and the
            # collectors are torn down.
            leftovers = self._queue.drain()
            self._pool.answer_unhandled(
                leftovers, "the queue shut down before the event was handled"
            )
            try:
                await self._teardown(self.collectors)
            finally:
                self._state = _CLOSED
        self._log.info(
            "collector queue shut down",
            events=self._pool.finished,
            cancelled=self._pool.cancelled + len(leftovers),
        )
        await self._bus.dispatch(ShutDownQueue(self))

    async def _drain(self) -> None:
        assert self._hurry is not None
        if self._pool.is_idle() or self._hurry.is_set():
            return
        timeout = self.consumer_shutdown_timeout
        idle = asyncio.ensure_future(self._pool.wait_idle())
        hurry = asyncio.ensure_future(self._hurry.wait())
        try:
            await asyncio.wait(
                (idle, hurry),
                timeout=timeout if timeout > 0 else None,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            idle.cancel()
            hurry.cancel()
            await asyncio.gather(idle, hurry, return_exceptions=True)
        if not self._pool.is_idle():
            self._log.warning(
                "shutdown cancels unfinished events",
                qsize=self._queue.qsize(),
                busy=self._pool.busy,
                timeout=timeout,
            )

    async def _teardown(self, collectors: Sequence[Collector]) -> None:
        """Tear ``collectors`` down in reverse order; a teardown's failure,
        whatever it raises, is logged and the next one still runs (only
        KeyboardInterrupt, SystemExit and this task's own cancellation
        propagate, after the rest are torn down)."""
        stop: BaseException | None = None
        for collector in reversed(collectors):
            try:
                await collector.teardown()
            except BaseException as exc:
                if propagates(exc):
                    stop = stop or exc
                    continue
                report_exception(
                    self._log, "collector teardown failed", exc, collector=collector.key
                )
        if stop is not None:
            raise stop

    def _background_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            if self._state == _RUNNING and task is not self._shutdown_task:
                # Cancelled by someone else than the shutdown: the loop is
                # ending (asyncio.run cancels every task left).
                self._orphan()
            return
        if (exc := task.exception()) is not None:
            report_exception(
                self._log, "background task failed", exc, task=task.get_name()
            )

    def _orphan(self) -> None:
        """Close a queue whose event loop ended (or is ending) without a
        shutdown: refuse every send, answer what is queued."""
        reason = "the collector queue's event loop ended before it was shut down"
        self._state = _CLOSED
        self._queue.close(reason)
        leftovers = self._queue.drain()
        self._pool.answer_unhandled(leftovers, reason)
        self._log.warning(
            "collector queue abandoned without a shutdown; its collectors are "
            "not torn down",
            cancelled=len(leftovers),
        )

    async def __aenter__(self) -> CollectorQueue:
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
        if (
            exc_type is not None
            and issubclass(exc_type, asyncio.CancelledError)
            and self._hurry is not None
        ):
            self._hurry.set()
        await self.shut_down_queue()

    # -- background tasks ------------------------------------------------------

    async def _reporter(self) -> None:
        """Log the metrics and dispatch :class:`ReportedMetrics` every
        ``report_interval`` seconds."""
        while True:
            await asyncio.sleep(self.report_interval)
            try:
                metrics = self.get_metrics()
            except Exception as exc:
                report_exception(self._log, "metrics report failed", exc)
                continue
            self._log.info("collector queue metrics", **_metrics_fields(metrics))
            await self._bus.dispatch(ReportedMetrics(metrics))

    def __repr__(self) -> str:
        return (
            f"<CollectorQueue {self._state} consumers={self._pool.size} "
            f"qsize={self._queue.qsize()}>"
        )


def metrics_json_fields(metrics: Metrics) -> dict[str, Any]:
    """``metrics`` as a JSON-ready mapping: the timestamp in ISO 8601, and
    ``None`` for a figure that is not finite."""
    fields = dataclasses.asdict(metrics)
    fields["timestamp"] = metrics.timestamp.isoformat()
    for name, value in fields.items():
        if isinstance(value, float) and not math.isfinite(value):
            fields[name] = None
    return fields


def _metrics_fields(metrics: Metrics) -> dict[str, Any]:
    """The fields of a metrics log line (the timestamp renamed, last, so
    that it does not clash with the log record's own)."""
    fields = metrics_json_fields(metrics)
    fields["metrics_timestamp"] = fields.pop("timestamp")
    return fields
