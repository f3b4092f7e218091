"""The demo: a real collector queue under a synthetic load, measured.

A load profile gives the arrival rate over the run (:data:`PROFILES`,
:func:`profile_rate`), :func:`arrival_times` draws the send times of a Poisson
process that follows it, and :func:`run_demo` sends events at those times to a
:class:`~event_collector.queue.CollectorQueue` whose handler sleeps for a
configured latency, sampling the queue's metrics as it goes.

This is what ``event-collector demo`` runs (:mod:`event_collector.cli`, which
re-exports these names); it needs none of the ``cli`` extra's packages.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import math
import random
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ._demo_flow import FLOW_PROFILE, FlowLoad, FlowStats
from ._measure import metrics_json_fields
from .collector import Collector
from .data import Context, Error, Payload
from .exceptions import EventCancelled
from .queue import (
    EVENT_SERVICE_DATA_WINDOW_SIZE,
    MIN_METRICS_COLLECTOR_WINDOW_SIZE,
    CollectorQueue,
    Metrics,
)

if TYPE_CHECKING:
    from .publisher import CollectorEvent

__all__ = [
    "DEMO_AVG_LOAD_INTERVAL",
    "DEMO_EVENT_WINDOW",
    "DEMO_METRICS_WARMUP_INTERVAL",
    "DEMO_METRICS_WINDOW",
    "PROFILES",
    "DemoConfig",
    "DemoReport",
    "FlowStats",
    "Sample",
    "SimulatedFailure",
    "arrival_times",
    "profile_rate",
    "run_demo",
]

DEMO_METRICS_WARMUP_INTERVAL = 1.0
"""``metrics_warmup_interval`` of the demo queue (seconds): short, so that a
20 s run shows rates almost from the start."""

DEMO_METRICS_WINDOW = MIN_METRICS_COLLECTOR_WINDOW_SIZE
"""``metrics_collector_window_size`` of the demo queue (seconds), the
smallest the queue allows: the rates follow a changing load closely."""

DEMO_AVG_LOAD_INTERVAL = 5.0
"""``avg_load_interval`` of the demo queue (seconds), so that the pool
shrinks within a short run once a burst is over."""

DEMO_EVENT_WINDOW = EVENT_SERVICE_DATA_WINDOW_SIZE
"""``event_service_data_window_size`` of the demo queue: the number of most
recently answered events behind the mean service time, wait time and queue
delay of each :class:`Sample`."""


# -- load profiles -----------------------------------------------------------
#
# Each profile maps the fraction of the run elapsed (0 to 1) to a fraction of
# the peak rate (0 to 1). They are pure functions: the same time always gives
# the same rate.


def _steady(x: float) -> float:
    return 1.0


def _burst(x: float) -> float:
    # A quiet baseline with two bursts at the peak rate.
    return 1.0 if 0.2 <= x < 0.35 or 0.6 <= x < 0.75 else 0.1


def _ramp(x: float) -> float:
    return 0.1 + 0.9 * x


def _wave(x: float) -> float:
    # Two full periods between 10 % and 100 %, starting low.
    return 0.55 - 0.45 * math.cos(4.0 * math.pi * x)


PROFILES: dict[str, Callable[[float], float]] = {
    "steady": _steady,
    "burst": _burst,
    "ramp": _ramp,
    "wave": _wave,
    FLOW_PROFILE: _burst,
}
"""Load profiles by name: each maps the elapsed fraction of the run (0 to 1)
to the fraction of the peak rate offered at that moment (``flow``: the
``burst`` load on ordering keys and a rate-limited collector)."""


def profile_rate(
    profile: str, elapsed: float, *, rate: float, duration: float
) -> float:
    """The arrival rate (events/s) a profile offers ``elapsed`` seconds into a
    run of ``duration`` seconds whose peak rate is ``rate`` events/s.

    Outside ``[0, duration]`` the rate is 0.

    :raises ValueError: unknown ``profile``, or ``duration`` not positive.
    """
    try:
        shape = PROFILES[profile]
    except KeyError:
        raise ValueError(
            f"profile must be one of {sorted(PROFILES)} (got profile={profile!r})"
        ) from None
    if not duration > 0:
        raise ValueError(f"duration must be > 0 seconds (got duration={duration!r})")
    if elapsed < 0.0 or elapsed > duration:
        return 0.0
    return rate * shape(elapsed / duration)


def arrival_times(
    profile: str, *, rate: float, duration: float, seed: int | None = None
) -> Iterator[float]:
    """Send times (seconds from the start of the run) of a Poisson process
    whose intensity follows ``profile``.

    Candidates are drawn at the peak ``rate`` and each is kept with
    probability ``profile_rate(t) / rate`` (thinning), so the arrivals follow
    the profile's instantaneous rate. The same ``seed`` gives the same times.
    """
    if not rate > 0:
        raise ValueError(f"rate must be > 0 events/s (got rate={rate!r})")
    profile_rate(profile, 0.0, rate=rate, duration=duration)  # check arguments
    rng = random.Random(seed)
    t = 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= duration:
            return
        if rng.random() * rate < profile_rate(profile, t, rate=rate, duration=duration):
            yield t


# -- the demo run ------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class DemoConfig:
    """What ``event-collector demo`` runs (see ``--help`` for each field)."""

    profile: str = "burst"
    rate: float = 300.0
    latency: float = 0.1
    spread: float = 0.05
    error_rate: float = 0.0
    min_consumers: int = 1
    max_consumers: int = 1000
    duration: float = 20.0
    interval: float = 0.5
    seed: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Sample:
    """One point of the metrics timeline."""

    t: float
    """Seconds since the load started."""
    offered_rate: float
    """The rate the profile asks for at ``t`` (events/s)."""
    sent: int
    """Events sent so far."""
    metrics: Metrics
    """The queue's metrics at ``t``."""
    queue_delay: float = 0.0
    """Mean seconds from send to handler start (the time spent queued) over
    the last :data:`DEMO_EVENT_WINDOW` answered events, the same events as
    ``metrics.wait_time`` and ``metrics.service_time``; 0 during the first
    :data:`DEMO_METRICS_WARMUP_INTERVAL` seconds, like the queue's own
    averages."""
    held: int | None = None
    """The ``flow`` profile's held-back events: sent, not answered, and
    neither queued nor running (waiting behind an earlier event of their
    ordering key, or for the rate limit); ``None`` for other profiles."""
    limited_rate: float | None = None
    """The ``flow`` profile's calls per second of the rate-limited
    collector since the previous sample; ``None`` for other profiles."""

    def as_dict(self) -> dict[str, Any]:
        """The sample as a flat JSON-ready mapping (with ``held`` and
        ``limited_rate`` for the ``flow`` profile)."""
        fields = metrics_json_fields(self.metrics)
        flow: dict[str, Any] = {}
        if self.held is not None:
            flow = {"held": self.held, "limited_rate": self.limited_rate}
        return {
            "t": round(self.t, 6),
            "offered_rate": self.offered_rate,
            "sent": self.sent,
            "queue_delay": self.queue_delay,
            **flow,
            **fields,
        }


@dataclasses.dataclass(slots=True)
class DemoReport:
    """What a demo run measured."""

    config: DemoConfig
    samples: list[Sample]
    """The metrics timeline, one sample per ``interval``."""
    sent: int
    """Events sent."""
    ok: int
    """Events answered with ``Ok``."""
    failed: int
    """Events whose handler raised."""
    cancelled: int
    """Events the shutdown answered with ``EventCancelled``."""
    elapsed: float
    """Seconds from the first send to the end of the shutdown."""
    wait_times: list[float]
    """Send-to-answer seconds of each event handled by a consumer."""
    service_times: list[float]
    """Handler seconds of each event handled by a consumer."""
    queue_delays: list[float] = dataclasses.field(default_factory=list)
    """Send-to-start seconds (time spent queued) of each event handled by a
    consumer, in the order of :attr:`wait_times`."""
    flow: FlowStats | None = None
    """What the ``flow`` profile's handlers saw; ``None`` for the others."""

    @property
    def answered(self) -> int:
        """Events handled by a consumer (``ok + failed``)."""
        return self.ok + self.failed

    def peak(self, name: str) -> float:
        """The largest value of a metric over the timeline (0 if empty)."""
        return max((float(getattr(s.metrics, name)) for s in self.samples), default=0)


class SimulatedFailure(Exception):
    """Raised by the demo handler for the share of events ``--error-rate``
    asks to fail."""


async def _work(delay: float, fail: bool) -> float:
    await asyncio.sleep(delay)
    if fail:
        raise SimulatedFailure(f"simulated failure after {delay:.3f} s")
    return float(delay)


async def _demo_handler(payload: Payload[Any], ctx: Context) -> float:
    return await _work(*payload.value)


async def run_demo(
    config: DemoConfig, *, on_sample: Callable[[Sample], None] | None = None
) -> DemoReport:
    """Run a collector queue under the configured load and measure it.

    Events are sent at the times :func:`arrival_times` gives, measured on the
    event loop's clock; the sender never waits for results. A sampler takes
    the queue's metrics every ``config.interval`` seconds, with the mean
    queueing delay (send to handler start) of the recently answered events,
    and hands each sample to ``on_sample``. When ``config.duration`` is
    over, the queue is shut down (it drains what is queued) and every
    event's result is read.
    """
    loop = asyncio.get_running_loop()
    flow = (
        FlowLoad(config.rate, config.seed, _work)
        if config.profile == FLOW_PROFILE
        else None
    )
    queue = CollectorQueue(
        [Collector("demo", _demo_handler)] if flow is None else flow.collectors(),
        min_consumers=config.min_consumers,
        max_consumers=config.max_consumers,
        avg_load_interval=DEMO_AVG_LOAD_INTERVAL,
        metrics_collector_window_size=DEMO_METRICS_WINDOW,
        metrics_warmup_interval=DEMO_METRICS_WARMUP_INTERVAL,
        event_service_data_window_size=DEMO_EVENT_WINDOW,
        logging=False,
        clock=loop.time,
    )
    rng = random.Random(None if config.seed is None else config.seed + 1)
    events: list[CollectorEvent[Any]] = []
    samples: list[Sample] = []
    # The queue keeps the wait and service times of the last answered
    # events but not their queueing delay: an observer, called for the same
    # events right after the queue records theirs, keeps that one.
    recent_delays: collections.deque[float] = collections.deque(
        maxlen=DEMO_EVENT_WINDOW
    )

    answered = 0  # events answered, for the flow profile's held-back count

    def observe(event: CollectorEvent[Any]) -> None:
        nonlocal answered
        answered += 1
        if event.started_at is not None:
            recent_delays.append(event.started_at - event.sent_at)

    queue.add_event_observer(observe)

    async with queue:
        publisher = queue.get_publisher()
        start = loop.time()
        end = start + config.duration

        async def send_load() -> None:
            for at in arrival_times(
                config.profile,
                rate=config.rate,
                duration=config.duration,
                seed=config.seed,
            ):
                delay = start + at - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                handler_time = max(
                    0.0, config.latency + config.spread * (2.0 * rng.random() - 1.0)
                )
                fail = rng.random() < config.error_rate
                value: Any = (handler_time, fail)
                if flow is not None:
                    value = flow.payload(handler_time, fail)
                events.append(publisher.send_nowait(value))

        async def take_samples() -> None:
            k = 1
            while True:
                due = min(start + k * config.interval, end)
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                t = due - start
                warm = t >= DEMO_METRICS_WARMUP_INTERVAL and len(recent_delays) > 0
                metrics = queue.get_metrics()
                held, limited_rate = (
                    (None, None)
                    if flow is None
                    else flow.sample(t, len(events) - answered, metrics)
                )
                sample = Sample(
                    t=t,
                    offered_rate=profile_rate(
                        config.profile, t, rate=config.rate, duration=config.duration
                    ),
                    sent=len(events),
                    metrics=metrics,
                    queue_delay=(
                        math.fsum(recent_delays) / len(recent_delays) if warm else 0.0
                    ),
                    held=held,
                    limited_rate=limited_rate,
                )
                samples.append(sample)
                if on_sample is not None:
                    on_sample(sample)
                if due >= end:
                    return
                k += 1

        await asyncio.gather(send_load(), take_samples())
    elapsed = loop.time() - start

    ok = failed = cancelled = 0
    wait_times: list[float] = []
    service_times: list[float] = []
    queue_delays: list[float] = []
    for event in events:
        # The queue has shut down: every event has its answer.
        result = (await event.wait()).first()
        if isinstance(result, Error):
            if isinstance(result.err, EventCancelled):
                cancelled += 1
                continue
            failed += 1
        else:
            ok += 1
        if event.wait_time is not None:
            wait_times.append(event.wait_time)
        if event.service_time is not None:
            service_times.append(event.service_time)
        if event.started_at is not None:
            queue_delays.append(event.started_at - event.sent_at)
    return DemoReport(
        config=config,
        samples=samples,
        sent=len(events),
        ok=ok,
        failed=failed,
        cancelled=cancelled,
        elapsed=elapsed,
        wait_times=wait_times,
        service_times=service_times,
        queue_delays=queue_delays,
        flow=None if flow is None else flow.stats(),
    )
