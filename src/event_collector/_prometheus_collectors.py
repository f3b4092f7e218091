"""Handler time and failures of each collector of a queue, for
:mod:`event_collector.prometheus`: a probe (see ``_probes``) that times every
collector call and counts the failed ones, the two metric families it fills
at scrape time, and the bucket counts behind every histogram of the module."""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from ._probes import BatchCall, Call, Probe
from ._prometheus_registry import METRIC_PREFIX
from .data import Error

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from .collector import BatchCollector, Collector
    from .data import Payload

__all__ = [
    "HANDLER",
    "HANDLER_ERRORS",
    "CollectorCalls",
    "Histogram",
    "collector_families",
]

HANDLER = "collector_handler_seconds"
"""The per-collector histogram's name, without the prefix."""
HANDLER_ERRORS = "collector_errors"
"""The per-collector counter's name, without the prefix (and ``_total``)."""


def _le(bound: float) -> str:
    """A bucket bound as the exposition format writes it."""
    return "+Inf" if math.isinf(bound) else repr(bound)


class Histogram:
    """Bucket counts of one series; guarded by the owner's lock."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> tuple[list[tuple[str, float]], float]:
        buckets: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            running += count
            buckets.append((_le(bound), float(running)))
        return buckets, self.total


def collector_families() -> dict[str, Metric]:
    """The per-collector metric families, empty, by name without the prefix."""
    labels = ["queue", "collector"]
    return {
        HANDLER: HistogramMetricFamily(
            METRIC_PREFIX + HANDLER,
            "Time of each call of a collector (of each batch, for a batch "
            "collector), in seconds.",
            labels=labels,
        ),
        HANDLER_ERRORS: CounterMetricFamily(
            METRIC_PREFIX + HANDLER_ERRORS,
            "Failed calls of a collector: an exception raised (a timeout "
            "included) or an Error returned.",
            labels=labels,
        ),
    }


class _Series:
    """One collector's calls, their times and the failed ones."""

    __slots__ = ("calls", "errors", "handler")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.handler = Histogram(bounds)
        self.calls = 0
        self.errors = 0


def _batch_failed(values: object, count: int) -> bool:
    """Whether a batch call's answer fails any of its ``count`` payloads:
    not a list of one result each (the queue then answers every payload
    with an error), or with an ``Error`` among them."""
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        return True
    return len(values) != count or any(isinstance(v, Error) for v in values)


class CollectorCalls(Probe):
    """The probe behind one queue's per-collector metrics.

    A collector's two series are exported from its first call on, the
    error counter at zero until a call fails, so that a rate of errors is
    defined before the first one; a collector never called adds no series.
    The wrappers run in the event loop's thread and a scrape reads from
    another one: both take the lock.

    :param keys: the keys of the queue's collectors.
    :param bounds: histogram bucket upper bounds, in seconds, ending in
        ``inf``.
    :param clock: the monotonic clock that times the calls, in seconds.
    """

    __slots__ = ("_clock", "_lock", "_series")

    def __init__(
        self,
        keys: Iterable[str],
        bounds: tuple[float, ...],
        clock: Callable[[], float],
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._series = {key: _Series(bounds) for key in keys}

    def _record(self, series: _Series, seconds: float, failed: bool) -> None:
        with self._lock:
            series.handler.observe(seconds)
            series.calls += 1
            if failed:
                series.errors += 1

    def wrap(self, collector: Collector, call: Call) -> Call:
        series = self._series.get(collector.key)
        if series is None:  # not one of the queue's collectors
            return call
        clock, record = self._clock, self._record

        async def timed(payload: Payload[Any]) -> Any:
            start = clock()
            try:
                value = await call(payload)
            except BaseException:
                # Whatever ends the call without an answer fails it: the
                # handler's exception, its timeout, a shutdown cancelling it.
                record(series, clock() - start, True)
                raise
            record(series, clock() - start, isinstance(value, Error))
            return value

        return timed

    def wrap_batch(self, collector: BatchCollector, call: BatchCall) -> BatchCall:
        series = self._series.get(collector.key)
        if series is None:
            return call
        clock, record = self._clock, self._record

        async def timed(payloads: list[Payload[Any]]) -> Sequence[Any]:
            start = clock()
            try:
                values = await call(payloads)
            except BaseException:
                record(series, clock() - start, True)
                raise
            record(series, clock() - start, _batch_failed(values, len(payloads)))
            return values

        return timed

    def add_samples(self, queue: str, families: dict[str, Metric]) -> None:
        """Add each collector's series, labelled ``queue``, to ``families``
        (which :func:`collector_families` made)."""
        with self._lock:
            rows = [
                (key, series.handler.cumulative(), series.errors)
                for key, series in self._series.items()
                if series.calls
            ]
        handler = families[HANDLER]
        errors = families[HANDLER_ERRORS]
        assert isinstance(handler, HistogramMetricFamily)
        assert isinstance(errors, CounterMetricFamily)
        for key, (buckets, total), count in rows:
            handler.add_metric([queue, key], buckets, total)
            errors.add_metric([queue, key], count)

    def __repr__(self) -> str:
        return f"<CollectorCalls collectors={list(self._series)!r}>"
