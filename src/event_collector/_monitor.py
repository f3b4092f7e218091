"""The queue's monitor: the loop that measures the load and sizes the pool.

Every ``interval`` seconds it reads the queue and the pool, feeds the load
average and the two rate meters, and asks ``_autoscale.next_pool_size``
how many consumers to run. While the queue is idle it sleeps without a
timer until the next put (or, above the pool's floor, looks again every
:data:`IDLE_SHRINK_INTERVAL` so that the pool can shrink).

It also measures the event loop's lag: how late it wakes from each timed
sleep (the wake-up's loop time minus the one it asked for), kept in its
:class:`MonitorProbe` for ``CollectorQueue.health()``.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._autoscale import load_ratio, next_pool_size

if TYPE_CHECKING:
    from ._consumers import ConsumerPool
    from ._eventqueue import EventQueue
    from ._log import Logger
    from ._measure import Measurement

__all__ = [
    "IDLE_SHRINK_INTERVAL",
    "LAG_PERIOD",
    "STALL_FLOOR",
    "STALL_INTERVALS",
    "Monitor",
    "MonitorProbe",
    "probe_of",
]

IDLE_SHRINK_INTERVAL: float = 1.0
"""Seconds between two looks of the monitor at an idle pool that is still
above its minimum (the pool shrinks as the arrival rate decays)."""

LAG_PERIOD: float = 10.0
"""Seconds of one period of the peak lag: the peak covers the current period
and the one before, so the last 10 to 20 seconds."""

STALL_INTERVALS: float = 100.0
"""A monitor later than ``max(STALL_FLOOR, STALL_INTERVALS x interval)``
seconds past the wake-up it asked for counts as stalled (not alive)."""

STALL_FLOOR: float = 10.0
"""The least lateness, in seconds, that counts as a stall (see
:data:`STALL_INTERVALS`)."""


class MonitorProbe:
    """What the monitor tells of itself: its task, when it means to wake, and
    the loop lag it measured. Written on the loop; read from any thread.

    Times are the event loop's (``loop.time()``), in seconds.
    """

    __slots__ = (
        "_period",
        "_period_peak",
        "_previous_peak",
        "deadline",
        "lag",
        "loop_time",
        "stall_after",
        "task",
    )

    def __init__(self, interval: float) -> None:
        self.task: weakref.ref[asyncio.Task[Any]] | None = None
        """The monitor's task, once it runs."""
        self.loop_time: Callable[[], float] | None = None
        """The clock of the monitor's loop (``loop.time``), once it runs."""
        self.deadline: float | None = None
        """When the monitor asked to wake, or ``None`` while it runs, sleeps
        without a timer (an idle queue: until the next put) or has ended."""
        self.lag = 0.0
        """Seconds the last timed wake-up came late (0.0 before the first)."""
        self.stall_after = max(STALL_FLOOR, STALL_INTERVALS * interval)
        """Seconds past its deadline after which the monitor is stalled."""
        self._period = -2
        self._period_peak = 0.0
        self._previous_peak = 0.0

    def woke(self, now: float) -> None:
        """The monitor woke from a timed sleep at loop time ``now``."""
        deadline = self.deadline
        self.deadline = None
        if deadline is None:
            return
        # A timer may fire up to the loop's clock resolution early.
        lag = self.lag = max(0.0, now - deadline)
        period = int(now // LAG_PERIOD)
        if period != self._period:
            self._previous_peak = (
                self._period_peak if period == self._period + 1 else 0.0
            )
            self._period_peak = 0.0
            self._period = period
        if lag > self._period_peak:
            self._period_peak = lag

    def overdue(self, now: float) -> float:
        """Seconds the monitor is late now (0 unless a timed sleep of it is
        past its deadline: the loop is blocked, or was until now)."""
        deadline = self.deadline
        return 0.0 if deadline is None or now <= deadline else now - deadline

    def peak(self, now: float) -> float:
        """The highest lag measured in the current and the previous
        :data:`LAG_PERIOD` (0.0 when none was)."""
        period = int(now // LAG_PERIOD)
        if period == self._period:
            return max(self._period_peak, self._previous_peak)
        if period == self._period + 1:
            return self._period_peak
        return 0.0

    def alive(self, now: float) -> bool:
        """Whether the monitor's task runs and is not stalled. A monitor
        built but not run yet counts: its task is made with it, at the
        start, and runs on the loop's next turn (the caller knows whether
        the queue has started)."""
        ref = self.task
        if ref is None:
            return True
        task = ref()
        if task is None or task.done():
            return False
        return self.overdue(now) <= self.stall_after


# The probe of each pool's monitor, for the queue's health(): the engine
# builds the monitor in its task's factory and keeps no reference to it.
# Weak keys: the probe does not hold the pool, so the entry goes with it.
_probes: weakref.WeakKeyDictionary[ConsumerPool, MonitorProbe] = (
    weakref.WeakKeyDictionary()
)


def probe_of(pool: ConsumerPool) -> MonitorProbe | None:
    """The probe of ``pool``'s monitor, or ``None`` before it is built."""
    return _probes.get(pool)


class Monitor:
    """Measures a queue and resizes its consumer pool; :meth:`run` is the
    queue's ``event-collector-monitor`` task.

    :param queue: the inbox (its put waiter, on which an idle monitor
        sleeps).
    :param pool: the consumer pool (its size and busy count).
    :param backlog: events waiting for a consumer (the transport's count).
    :param clock: the queue's monotonic clock, in seconds.
    :param measurement: fed the load and the counts at every look; gives the
        load average and the Little's-law work in progress.
    :param min_consumers: the pool's lower bound.
    :param max_consumers: the pool's upper bound.
    :param autoscale: whether to resize the pool at all (the measurements
        go on without it).
    :param interval: seconds between two looks while there is work.
    :param wip_margin: the fractional headroom of a new pool size.
    :param log: where growth and shrinking are logged (debug).
    """

    def __init__(
        self,
        queue: EventQueue,
        pool: ConsumerPool,
        *,
        backlog: Callable[[], int],
        clock: Callable[[], float],
        measurement: Measurement,
        min_consumers: int,
        max_consumers: int,
        autoscale: bool,
        interval: float,
        wip_margin: float,
        log: Logger,
    ) -> None:
        self._queue = queue
        self._pool = pool
        self._backlog = backlog
        self._clock = clock
        self._measurement = measurement
        self._min = min_consumers
        self._max = max_consumers
        self._autoscale = autoscale
        self._interval = interval
        self._wip_margin = wip_margin
        self._log = log
        self.probe = MonitorProbe(interval)
        """Its task, its next wake-up and the loop lag, for the health."""
        _probes[pool] = self.probe

    async def run(self) -> None:
        """Look every ``interval`` seconds while there is work; sleep until
        the next put while the queue is idle."""
        probe = self.probe
        task = asyncio.current_task()
        probe.task = None if task is None else weakref.ref(task)
        probe.loop_time = asyncio.get_running_loop().time
        try:
            await self._run()
        finally:
            # Cancelled (or failed) in a timed sleep: it is not late, it is gone.
            probe.deadline = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        loop_time, probe = loop.time, self.probe
        queue, pool, clock = self._queue, self._pool, self._clock
        backlog, measurement = self._backlog, self._measurement
        load_average = measurement.meters.load_average
        floor = self._min if self._autoscale else self._max
        while True:
            now = clock()
            qsize, busy, consumers = backlog(), pool.busy, pool.size
            load = load_ratio(qsize, busy, consumers)
            measurement.sample(now, load)
            if self._autoscale:
                self.resize(now, qsize, busy, consumers, load)
                # New consumers may have taken their first events already
                # (eager tasks): look again before deciding to sleep.
                qsize, busy = backlog(), pool.busy
            if qsize == 0 and busy == 0:
                # Idle: sleep until the next put. Above the floor there is
                # still a pool to shrink as the rates decay, which needs no
                # 10 ms polling: a look every IDLE_SHRINK_INTERVAL will do.
                waiter: asyncio.Future[None] = loop.create_future()
                queue.put_waiter = waiter
                if pool.size <= floor:
                    await waiter
                else:
                    probe.deadline = loop_time() + IDLE_SHRINK_INTERVAL
                    await asyncio.wait((waiter,), timeout=IDLE_SHRINK_INTERVAL)
                    if queue.put_waiter is waiter:  # the timeout woke it
                        queue.put_waiter = None
                        probe.woke(loop_time())
                    else:  # a put did, before its time: no lag to read
                        probe.deadline = None
                # Nothing was queued or handled while we slept: load 0.
                load_average.add(0.0, clock())
            else:
                probe.deadline = loop_time() + self._interval
                await asyncio.sleep(self._interval)
                probe.woke(loop_time())

    def _grow_spares(self, monitor: asyncio.Task[object] | None, count: int) -> None:
        # Not if the monitor was cancelled meanwhile: when asyncio.run ends,
        # it cancels the tasks it sees and waits for those alone, so a
        # consumer started now would be left pending as the loop closes.
        if monitor is None or not (monitor.done() or monitor.cancelling()):
            self._pool.grow(count)

    def resize(
        self, now: float, qsize: int, busy: int, consumers: int, load: float
    ) -> None:
        """Grow or shrink the pool to what the policy asks for now."""
        if load < 1.0 and consumers == self._min:
            return
        target = next_pool_size(
            qsize=qsize,
            busy=busy,
            consumers=consumers,
            min_consumers=self._min,
            max_consumers=self._max,
            avg_load=self._measurement.meters.load_average.mean(now)
            if load < 1.0
            else load,
            wip=self._measurement.wip(now) if load < 1.0 else 0.0,
            wip_margin=self._wip_margin,
        )
        pool = self._pool
        if target > consumers:
            # The consumers that will find an event waiting start now; the
            # spare ones (the margin) once those have started their handlers.
            added = target - consumers
            urgent = min(added, qsize)
            if urgent:
                pool.grow(urgent)
            if added > urgent:
                asyncio.get_running_loop().call_soon(
                    self._grow_spares, asyncio.current_task(), added - urgent
                )
            self._log.debug("consumers added", consumers=target, load=load)
        elif target < consumers:
            retired = pool.shrink(consumers - target)
            if retired:
                self._log.debug(
                    "consumers retired", consumers=consumers - retired, load=load
                )
