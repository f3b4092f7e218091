"""The figures of ``event-collector top http://...``: each queue's and
collector's, from two scrapes of a service's Prometheus endpoint
(:class:`ServiceWatch`), with the recent history of each.

Gauges are read as the last scrape has them; rates are counter increases
between the last two scrapes divided by the time between them, so the first
scrape has none.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, fields

from ._cli_common import display_url
from ._top_http import PREFIX, Samples, scrape
from ._top_spark import Series

__all__ = [
    "COLLECTOR_FIGURES",
    "QUEUE_FIGURES",
    "CollectorFigures",
    "QueueFigures",
    "ServiceFrame",
    "ServiceWatch",
]


@dataclass(frozen=True, slots=True)
class CollectorFigures:
    """One collector's figures between the last two scrapes (``None``
    before the second one, or when it was not called meanwhile)."""

    name: str
    calls_rate: float | None
    """Handler calls per second."""
    error_rate: float | None
    """Errors per second."""
    error_share: float | None
    """Errors per call, 0 to 1."""
    latency: float | None
    """Mean handler time of the calls, seconds."""


@dataclass(frozen=True, slots=True)
class QueueFigures:
    """One queue's figures: gauges as the last scrape read them (``None``
    when the endpoint has no such series), rates between the last two
    scrapes (``None`` on the first)."""

    name: str
    arrival_rate: float | None
    """Events accepted per second: the events answered, plus the growth of
    those queued or in a handler."""
    departure_rate: float | None
    """Events answered per second."""
    error_rate: float | None
    """Error results per second."""
    consumers: float | None
    busy: float | None
    queue_size: float | None
    load: float | None
    wip: float | None
    wait_time: float | None
    """The queue's mean time from send to answer of its recent events, s."""
    service_time: float | None
    """The queue's mean handler time of its recent events, s."""
    loop_lag: float | None
    """How late the queue's monitor woke, s (if the endpoint exports it)."""
    collectors: tuple[CollectorFigures, ...]


QUEUE_FIGURES = tuple(
    f.name for f in fields(QueueFigures) if f.name not in ("name", "collectors")
)
"""The fields of :class:`QueueFigures` that are figures."""

COLLECTOR_FIGURES = ("calls_rate", "error_rate", "error_share", "latency")
"""The fields of :class:`CollectorFigures` that are figures."""

# field: the gauge it reads, without the prefix
_GAUGES = {
    "consumers": "consumers",
    "busy": "busy_consumers",
    "queue_size": "queue_size",
    "load": "load",
    "wip": "work_in_progress",
    "wait_time": "mean_wait_time_seconds",
    "service_time": "mean_service_time_seconds",
    "loop_lag": "loop_lag_seconds",
}
_PROCESSED = PREFIX + "events_processed_total"
_ERRORS = PREFIX + "errors_total"
_HANDLER = PREFIX + "collector_handler_seconds"
_COLLECTOR_ERRORS = PREFIX + "collector_errors_total"


@dataclass(frozen=True, slots=True)
class ServiceFrame:
    """What one scrape shows."""

    url: str
    at: float
    """When it was taken, seconds on the watch's clock."""
    taken_at: float
    """When it was taken, seconds since the epoch."""
    elapsed: float | None
    """Seconds since the scrape before, ``None`` for the first."""
    queues: tuple[QueueFigures, ...]


def _per_second(amount: float, elapsed: float | None) -> float | None:
    return None if elapsed is None else max(amount, 0.0) / elapsed


class ServiceWatch:
    """Scrapes of one endpoint, each turned into a :class:`ServiceFrame`
    against the one before, and the recent history of every figure.

    :param url: the metrics endpoint.
    :param window: seconds of history per figure (the sparklines' span).
    :param width: blocks per sparkline.
    :param timeout: seconds to wait for the endpoint.
    :param clock: a monotonic clock, in seconds (rates and history).
    :param wall_clock: seconds since the epoch (the frame's time stamp).
    """

    __slots__ = (
        "_last",
        "clock",
        "history",
        "timeout",
        "url",
        "wall_clock",
        "width",
        "window",
    )

    def __init__(
        self,
        url: str,
        *,
        window: float,
        width: int,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        Series(window, width)  # checks both
        self.url = url
        self.timeout = timeout
        self.clock = clock
        self.wall_clock = wall_clock
        self.width = width
        self.window = window
        """Seconds of history per figure."""
        self.history: dict[tuple[str, ...], Series] = {}
        """Each figure's :class:`Series`, by ``(queue, field)`` or ``(queue,
        collector, field)``."""
        self._last: tuple[float, Samples] | None = None

    def poll(self) -> ServiceFrame:
        """Scrape the endpoint and take the result.

        :raises ScrapeError: see :func:`scrape`.
        """
        return self.take(scrape(self.url, timeout=self.timeout))

    def take(self, samples: Samples) -> ServiceFrame:
        """The frame of ``samples``, scraped now, against the scrape before;
        each figure is added to its history."""
        at = self.clock()
        elapsed: float | None = None
        before: Samples | None = None
        if self._last is not None:
            then, before = self._last
            if at > then:
                elapsed = at - then
            else:
                before = None  # no time passed: no rate to give
        queues = tuple(
            self._queue(samples, before, name, elapsed) for name in samples.queues()
        )
        self._last = (at, samples)
        for queue in queues:
            for field in QUEUE_FIGURES:
                self._record((queue.name, field), at, getattr(queue, field))
            for collector in queue.collectors:
                for field in COLLECTOR_FIGURES:
                    key = (queue.name, collector.name, field)
                    self._record(key, at, getattr(collector, field))
        return ServiceFrame(self.url, at, self.wall_clock(), elapsed, queues)

    def _record(self, key: tuple[str, ...], at: float, value: float | None) -> None:
        if value is None:
            return
        series = self.history.get(key)
        if series is None:
            series = self.history[key] = Series(self.window, self.width)
        series.add(at, value)

    def _queue(
        self,
        now: Samples,
        before: Samples | None,
        name: str,
        elapsed: float | None,
    ) -> QueueFigures:
        gauges = {
            field: now.value(PREFIX + gauge, queue=name)
            for field, gauge in _GAUGES.items()
        }
        departure = arrival = errors = None
        if before is not None and elapsed is not None:
            answered = now.increase(before, _PROCESSED, queue=name)
            departure = _per_second(answered, elapsed)
            errors = _per_second(now.increase(before, _ERRORS, queue=name), elapsed)

            def in_system(samples: Samples) -> float:
                return sum(
                    samples.value(PREFIX + gauge, queue=name) or 0.0
                    for gauge in ("queue_size", "busy_consumers")
                )

            # No counter of arrivals is exported: what arrived is what left
            # plus what the queue and the handlers gained meanwhile.
            arrival = _per_second(
                answered + in_system(now) - in_system(before), elapsed
            )
        names = now.label_values(
            _HANDLER + "_count", "collector", queue=name
        ) | now.label_values(_COLLECTOR_ERRORS, "collector", queue=name)
        collectors = tuple(
            self._collector(now, before, name, collector, elapsed)
            for collector in sorted(names)
        )
        return QueueFigures(
            name=name,
            arrival_rate=arrival,
            departure_rate=departure,
            error_rate=errors,
            collectors=collectors,
            **gauges,
        )

    @staticmethod
    def _collector(
        now: Samples,
        before: Samples | None,
        queue: str,
        name: str,
        elapsed: float | None,
    ) -> CollectorFigures:
        if before is None or elapsed is None:
            return CollectorFigures(name, None, None, None, None)
        labels = {"queue": queue, "collector": name}
        calls = now.increase(before, _HANDLER + "_count", **labels)
        spent = now.increase(before, _HANDLER + "_sum", **labels)
        errors = now.increase(before, _COLLECTOR_ERRORS, **labels)
        return CollectorFigures(
            name,
            calls_rate=_per_second(calls, elapsed),
            error_rate=_per_second(errors, elapsed),
            error_share=min(errors / calls, 1.0) if calls > 0 else None,
            latency=spent / calls if calls > 0 else None,
        )

    def __repr__(self) -> str:
        queues = 0 if self._last is None else len(self._last[1].queues())
        return f"<ServiceWatch {display_url(self.url)} queues={queues}>"
