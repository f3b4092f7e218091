"""The collector queue's measurement: its five meters and the
:class:`~event_collector.queue.Metrics` snapshot made from them.

The consumers feed the service and wait time windows on every event; the
monitor feeds the load average and the two rate meters at every look; a
snapshot reads them all. The clock is injected, so none of it needs sleeping
to test.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime
import math
import threading
from collections.abc import Callable
from typing import Any

from ._metrics import LoadAverage, RateMeter, ServiceWindow
from ._models import Load, Metrics

__all__ = ["Measurement", "Meters", "metrics_json_fields"]


@dataclasses.dataclass(slots=True)
class Meters:
    """The queue's five meters, passed around as one."""

    service_times: ServiceWindow
    """Seconds each handled event's handlers took (the last N events)."""
    wait_times: ServiceWindow
    """Seconds from send to answer of the same events."""
    load_average: LoadAverage
    """The load over ``avg_load_interval`` seconds."""
    arrivals: RateMeter
    """Events accepted, over ``metrics_collector_window_size`` seconds."""
    departures: RateMeter
    """Events answered by consumers, over the same window."""


class Measurement:
    """Takes the queue's measurements.

    :param clock: the queue's monotonic clock (seconds).
    :param load: the load now (queued, busy, consumers).
    :param arrived: events accepted so far.
    :param departed: events answered by consumers so far.
    :param events: events behind the service and wait time means.
    :param avg_load_interval: seconds behind the load average.
    :param rate_window: seconds behind the rates.
    :param warmup: seconds after :meth:`start` during which averages read 0.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        load: Callable[[], Load],
        arrived: Callable[[], int],
        departed: Callable[[], int],
        events: int,
        avg_load_interval: float,
        rate_window: float,
        warmup: float,
    ) -> None:
        self._clock = clock
        self._load = load
        self._arrived = arrived
        self._departed = departed
        self._warmup = warmup
        self._started_at: float | None = None
        self.meters = Meters(
            service_times=ServiceWindow(events),
            wait_times=ServiceWindow(events),
            load_average=LoadAverage(avg_load_interval, clock=clock),
            arrivals=RateMeter(rate_window, clock=clock),
            departures=RateMeter(rate_window, clock=clock),
        )
        """The meters, fed by the consumers and the monitor."""

    def start(self) -> None:
        """Start the clock of the warm-up, and the windows, now."""
        now = self._clock()
        self._started_at = now
        meters = self.meters
        meters.load_average = LoadAverage(meters.load_average.window, clock=self._clock)
        meters.arrivals.reset(now)
        meters.departures.reset(now)

    def warm(self, now: float) -> bool:
        """Whether the warm-up is over (averages are reported)."""
        started = self._started_at
        return started is not None and now - started >= self._warmup

    def sample(self, now: float, load: float) -> None:
        """Feed the load average and the rate meters (the monitor's look)."""
        meters = self.meters
        meters.load_average.add(load, now)
        meters.arrivals.count = self._arrived()
        meters.arrivals.sample(now)
        meters.departures.count = self._departed()
        meters.departures.sample(now)

    def arrival_rate(self, now: float) -> float:
        """Events accepted per second, over the rate window."""
        arrivals = self.meters.arrivals
        arrivals.count = self._arrived()
        return arrivals.rate(now)

    def wip(self, now: float) -> float:
        """Little's-law work in progress: arrival rate x mean service time
        (0 during the warm-up)."""
        if not self.warm(now):
            return 0.0
        return self.arrival_rate(now) * self.meters.service_times.mean()

    def snapshot(self, *, update: bool) -> Metrics:
        """The metrics now. With ``update``, the load average is first brought
        up to now with the current load (the monitor stops sampling while
        the queue idles); without, nothing is written (a read from another
        thread)."""
        now = self._clock()
        load = self._load()
        meters = self.meters
        avg_load = service_time = wait_time = arrival = departure = 0.0
        if self.warm(now):
            if update:
                meters.load_average.add(load.ratio, now)
            avg_load = meters.load_average.mean(now)
            service_time = meters.service_times.mean()
            wait_time = meters.wait_times.mean()
            arrival = self.arrival_rate(now)
            meters.departures.count = self._departed()
            departure = meters.departures.rate(now)
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
            event_count=self._departed(),
        )

    def snapshot_from_any_thread(
        self,
        loop: asyncio.AbstractEventLoop | None,
        loop_thread: int | None,
        timeout: float,
    ) -> Metrics:
        """The metrics now, from any thread: outside ``loop``'s thread the
        snapshot is taken on the loop, so it never races the monitor; if the
        loop does not answer within ``timeout`` seconds (it is blocked), it
        is read from here without writing anything."""
        snapshot = self.snapshot
        if (
            loop is None
            or loop_thread == threading.get_ident()
            or not (loop.is_running())
        ):
            return snapshot(update=True)
        future: concurrent.futures.Future[Metrics] = concurrent.futures.Future()

        def measure() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(snapshot(update=True))
                except BaseException as exc:
                    future.set_exception(exc)

        try:
            loop.call_soon_threadsafe(measure)
            return future.result(timeout=timeout)
        except (RuntimeError, concurrent.futures.TimeoutError):
            future.cancel()  # the loop closed or is blocked
        return snapshot(update=False)


def metrics_json_fields(metrics: Metrics) -> dict[str, Any]:
    """``metrics`` as a JSON-ready mapping: the timestamp in ISO 8601, and
    ``None`` for a figure that is not finite."""
    fields = dataclasses.asdict(metrics)
    fields["timestamp"] = metrics.timestamp.isoformat()
    for name, value in fields.items():
        if isinstance(value, float) and not math.isfinite(value):
            fields[name] = None
    return fields
