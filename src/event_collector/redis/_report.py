"""What a worker tells the fleet (its figures, with a short expiry, and
the stream's backlog it counts for its pool's sizing), how it notices that
Redis lost the group, and how it leaves (a base of
:class:`~event_collector.redis._upkeep.Upkeep`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from .._log import Logger
from .._models import Metrics
from ._common import RETRYABLE, Backoff, Client, Config, Keys, ensure_group
from ._inbox import Inbox

__all__ = ["Report"]


class Report:
    """The fleet's side of a worker."""

    _config: Config
    _keys: Keys
    _inbox: Inbox
    _log: Logger
    _client: Client | None
    _stopping: bool
    _stop_event: asyncio.Event
    _epoch: bytes | None = None
    """The group's epoch token as this worker last read it."""
    consumer: str
    held: dict[str, int]
    handled: int
    reclaimed: int
    dead_lettered: int
    remote_backlog: int
    remote_share: int
    workers: int

    async def _recreate_group(self) -> None:
        assert self._client is not None
        try:
            created = await ensure_group(self._client, self._keys)
        except RETRYABLE:
            return
        if created:
            # Known now: the epoch check must not report the same loss again.
            with contextlib.suppress(*RETRYABLE):
                self._epoch = await self._client.get(self._keys.epoch)
            self._log.error(
                "redis lost the consumer group (it restarted empty?); recreated "
                "it: events pending before are lost",
                stream=self._keys.stream,
                group=self._keys.group,
            )

    async def _nap(self, seconds: float) -> None:
        """Sleep, waking early when the worker stops."""
        if not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._stop_event.wait()

    metrics: Callable[[], Metrics] | None = None
    """The queue's metrics, when a queue runs on this worker."""

    pool_limits: tuple[int, int] | None = None
    """The queue's ``(min_consumers, max_consumers)``, given by the queue
    that runs on the worker: the fleet view takes a worker's capacity from
    it."""

    def _queue_figures(self) -> dict[str, str | int | float]:
        """The queue's figures for the fleet view: consumers, busy, queued,
        rates and times (nothing when the metrics cannot be read)."""
        read = self.metrics
        if read is None:
            return {}
        try:
            m = read()
        except Exception:
            return {}
        limits: dict[str, int] = {}
        if self.pool_limits is not None:
            limits["min_consumers"], limits["max_consumers"] = self.pool_limits
        return {
            "consumers": m.consumers,
            "busy": m.busy,
            "qsize": m.qsize,
            "load": round(m.load, 4),
            "avg_load": round(m.avg_load, 4),
            "arrival_rate": round(m.arrival_rate, 3),
            "departure_rate": round(m.departure_rate, 3),
            "service_time": m.service_time,
            "wait_time": m.wait_time,
            "wip": round(m.wip, 3),
            "event_count": m.event_count,
            **limits,
        }

    async def _count(self) -> None:
        """Count the stream's backlog and the live workers, and report this
        worker's figures (they expire with it)."""
        assert self._client is not None
        client = self._client
        keys = self._keys
        interval = 0.5
        expiry_ms = int(interval * 6 * 1000)
        backoff = Backoff()
        while not self._stopping:
            try:
                now_ms = int(time.time() * 1000)
                pipe = client.pipeline(transaction=False)
                pipe.get(keys.epoch)
                for band in keys.bands:
                    pipe.xlen(band)
                    pipe.xpending(band, keys.group)
                pipe.hset(
                    keys.worker(self.consumer),
                    mapping={
                        **self._queue_figures(),
                        "held": len(self.held),
                        "inbox": self._inbox.qsize(),
                        "handled": self.handled,
                        "reclaimed": self.reclaimed,
                        "dead_lettered": self.dead_lettered,
                        "at": now_ms,
                    },
                )
                pipe.pexpire(keys.worker(self.consumer), expiry_ms)
                pipe.zadd(keys.workers, {self.consumer: now_ms})
                pipe.zremrangebyscore(keys.workers, "-inf", now_ms - expiry_ms)
                pipe.zcard(keys.workers)
                epoch, *replies = await pipe.execute(raise_on_error=False)
                await self._watch_epoch(epoch)
                waiting = 0
                for i in range(len(keys.bands)):
                    length, summary = replies[2 * i], replies[2 * i + 1]
                    if isinstance(length, int) and isinstance(summary, dict):
                        waiting += max(0, length - int(summary.get("pending", 0)))
                workers = replies[-1] if isinstance(replies[-1], int) else 1
                self.workers = max(1, workers)
                self.remote_backlog = waiting
                self.remote_share = -(-waiting // self.workers)
                backoff.reset()
                await self._nap(interval)
            except RETRYABLE:
                await self._nap(backoff.next())

    async def _watch_epoch(self, epoch: Any) -> None:
        """Notice that Redis lost the group (it restarted empty, or failed
        over to an empty replica): the epoch token changed, or is gone and
        the group with it (made again here). A connection that redis-py
        re-opened on its own says nothing of it, so this is read every
        count, not only after an error."""
        if isinstance(epoch, Exception):
            return
        if epoch is None:
            assert self._client is not None
            await ensure_group(self._client, self._keys)
            epoch = await self._client.get(self._keys.epoch)
        if self._epoch is None:
            self._epoch = epoch  # the first look
        elif epoch != self._epoch:
            self._epoch = epoch
            self._log.error(
                "redis lost the consumer group (it restarted empty?) and it was "
                "recreated: the events it held are lost; the answers of those "
                "this worker holds reach no one who waits",
                stream=self._keys.stream,
                group=self._keys.group,
                held=len(self.held),
            )

    async def _leave(self) -> None:
        """Leave the group's consumer list if nothing is pending under this
        name (a name with pending entries stays, for them to be
        reclaimed), and the fleet's worker list."""
        assert self._client is not None
        keys = self._keys
        pending = 0
        for band in keys.bands:
            summary = await self._client.xpending_range(
                band, keys.group, "-", "+", 1, consumername=self.consumer
            )
            pending += len(summary)
        if pending == 0:
            for band in keys.bands:
                await self._client.xgroup_delconsumer(band, keys.group, self.consumer)
        pipe = self._client.pipeline(transaction=False)
        pipe.zrem(keys.workers, self.consumer)
        pipe.delete(keys.worker(self.consumer))
        await pipe.execute(raise_on_error=False)
