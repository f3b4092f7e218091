"""The queue's monitor: the loop that measures the load and sizes the pool.

Every ``interval`` seconds it reads the queue and the pool, feeds the load
average and the two rate meters, and asks ``_autoscale.next_pool_size``
how many consumers to run. While the queue is idle it sleeps without a
timer until the next put (or, above the pool's floor, looks again every
:data:`IDLE_SHRINK_INTERVAL` so that the pool can shrink).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._autoscale import load_ratio, next_pool_size

if TYPE_CHECKING:
    from ._consumers import ConsumerPool
    from ._eventqueue import EventQueue
    from ._log import Logger
    from ._measure import Measurement

__all__ = ["IDLE_SHRINK_INTERVAL", "Monitor"]

IDLE_SHRINK_INTERVAL: float = 1.0
"""Seconds between two looks of the monitor at an idle pool that is still
above its minimum (the pool shrinks as the arrival rate decays)."""


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

    async def run(self) -> None:
        """Look every ``interval`` seconds while there is work; sleep until
        the next put while the queue is idle."""
        loop = asyncio.get_running_loop()
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
                    await asyncio.wait((waiter,), timeout=IDLE_SHRINK_INTERVAL)
                    if queue.put_waiter is waiter:
                        queue.put_waiter = None
                # Nothing was queued or handled while we slept: load 0.
                load_average.add(0.0, clock())
            else:
                await asyncio.sleep(self._interval)

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
