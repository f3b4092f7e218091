"""The engine behind a collector queue: the parts wired together.

:class:`~event_collector.queue.CollectorQueue` checks its arguments, keeps
them as documented attributes and answers the public calls; this module
builds what does the work from those settings, in one place: the transport
and its inbox, the router, the measurement, the consumer pool, the
publisher, the monitor and reporter tasks, and the life cycle that starts
and stops them. The path of one event: the publisher puts it into the
transport; a consumer takes it from the inbox, routes it and settles its
answer through the pool (observers, metrics, the transport's
acknowledgement).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from ._autoscale import load_ratio
from ._flow_pool import make_pool
from ._lifecycle import Lifecycle
from ._log import Logger, report_exception
from ._measure import Measurement, metrics_json_fields
from ._models import Load, Metrics, QueueType
from ._monitor import Monitor
from ._outcome import propagates
from .collector import Collector
from .flow import DeadLettered
from .publisher import EventPublisher
from .router import Router, SimpleRouter, _build_router
from .transport import MemoryTransport, Transport
from .types import EventObserver

__all__ = ["Engine", "Settings"]


class Settings(Protocol):
    """The checked settings an engine is built from (a ``CollectorQueue``
    has them all as attributes)."""

    @property
    def collectors(self) -> list[Collector]: ...
    @property
    def router(self) -> type[Router]: ...
    @property
    def autoscale(self) -> bool: ...
    @property
    def min_consumers(self) -> int: ...
    @property
    def max_consumers(self) -> int: ...
    @property
    def wip_margin(self) -> float: ...
    @property
    def monitor_interval(self) -> float: ...
    @property
    def report_interval(self) -> float: ...
    @property
    def avg_load_interval(self) -> float: ...
    @property
    def metrics_collector_window_size(self) -> float: ...
    @property
    def event_service_data_window_size(self) -> int: ...
    @property
    def metrics_warmup_interval(self) -> float: ...
    @property
    def queue_type(self) -> QueueType: ...
    @property
    def default_priority(self) -> int: ...
    @property
    def consumer_shutdown_timeout(self) -> float: ...
    @property
    def maxsize(self) -> int: ...


class Engine:
    """The working parts of one queue.

    :param settings: the queue's checked settings.
    :param transport: what carries the events.
    :param clock: the queue's monotonic clock (seconds).
    :param log: the queue's logger.
    :param started: awaited once the queue runs (``InitializedQueue``).
    :param shut_down: awaited once it is closed (``ShutDownQueue``).
    :param reported: awaited with each metrics report (``ReportedMetrics``).
    :param dead_lettered: awaited with each ``DeadLettered`` message.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        transport: Transport,
        clock: Callable[[], float],
        log: Logger,
        started: Callable[[], Awaitable[None]],
        shut_down: Callable[[], Awaitable[None]],
        reported: Callable[[Metrics], Awaitable[None]],
        dead_lettered: Callable[[DeadLettered], Awaitable[None]] | None = None,
    ) -> None:
        self._settings = s = settings
        self._clock = clock
        self._log = log
        self._reported = reported
        self.observers: list[EventObserver] = []
        """The event observers, called by the pool's settle path."""
        self.transport = transport
        """What carries the events."""
        inbox = self.inbox = transport.attach(
            queue_type=s.queue_type, maxsize=s.maxsize
        )
        """Where the consumers take events from."""
        route = _build_router(s.router, s.collectors)
        self.measurement = Measurement(
            clock=clock,
            load=self.current_load,
            arrived=lambda: inbox.put_count,
            departed=lambda: self.pool.finished,
            events=s.event_service_data_window_size,
            avg_load_interval=s.avg_load_interval,
            rate_window=s.metrics_collector_window_size,
            warmup=s.metrics_warmup_interval,
        )
        """The five meters and the snapshot."""
        self.pool = make_pool(
            route,
            s.collectors,
            transport=transport,
            inbox=inbox,
            dead_lettered=dead_lettered,
            clock=clock,
            meters=self.measurement.meters,
            log=log,
            owner=None,
            observers=self.observers,
            direct=route._direct,
            checked=type(route).handle_event is SimpleRouter.handle_event,
            settled=transport.settle,
        )
        """The consumers."""
        self.loop_thread: int | None = None
        """The thread the queue was started in."""
        self.publisher = EventPublisher(
            transport,
            # Only the unbounded in-memory put can go unawaited: any other
            # transport accepts an event when its put returns.
            awaits_put=s.maxsize > 0 or not isinstance(transport, MemoryTransport),
            queue_type=s.queue_type,
            default_priority=s.default_priority,
            clock=clock,
            loop_ref=lambda: self.life.loop,
            # A broker's transport knows when what this process sent is
            # answered; in memory that is when the pool is idle.
            join=getattr(transport, "wait_answered", None) or self.pool.wait_idle,
            gate=self.pool.gate,
        )
        """The queue's publisher."""
        background: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = [
            ("event-collector-monitor", self._monitor)
        ]
        if s.report_interval > 0:
            background.append(("event-collector-reporter", self._reporter))
        self.life = Lifecycle(
            collectors=s.collectors,
            transport=transport,
            pool=self.pool,
            initial_consumers=self._initial_consumers(),
            background=background,
            started=started,
            shut_down=shut_down,
            on_start=self._on_start,
            drain_timeout=s.consumer_shutdown_timeout,
            log=log,
        )
        """The start and the shutdown."""
        self.pool.set_owner(self.life)
        # A transport that reports a worker's figures elsewhere (Redis: to
        # the fleet view) reads them here; the seam itself needs none.
        observe = getattr(transport, "observe_metrics", None)
        if callable(observe):
            observe(
                lambda: self.measurement.snapshot(update=False),
                limits=(self._initial_consumers(), s.max_consumers),
            )

    def _initial_consumers(self) -> int:
        s = self._settings
        return s.min_consumers if s.autoscale else s.max_consumers

    def current_load(self) -> Load:
        """The load now: queued and busy events per consumer."""
        qsize = self.transport.backlog()
        busy = self.pool.busy
        consumers = self.pool.size
        return Load(qsize, busy, consumers, load_ratio(qsize, busy, consumers))

    def _on_start(self) -> None:
        self.loop_thread = threading.get_ident()
        self.measurement.start()
        s = self._settings
        self._log.info(
            "collector queue started",
            collectors=[c.key for c in s.collectors],
            consumers=self._initial_consumers(),
            queue_type=s.queue_type.name,
        )

    def _monitor(self) -> Coroutine[Any, Any, None]:
        s = self._settings
        monitor = Monitor(
            self.inbox,
            self.pool,
            backlog=self.transport.backlog,
            clock=self._clock,
            measurement=self.measurement,
            min_consumers=s.min_consumers,
            max_consumers=s.max_consumers,
            autoscale=s.autoscale,
            interval=s.monitor_interval,
            wip_margin=s.wip_margin,
            log=self._log,
        )
        return monitor.run()

    async def _reporter(self) -> None:
        """Log the metrics and announce them every ``report_interval``
        seconds; a failing report is logged and the next one still comes."""
        interval = self._settings.report_interval
        while True:
            await asyncio.sleep(interval)
            try:
                metrics = self.measurement.snapshot(update=True)
            except BaseException as exc:
                if propagates(exc):
                    raise
                report_exception(self._log, "metrics report failed", exc)
                continue
            self._log.info("collector queue metrics", **_log_fields(metrics))
            await self._reported(metrics)


def _log_fields(metrics: Metrics) -> dict[str, Any]:
    """The fields of a metrics log line (the timestamp renamed, last, so
    that it does not clash with the log record's own)."""
    fields = metrics_json_fields(metrics)
    fields["metrics_timestamp"] = fields.pop("timestamp")
    return fields
