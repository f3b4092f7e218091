"""The working side: events from the stream into the queue's inbox for its
idle consumers, and each answer handed to the acknowledging task, which
writes it back to its publisher with the acknowledgement, atomically.

The acknowledgements are in :mod:`._acks`, leases and reclaims in
:mod:`._upkeep`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import redis.exceptions as rexc

from .._log import Logger
from .._models import CollectorEvent
from ..data import Error, ResultList
from ..exceptions import EventCancelled, QueueClosed
from ._acks import Acks
from ._batches import has_command
from ._codec import encode_answer, payload_from_document
from ._common import (
    RETRYABLE,
    Backoff,
    Client,
    Config,
    close_clients,
    ensure_group,
    is_nogroup,
    stop_tasks,
)
from ._inbox import Delivered, Inbox

__all__ = ["Worker"]

_BLOCK_MS = 500  # a blocking read returns this often, so that a stop is seen


class Worker(Acks):
    """Fetches, renews leases, reclaims, acknowledges and replies."""

    def __init__(
        self,
        config: Config,
        inbox: Inbox,
        *,
        consumer: str,
        log: Logger,
        clock: Callable[[], float],
    ) -> None:
        self._config = config
        self._keys = config.keys
        self._inbox = inbox
        self.consumer = consumer
        self._log = log
        self._clock = clock
        self._client: Client | None = None
        self._fetch_client: Client | None = None
        self.held: dict[str, int] = {}
        """Entry id -> band of every entry this process holds (fetched and
        not acknowledged): what the heartbeat renews."""
        self._acks: deque[tuple[Any, ...]] = deque()
        self._acked = asyncio.Event()
        self._wake_acker = asyncio.Event()
        self._handback: list[Delivered] = []
        self._stopping = False
        self._stop_event = asyncio.Event()
        self._giving_back: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._heartbeat: threading.Thread | None = None
        self._heartbeat_stop = threading.Event()
        # Per band: entries seen idle past visibility_timeout, and when.
        self._suspects: dict[int, dict[str, float]] = {}
        self.remote_backlog = 0
        """Entries waiting in the stream, as last counted."""
        self.remote_share = 0
        """This worker's share of them (divided by the live workers)."""
        self.workers = 1
        self.handled = 0
        self.reclaimed = 0
        self.dead_lettered = 0
        self._encode = config.codec.encode
        self._decode = config.codec.decode
        self._codec_name = config.codec.name.encode()

    # -- life ------------------------------------------------------------------

    async def start(self) -> None:
        self._client = self._config.client()
        self._fetch_client = self._config.client()
        backoff = Backoff()
        while True:
            try:
                await ensure_group(self._client, self._keys)
                self.ackdel = await has_command(self._client, "XACKDEL")
                break
            except rexc.AuthenticationError:
                # A connection error to redis-py, but no retry will mend a
                # wrong password: say so now instead of retrying for ever.
                await close_clients(self._client, self._fetch_client)
                raise
            except RETRYABLE as exc:
                self._log.warning("redis not reachable; retrying", error=str(exc))
                await asyncio.sleep(backoff.next())
            except BaseException:
                await close_clients(self._client, self._fetch_client)
                raise
        self._heartbeat = threading.Thread(
            target=self._renew_leases,
            name="event-collector-redis-heartbeat",
            daemon=True,
        )
        self._heartbeat.start()
        self._tasks = [
            asyncio.create_task(self._fetch(), name="event-collector-redis-fetch"),
            asyncio.create_task(self._reclaim(), name="event-collector-redis-reclaim"),
            asyncio.create_task(self._ack(), name="event-collector-redis-ack"),
            asyncio.create_task(self._count(), name="event-collector-redis-count"),
        ]

    def close(self) -> None:
        """Fetch nothing more, and give what no consumer started back to the
        group at once, for the other workers."""
        if self._stopping:
            return
        self._stopping = True
        self._stop_event.set()
        self._inbox.demand.set()
        self.hand_back()
        if self._handback:
            self._giving_back = asyncio.get_running_loop().create_task(
                self._give_back(), name="event-collector-redis-hand-back"
            )

    def hand_back(self) -> None:
        """Take back what no consumer started (it goes back to the group)."""
        for event in self._inbox.drain():
            assert isinstance(event, Delivered)
            self._handback.append(event)

    async def stop(self) -> None:
        """Acknowledge what is answered, give back what is not, stop."""
        self.close()
        fetch, reclaim, ack, count = self._tasks or (None,) * 4
        # The loops end on their own at their next turn (a blocking read
        # returns within _BLOCK_MS): a cancelled read may still run on the
        # server and bring this consumer back into the group after it left.
        await stop_tasks(
            [t for t in (fetch, reclaim, count) if t is not None],
            grace=_BLOCK_MS / 1000 + 2.0,
        )
        # What the fetcher got while stopping was never started either.
        self.hand_back()
        if ack is not None:
            try:
                async with asyncio.timeout(5.0):
                    while self._acks:
                        self._wake_acker.set()
                        self._acked.clear()
                        await self._acked.wait()
            except TimeoutError:
                self._log.warning(
                    "redis acknowledgements not written at shutdown; the events "
                    "will be delivered again",
                    events=len(self._acks),
                )
            await stop_tasks([ack], grace=0.5)
        self._heartbeat_stop.set()
        try:
            if self._giving_back is not None:
                await self._giving_back
            await self._give_back()
            await self._leave()
        except RETRYABLE as exc:
            self._log.warning(
                "redis unreachable at shutdown; held events will be reclaimed "
                "after visibility_timeout",
                error=str(exc),
            )
        if self._heartbeat is not None:
            await asyncio.to_thread(self._heartbeat.join, 5.0)
        await close_clients(self._client, self._fetch_client)

    async def _give_back(self) -> None:
        """Make the entries this process did not finish claimable at once:
        their idle time is set past ``visibility_timeout``; one not started
        keeps its delivery count, so that its next delivery is not counted
        twice."""
        if not self._handback or self._client is None:
            return
        events, self._handback = self._handback, []
        for event in events:
            # No longer renewed: if the give-back fails, the entries are
            # reclaimed after visibility_timeout like a dead worker's.
            self.held.pop(event.entry_id, None)
        pipe = self._client.pipeline(transaction=False)
        idle = int(self._config.visibility_timeout * 1000) * 10
        for event in events:
            attempts = event.payload.attempt - (0 if event.started_at else 1)
            pipe.xclaim(
                self._keys.bands[event.band],
                self._keys.group,
                self.consumer,
                0,
                [event.entry_id],
                idle=idle,
                retrycount=max(0, attempts),
                justid=True,
            )
        await pipe.execute(raise_on_error=False)
        self._log.info("redis events handed back", events=len(events))

    # -- fetching --------------------------------------------------------------

    async def _fetch(self) -> None:
        assert self._fetch_client is not None
        client = self._fetch_client
        keys = self._keys
        inbox = self._inbox
        backoff = Backoff()
        while not self._stopping:
            wanted = inbox.idle_consumers()
            if wanted <= 0:
                inbox.demand.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_BLOCK_MS / 1000):
                        await inbox.demand.wait()
                continue
            try:
                got = await self._read_bands(client, wanted)
                backoff.reset()
            except RETRYABLE as exc:
                self._log.warning("redis fetch failed; retrying", error=str(exc))
                await self._nap(backoff.next())
                continue
            except rexc.ResponseError as exc:
                if is_nogroup(exc):
                    await self._recreate_group()
                else:
                    self._log.error("redis refused the fetch", error=str(exc))
                    await self._nap(backoff.next())
                continue
            for band, entries in got:
                for entry_id, fields in entries:
                    self._deliver(band, entry_id.decode(), fields, 1)
        del keys

    async def _read_bands(
        self, client: Client, wanted: int
    ) -> list[tuple[int, list[Any]]]:
        """Up to ``wanted`` new entries, from the highest band that has
        some; blocks for a while when every band is empty."""
        keys = self._keys
        group, me = keys.group, self.consumer
        bands = keys.bands
        if len(bands) > 1:
            got: list[tuple[int, list[Any]]] = []
            for i, band in enumerate(bands):
                reply = await client.xreadgroup(group, me, {band: ">"}, count=wanted)
                if reply:
                    entries = reply[0][1]
                    got.append((i, entries))
                    wanted -= len(entries)
                    if wanted <= 0:
                        return got
            if got:
                return got
        reply = await client.xreadgroup(
            group, me, dict.fromkeys(bands, ">"), count=wanted, block=_BLOCK_MS
        )
        index = {name: i for i, name in enumerate(bands)}
        return [(index[name.decode()], entries) for name, entries in reply or ()]

    def _deliver(
        self, band: int, entry_id: str, fields: dict[bytes, bytes], attempt: int
    ) -> None:
        """Put one fetched or reclaimed entry into the inbox, or dead-letter
        it if it cannot be read."""
        self.held[entry_id] = band
        try:
            codec = fields.get(b"c", self._codec_name)
            if codec != self._codec_name:
                raise ValueError(
                    f"written with the {codec.decode(errors='replace')!r} codec, "
                    f"read with {self._codec_name.decode()!r}"
                )
            payload = payload_from_document(self._decode(fields[b"d"]))
        except Exception as exc:
            reason = f"the entry cannot be decoded: {type(exc).__name__}: {exc}"
            self._log.error(
                "redis entry dead-lettered", entry_id=entry_id, reason=reason
            )
            self._dead_letter(band, entry_id, fields, reason, attempt, None)
            return
        event = Delivered(
            payload,
            self._clock(),
            band=band,
            entry_id=entry_id,
            event_id=self._keys.event_id(band, entry_id),
            reply_to=fields.get(b"r", b""),
            attempt=attempt,
        )
        try:
            self._inbox.put_nowait(event)
        except QueueClosed:
            self._handback.append(event)

    # -- answering -------------------------------------------------------------

    def settle(self, event: CollectorEvent[Any]) -> None:
        """Called by the consumer pool with each answered event."""
        if not isinstance(event, Delivered):
            return
        results = event.get_result()
        assert results is not None
        if self._stopping and _cancelled(results):
            # Cut short by this worker's shutdown: another worker will
            # handle it, so it is neither answered nor acknowledged.
            self._handback.append(event)
            return
        self._acks.append(
            (
                "ack",
                event,
                encode_answer(
                    self._config.codec, results, self._config.max_payload_bytes
                ),
            )
        )
        self._wake_acker.set()


def _cancelled(results: ResultList) -> bool:
    return any(type(r) is Error and isinstance(r.err, EventCancelled) for r in results)
