"""Prometheus metrics for collector queues.

One call exports a queue's metrics through ``prometheus_client``::

    from event_collector.prometheus import instrument

    async with CollectorQueue(collectors) as queue:
        exporter = instrument(queue, name="webhooks")
        ...
        exporter.unregister()  # when the queue goes away

The gauges are read from :meth:`CollectorQueue.get_metrics
<event_collector.queue.CollectorQueue.get_metrics>` at scrape time; the histograms
and counters are fed by an event observer, once per answered event, and the
per-collector ones by a probe around each collector call. Every sample has a
``queue`` label, so several queues can share one registry.

A fleet of workers on a Redis stream is exported by any process that can
reach the Redis, a worker or not (the stream's backlog, pending entries,
lag, dead letters and the workers it needs, read at each scrape)::

    from event_collector.prometheus import instrument_fleet

    exporter = instrument_fleet("redis://127.0.0.1:6379/0", stream="orders")

Its samples have a ``stream`` label.

Needs the ``prometheus`` extra: ``pip install -e ".[prometheus]"`` from a checkout
(and the ``redis`` extra for :func:`instrument_fleet`).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

try:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "event_collector.prometheus needs prometheus_client; install it with "
        'the prometheus extra: pip install -e ".[prometheus]" (from a checkout)'
    ) from exc

from ._flow_pool import held_by_reason
from ._instrument import install
from ._prometheus_collectors import CollectorCalls, collector_families
from ._prometheus_collectors import Histogram as _Histogram
from ._prometheus_fleet import FleetCollector, instrument_fleet
from ._prometheus_registry import METRIC_PREFIX as _PREFIX
from ._prometheus_registry import Kind, RegistryExporter, register

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from .publisher import CollectorEvent
    from .queue import CollectorQueue, Metrics

__all__ = [
    "DEFAULT_BUCKETS",
    "METRIC_PREFIX",
    "FleetCollector",
    "QueueCollector",
    "instrument",
    "instrument_fleet",
]

METRIC_PREFIX = _PREFIX
"""The prefix of every metric name."""

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    float("inf"),
)
"""Upper bounds (seconds) of the service and wait time histogram buckets."""

# (metric name without prefix, help text, Metrics field)
_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("queue_size", "Events waiting in the queue.", "qsize"),
    ("busy_consumers", "Consumers running a handler.", "busy"),
    ("consumers", "Consumers in the pool.", "consumers"),
    ("load", "Queued and busy events per consumer.", "load"),
    ("average_load", "Time-weighted mean of the load.", "avg_load"),
    ("arrival_rate", "Events accepted per second (recent window).", "arrival_rate"),
    (
        "departure_rate",
        "Events answered per second (recent window).",
        "departure_rate",
    ),
    (
        "mean_service_time_seconds",
        "Mean handler time of the recent events, in seconds.",
        "service_time",
    ),
    (
        "mean_wait_time_seconds",
        "Mean time from send to answer of the recent events, in seconds.",
        "wait_time",
    ),
    (
        "work_in_progress",
        "Little's-law work in progress: arrival rate x service time.",
        "wip",
    ),
)
# (metric name without prefix, help text, Health field): read at each scrape.
_LAG_GAUGES: tuple[tuple[str, str, str], ...] = (
    (
        "loop_lag_seconds",
        "How late the event loop last woke the queue's monitor, in seconds.",
        "loop_lag",
    ),
    (
        "loop_lag_max_seconds",
        "Highest event-loop lag over the last 10 to 20 seconds, in seconds.",
        "loop_lag_max",
    ),
)
_HELD = "held_events"
_SERVICE = "service_time_seconds"
_WAIT = "wait_time_seconds"
_EVENTS = "events_processed"
_ERRORS = "errors"


def _check_buckets(buckets: Iterable[float]) -> tuple[float, ...]:
    bounds = tuple(float(b) for b in buckets)
    if not bounds or any(a >= b for a, b in itertools.pairwise(bounds)):
        raise ValueError(
            f"buckets must be a non-empty increasing sequence (got buckets={bounds!r})"
        )
    if bounds[-1] != float("inf"):
        bounds += (float("inf"),)
    return bounds


def _families() -> dict[str, Metric]:
    """Empty metric families, by name, in exposition order."""
    families: dict[str, Metric] = {}
    for name, text, _ in (*_GAUGES, *_LAG_GAUGES):
        families[name] = GaugeMetricFamily(METRIC_PREFIX + name, text, labels=["queue"])
    families[_HELD] = GaugeMetricFamily(
        METRIC_PREFIX + _HELD,
        "Events and calls flow control holds back, by reason.",
        labels=["queue", "reason"],
    )
    families[_SERVICE] = HistogramMetricFamily(
        METRIC_PREFIX + _SERVICE,
        "Handler time of each answered event, in seconds.",
        labels=["queue"],
    )
    families[_WAIT] = HistogramMetricFamily(
        METRIC_PREFIX + _WAIT,
        "Time from send to answer of each answered event, in seconds.",
        labels=["queue"],
    )
    families[_EVENTS] = CounterMetricFamily(
        METRIC_PREFIX + _EVENTS,
        "Events answered, by the consumers or by a shutdown cancelling them.",
        labels=["queue"],
    )
    families[_ERRORS] = CounterMetricFamily(
        METRIC_PREFIX + _ERRORS,
        "Error results, by the exception class name (kind).",
        labels=["queue", "kind"],
    )
    families.update(collector_families())
    return families


class QueueCollector:
    """The Prometheus metrics of one collector queue.

    Made by :func:`instrument`, which registers it and installs the probe
    that feeds its per-collector series. ``collect()`` yields this
    queue's metric families alone; in a registry, the queues that share it
    are exported together, one ``queue`` label value each.

    :param queue: the queue to export.
    :param name: the value of the ``queue`` label.
    :param buckets: histogram bucket upper bounds, in seconds.
    """

    __slots__ = (
        "_calls",
        "_errors",
        "_events",
        "_lock",
        "_registered",
        "_remove_probe",
        "_service",
        "_wait",
        "name",
        "queue",
    )

    def __init__(
        self,
        queue: CollectorQueue,
        name: str,
        *,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str (got name={name!r})")
        bounds = _check_buckets(buckets)
        self.queue: CollectorQueue = queue
        """The exported queue."""
        self.name: str = name
        """The ``queue`` label value."""
        self._lock = threading.Lock()
        self._service = _Histogram(bounds)
        self._wait = _Histogram(bounds)
        self._events = 0
        self._errors: dict[str, int] = {}
        self._registered: RegistryExporter | None = None
        # Per-collector series, fed once the probe is installed (instrument).
        keys = [c.key for c in queue.collectors]
        self._calls = CollectorCalls(keys, bounds, queue._clock)
        self._remove_probe: Callable[[], None] | None = None

    def observe(self, event: CollectorEvent[Any]) -> None:
        """Count an answered event: the queue calls it for each one."""
        service = event.service_time
        wait = event.wait_time
        errors = event._errors()
        with self._lock:
            self._events += 1
            if service is not None:
                self._service.observe(service)
            if wait is not None:
                self._wait.observe(wait)
            for error in errors:
                err = error.err
                kind = "str" if isinstance(err, str) else type(err).__name__
                self._errors[kind] = self._errors.get(kind, 0) + 1

    def add_samples(self, families: dict[str, Metric]) -> None:
        """Add this queue's samples to ``families`` (made by a registry's
        exporter); the gauges come from ``queue.get_metrics()`` and
        ``queue.health()`` now."""
        metrics: Metrics = self.queue.get_metrics()
        labels = [self.name]
        for name, _, field in _GAUGES:
            family = families[name]
            assert isinstance(family, GaugeMetricFamily)
            family.add_metric(labels, float(getattr(metrics, field)))
        health = self.queue.health()
        for name, _, field in _LAG_GAUGES:
            family = families[name]
            assert isinstance(family, GaugeMetricFamily)
            family.add_metric(labels, float(getattr(health, field)))
        held = families[_HELD]
        assert isinstance(held, GaugeMetricFamily)
        for reason, count in held_by_reason(self.queue._engine.pool).items():
            held.add_metric([self.name, reason], float(count))
        with self._lock:
            service = self._service.cumulative()
            wait = self._wait.cumulative()
            events = self._events
            errors = sorted(self._errors.items())
        for key, (buckets, total) in ((_SERVICE, service), (_WAIT, wait)):
            histogram = families[key]
            assert isinstance(histogram, HistogramMetricFamily)
            histogram.add_metric(labels, buckets, total)
        counter = families[_EVENTS]
        assert isinstance(counter, CounterMetricFamily)
        counter.add_metric(labels, events)
        error_counter = families[_ERRORS]
        assert isinstance(error_counter, CounterMetricFamily)
        for kind, count in errors:
            error_counter.add_metric([self.name, kind], count)
        self._calls.add_samples(self.name, families)

    def collect(self) -> Iterator[Metric]:
        """This queue's metric families."""
        families = _families()
        self.add_samples(families)
        yield from families.values()

    def describe(self) -> Iterator[Metric]:
        """The metric families, without samples (names for the registry)."""
        yield from _families().values()

    def unregister(self) -> None:
        """Stop observing the queue and its collectors' calls, and remove
        its series from the registry.

        Calling it again does nothing.
        """
        remove, self._remove_probe = self._remove_probe, None
        if remove is not None:
            remove()
        self.queue.remove_event_observer(self.observe)
        exporter, self._registered = self._registered, None
        if exporter is not None:
            exporter.remove(self)

    def __repr__(self) -> str:
        return f"<QueueCollector queue={self.name!r} events={self._events}>"


_QUEUES = Kind("queue", _families)


def instrument(
    queue: CollectorQueue,
    *,
    registry: CollectorRegistry | None = None,
    name: str = "default",
    buckets: Sequence[float] = DEFAULT_BUCKETS,
) -> QueueCollector:
    """Export ``queue``'s metrics to a Prometheus registry.

    Registers, with the label ``queue=name``:

    - gauges read from ``queue.get_metrics()`` at each scrape:
      ``event_collector_queue_size``, ``_busy_consumers``, ``_consumers``,
      ``_load``, ``_average_load``, ``_arrival_rate``, ``_departure_rate``
      (events/s), ``_mean_service_time_seconds``,
      ``_mean_wait_time_seconds``, ``_work_in_progress``;
    - gauges read from ``queue.health()`` at each scrape: the event-loop lag
      ``event_collector_loop_lag_seconds`` (how late the loop last woke the
      queue's monitor) and ``event_collector_loop_lag_max_seconds`` (the
      highest over the last 10 to 20 seconds, which a scrape every 15
      seconds does not miss);
    - the gauge ``event_collector_held_events`` (label ``reason``:
      ``ordering_key``, ``concurrency``, ``rate_limit``, ``retry``,
      ``batch``): what flow control holds back, which ``queue_size`` does
      not count;
    - histograms ``event_collector_service_time_seconds`` and
      ``event_collector_wait_time_seconds`` of every answered event;
    - counters ``event_collector_events_processed_total`` and
      ``event_collector_errors_total`` (label ``kind``: the exception class
      name of each ``Error`` result, ``str`` for a message);
    - per collector (label ``collector``: its key), the histogram
      ``event_collector_collector_handler_seconds`` of each call's time (one
      per batch for a batch collector), on the queue's clock, and the counter
      ``event_collector_collector_errors_total`` of the failed calls: those
      that raised (a timeout or a shutdown's cancellation included), returned
      an ``Error``, or, for a batch, answered any payload with one.

    The histograms and counters count from this call on.

    :param queue: the queue to export; it may be running or not yet started.
    :param registry: where to register; ``prometheus_client.REGISTRY`` by
        default.
    :param name: the ``queue`` label value, unique within the registry.
    :param buckets: histogram bucket upper bounds, in seconds.
    :raises ValueError: ``name`` is already used in ``registry``.
    :returns: the :class:`QueueCollector`; call its ``unregister()`` when the
        queue goes away.
    """
    collector = QueueCollector(queue, name, buckets=buckets)
    collector._registered = register(registry, _QUEUES, collector)
    queue.add_event_observer(collector.observe)
    collector._remove_probe = install(queue, collector._calls)
    return collector
