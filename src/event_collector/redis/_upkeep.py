"""A worker's upkeep, beside the fetching and the answering: leases renewed
off the event loop, dead workers' entries reclaimed, the fleet counted.

Leases: an entry fetched by a worker stays in the group's pending list
under its name until it is acknowledged. A thread with its own connection
renews the lease of every entry the process holds (``XCLAIM ... JUSTID``
resets its idle time without counting a delivery), so a handler that runs
longer than ``visibility_timeout``, or one that blocks the event loop,
keeps its events. When a process dies, its entries' idle time grows past
``visibility_timeout`` and another worker claims them (``XCLAIM`` with that
minimum idle time: of two workers racing, one wins). Nothing is locked, so
nothing waits on a lock a dead process holds.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import redis
import redis.exceptions as rexc

from ._common import (
    RETRYABLE,
    Backoff,
    Client,
    is_nogroup,
)
from ._report import Report

__all__ = ["Upkeep"]


class Upkeep(Report):
    """The worker's background loops that are not on the event path (a
    base of :class:`~event_collector.redis._worker.Worker`)."""

    # The rest of the shared state is declared on Report.
    _heartbeat_stop: threading.Event
    _suspects: dict[int, dict[str, float]]

    def _deliver(
        self, band: int, entry_id: str, fields: dict[bytes, bytes], attempt: int
    ) -> None:
        raise NotImplementedError

    def _dead_letter(
        self,
        band: int,
        entry_id: str,
        fields: dict[bytes, bytes],
        reason: str,
        attempts: int,
        last_error: str | None,
    ) -> None:
        raise NotImplementedError

    # -- leases ----------------------------------------------------------------

    def _renew_leases(self) -> None:
        """The heartbeat thread: renew the lease of every held entry, off
        the event loop, on a connection of its own."""
        config = self._config
        options = {"socket_connect_timeout": 2.0, "socket_timeout": 5.0}
        options.update(
            {k: v for k, v in config.client_options.items() if k != "socket_timeout"}
        )
        client: Any = redis.Redis.from_url(config.url, **options)
        keys = self._keys
        interval = config.heartbeat_interval
        try:
            while not self._heartbeat_stop.wait(interval):
                held = self.held.copy()
                if not held:
                    continue
                by_band: dict[int, list[str]] = {}
                for entry_id, band in held.items():
                    by_band.setdefault(band, []).append(entry_id)
                try:
                    pipe = client.pipeline(transaction=False)
                    for band, ids in by_band.items():
                        for start in range(0, len(ids), 1000):
                            pipe.xclaim(
                                keys.bands[band],
                                keys.group,
                                self.consumer,
                                0,
                                ids[start : start + 1000],
                                justid=True,
                            )
                    pipe.execute(raise_on_error=False)
                except (rexc.RedisError, OSError):
                    continue  # the next beat tries again, on a new connection
        finally:
            client.close()

    async def _reclaim(self) -> None:
        """Claim the entries of dead workers.

        An entry is claimed once it is idle past ``visibility_timeout`` and
        was seen idle (past ``visibility_timeout`` less the confirmation
        time) at a look at least 1.5 heartbeats earlier, with every look in
        between quick and on time. A paused or sleeping Redis makes every
        entry look idle at once; the looks that waited it out are slow (or
        late, if this loop itself was held up), so the count starts again
        after them, and a live owner's heartbeat renews its entries before
        it ends. Suspecting early lets a dead worker's entries go at about
        ``visibility_timeout`` plus one look, not plus the confirmation
        time too (the fault suite bounds it by ``visibility_timeout`` + 2 s).
        """
        assert self._client is not None
        client = self._client
        config = self._config
        keys = self._keys
        idle_ms = int(config.visibility_timeout * 1000)
        confirm = config.heartbeat_interval * 1.5
        early_ms = max(0, int((config.visibility_timeout - confirm) * 1000))
        slow = config.heartbeat_interval / 2
        interval = config.reclaim_interval
        backoff = Backoff()
        last_sweep = time.monotonic()
        last_look: float | None = None
        while not self._stopping:
            await self._nap(self._next_look(interval, confirm))
            try:
                sent = time.monotonic()
                looks = [
                    await client.xpending_range(
                        band, keys.group, "-", "+", 100, idle=early_ms
                    )
                    for band in keys.bands
                ]
                now = time.monotonic()
                trusted = (
                    last_look is not None
                    and sent - last_look <= interval + slow
                    and now - sent <= slow
                )
                last_look = now
                for band_index, pending in enumerate(looks):
                    await self._reclaim_band(
                        client,
                        band_index,
                        pending,
                        now,
                        idle_ms,
                        early_ms,
                        confirm if trusted else None,
                    )
                if time.monotonic() - last_sweep > max(30.0, config.visibility_timeout):
                    last_sweep = time.monotonic()
                    await self._sweep_consumers(client)
                backoff.reset()
            except RETRYABLE as exc:
                last_look = None
                self._log.warning("redis reclaim failed; retrying", error=str(exc))
                await self._nap(backoff.next())
            except rexc.ResponseError as exc:
                last_look = None
                if is_nogroup(exc):
                    await self._recreate_group()
                else:
                    self._log.error("redis refused the reclaim", error=str(exc))

    def _next_look(self, interval: float, confirm: float) -> float:
        """Seconds to the next look: ``interval``, or less when a suspect's
        confirmation time ends sooner (suspects already past it, left for
        want of idle consumers, wait for the usual look)."""
        now = time.monotonic()
        dues = [
            due
            for seen in self._suspects.values()
            for first in seen.values()
            if (due := first + confirm - now) > 0
        ]
        if not dues:
            return interval
        return min(interval, min(dues) + 0.005)

    async def _reclaim_band(
        self,
        client: Client,
        band_index: int,
        pending: list[Any],
        now: float,
        idle_ms: int,
        early_ms: int,
        confirm: float | None,
    ) -> None:
        """Claim what one look at one band shows ready; ``confirm`` is None
        when the look cannot be trusted to follow the last one closely (the
        suspects' count then starts again)."""
        keys = self._keys
        band = keys.bands[band_index]
        suspects = {} if confirm is None else self._suspects.get(band_index, {})
        seen: dict[str, float] = {}
        ready: list[tuple[str, int]] = []
        orphans: list[tuple[str, int]] = []
        me = self.consumer.encode()
        for entry in pending:
            entry_id = entry["message_id"].decode()
            if entry_id in self.held:
                continue  # ours: the heartbeat has not run yet
            first = seen[entry_id] = suspects.get(entry_id, now)
            if confirm is None:
                continue
            if entry["consumer"] == me:
                # Delivered to this worker, which never read it: its read
                # timed out while Redis was frozen, and Redis ran it when it
                # woke. Seen at two looks, so not the reply of a fetch in
                # flight.
                if now > first and not self._stopping:
                    orphans.append((entry_id, int(entry["times_delivered"])))
            elif (
                now - first >= confirm and int(entry["time_since_delivered"]) >= idle_ms
            ):
                ready.append((entry_id, int(entry["times_delivered"])))
        self._suspects[band_index] = seen
        if orphans:
            await self._recover(client, band_index, orphans, early_ms, seen)
        if not ready:
            return
        # Reclaimed entries go before new ones: some are taken even when no
        # consumer is idle (they wait in the inbox, their leases renewed).
        room = max(16, self._inbox.idle_consumers())
        exhausted = [e for e, n in ready if n >= self._config.max_deliveries]
        retry = [e for e, n in ready if n < self._config.max_deliveries][:room]
        counts = dict(ready)
        for ids, dead in ((exhausted, True), (retry, False)):
            if not ids:
                continue
            claimed = await client.xclaim(band, keys.group, self.consumer, idle_ms, ids)
            for entry_id_raw, fields in claimed:
                if fields is None:
                    continue  # the entry was deleted
                entry_id = entry_id_raw.decode()
                seen.pop(entry_id, None)
                attempts = counts[entry_id]
                if dead:
                    self.held[entry_id] = band_index
                    self._log.error(
                        "redis event dead-lettered after its last delivery",
                        entry_id=entry_id,
                        attempts=attempts,
                    )
                    self._dead_letter(
                        band_index,
                        entry_id,
                        fields,
                        f"delivered {attempts} times without an answer",
                        attempts,
                        None,
                    )
                else:
                    self.reclaimed += 1
                    self._log.info(
                        "redis event reclaimed from a dead worker",
                        entry_id=entry_id,
                        attempt=attempts + 1,
                    )
                    self._deliver(band_index, entry_id, fields, attempts + 1)

    async def _recover(
        self,
        client: Client,
        band_index: int,
        orphans: list[tuple[str, int]],
        min_idle_ms: int,
        seen: dict[str, float],
    ) -> None:
        """Take back entries delivered to this worker whose delivery it never
        received, at once and as the attempt they were counted as, rather
        than let another worker redeliver them after visibility_timeout.
        The minimum idle time keeps an entry another worker took since."""
        band = self._keys.bands[band_index]
        by_count: dict[int, list[str]] = {}
        for entry_id, count in orphans:
            by_count.setdefault(count, []).append(entry_id)
        for count, ids in by_count.items():
            claimed = await client.xclaim(
                band,
                self._keys.group,
                self.consumer,
                min_idle_ms,
                ids,
                retrycount=count,
            )
            for entry_id_raw, fields in claimed:
                entry_id = entry_id_raw.decode()
                seen.pop(entry_id, None)
                if fields is None:
                    continue  # the entry was deleted
                self._log.info(
                    "redis event recovered: it was delivered to this worker "
                    "while its read failed",
                    entry_id=entry_id,
                    attempt=count,
                )
                self._deliver(band_index, entry_id, fields, max(1, count))

    async def _sweep_consumers(self, client: Client) -> None:
        """Remove from the group the names of workers long gone that hold
        nothing, so that the group's consumer list does not grow with
        every restart."""
        keys = self._keys
        longer_than = max(60.0, self._config.visibility_timeout * 10) * 1000
        for band in keys.bands:
            for info in await client.xinfo_consumers(band, keys.group):
                name = info["name"]
                name = name.decode() if isinstance(name, bytes) else str(name)
                if name == self.consumer or info["pending"]:
                    continue
                if info["idle"] > longer_than:
                    await client.xgroup_delconsumer(band, keys.group, name)

    # -- counting --------------------------------------------------------------
