"""The publishing side: events into the work stream, answers back from
this process's reply stream.

Sends from every task of the process are coalesced: each ``send`` queues
its encoded entry and waits; one writer task sends whatever has queued up
in one round trip (one call of the batch script,
:data:`~event_collector.redis._batches.ADD`) as soon as the previous one
is back, without waiting for more, and tells each sender its entry's id. One
reader task blocks on the reply stream and answers the waiting events;
nothing polls a result key, and no channel is opened per call. One batch's
write is in :mod:`._writes`, the reading in :mod:`._replies`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from collections import deque
from collections.abc import Callable
from typing import Any

import redis.exceptions as rexc

from .._log import Logger
from .._models import CollectorEvent
from ..data import Error, Payload
from ..exceptions import ConfigError, EventCancelled, QueueClosed, QueueFull
from ._batches import ADD
from ._codec import payload_document
from ._common import (
    RETRYABLE,
    Backoff,
    Client,
    Config,
    close_clients,
    ensure_group,
    stop_tasks,
)
from ._writes import BATCH, IDMP_BATCH, Pending, Waiter, Writes

__all__ = ["Sender"]

_EPOCH_EVERY = 1.0  # seconds between epoch checks while events only wait
_NOT_WRITTEN = "the Redis publisher closed before the event was written"
_MAYBE_WRITTEN = (
    "the Redis publisher closed while the event was being written; it may "
    "have been written, and may still run"
)


class Sender(Writes):
    """Writes events to the work stream and resolves them from the reply
    stream (one per sender, expiring when its process is gone)."""

    def __init__(
        self, config: Config, *, log: Logger, clock: Callable[[], float]
    ) -> None:
        self._config = config
        self._keys = config.keys
        self._log = log
        self._clock = clock
        self.owner = secrets.token_hex(8)
        self.reply_key = self._keys.reply(self.owner)
        self._reply_field = self.reply_key.encode()
        self._codec_field = config.codec.name.encode()
        self._encode = config.codec.encode
        self._queue: deque[Pending] = deque()
        self._wake = asyncio.Event()
        self.waiting: dict[str, CollectorEvent[Any]] = {}
        """Events accepted and not answered yet, by entry id."""
        # Answers read before their entry's acceptance was:
        # id -> (when, codec, answer).
        self._early: dict[str, tuple[float, bytes | None, bytes]] = {}
        self._batch: list[Pending] = []  # the writer's, until settled
        self.idmp = True
        """Whether batches are written with ``XADD IDMP`` (Redis 8.6 and
        later), so that one written again after its reply was lost adds no
        entry twice; turned off for good by the first batch the server
        refuses it for, or by a refused script (a plain ``XADD`` per entry
        then)."""
        self._producer = self.owner.encode()
        self._batch_numbers = itertools.count(1)
        self._client: Client | None = None
        self._reader_client: Client | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed: str | None = "the Redis publisher is not started"
        self._epoch: bytes | None = None
        self._suspect = False  # a connection failed: check the epoch
        self._stopping = False
        self._last = b"0-0"  # the last reply read
        self._full = False  # the last bounded add found the streams full
        self._idle = asyncio.Event()
        self._idle.set()
        self._written = asyncio.Event()
        self._script: Any = None  # ADD, registered at start

    # -- life ------------------------------------------------------------------

    @property
    def closed_reason(self) -> str | None:
        return self._closed

    async def start(self) -> None:
        client = self._client = self._config.client()
        self._reader_client = self._config.client()
        backoff = Backoff()
        while True:
            try:
                await ensure_group(client, self._keys)
                self._epoch = await client.get(self._keys.epoch)
                break
            except rexc.AuthenticationError:
                # A connection error to redis-py, but no retry will mend a
                # wrong password: say so now instead of retrying for ever.
                await close_clients(self._client, self._reader_client)
                raise
            except RETRYABLE as exc:
                self._log.warning("redis not reachable; retrying", error=str(exc))
                await asyncio.sleep(backoff.next())
            except BaseException:
                # Refused (an ACL, a wrong password): nothing is left open.
                await close_clients(self._client, self._reader_client)
                raise
        self._script = client.register_script(ADD)
        self._closed = None
        self._tasks = [
            asyncio.create_task(self._write(), name="event-collector-redis-writer"),
            asyncio.create_task(self._read(), name="event-collector-redis-replies"),
        ]

    def close(self, reason: str) -> None:
        """Refuse sends from now on; entries already queued are still
        written."""
        if self._closed is None:
            self._closed = reason

    async def stop(self, *, answer_waiting: bool = True) -> None:
        """Write what is queued (for a few seconds at most), stop the tasks,
        answer what is still waiting, and close the connections."""
        self.close("the Redis publisher is closed")
        self._wake.set()
        if self._queue:
            with contextlib.suppress(TimeoutError):
                await self.wait_written(5.0)
        self._stopping = True
        await stop_tasks(self._tasks, grace=1.5)
        self._tasks = []
        # The batch the writer was writing when it stopped (Redis
        # unreachable) may have been written; what is queued was not.
        for reason, items in (
            (_MAYBE_WRITTEN, self._batch),
            (_NOT_WRITTEN, self._queue),
        ):
            for item in items:
                waiter = item.waiter
                if waiter is not None and not waiter.future.done():
                    waiter.future.set_exception(QueueClosed(reason))
                self._answer(item.event, Error(EventCancelled(reason)))
            items.clear()
        if self.waiting and self._client is not None:
            # Answers already in the reply stream (a worker in this process
            # acknowledged them as it stopped) are read before the rest is
            # given up on.
            with contextlib.suppress(*RETRYABLE, TimeoutError):
                async with asyncio.timeout(2.0):
                    replies = await self._client.xread(
                        {self.reply_key: self._last}, count=100_000
                    )
                    for _name, entries in replies or ():
                        for _entry_id, fields in entries:
                            self._resolve(fields)
        if answer_waiting:
            self._fail_waiting(
                EventCancelled("the Redis publisher closed before the answer came")
            )
        if self._client is not None:
            # Nobody reads this reply stream any more.
            with contextlib.suppress(*RETRYABLE):
                async with asyncio.timeout(2.0):
                    await self._client.delete(self.reply_key)
        await close_clients(self._client, self._reader_client)

    # -- sending ---------------------------------------------------------------

    def entry(self, event: CollectorEvent[Any]) -> tuple[int, bytes]:
        """The band and encoded payload of an event's entry (its other
        fields are this sender's); raises ``TypeError`` or ``ValueError``
        for a payload the codec refuses or one too large."""
        payload = event._payload
        if payload is not None and payload.ordering_key is not None:
            raise ConfigError(
                "ordering_key: per-key ordering works with the in-memory "
                "transport only; RedisTransport does not support it yet"
            )
        value: Any = event._value if payload is None else payload
        try:
            data = self._encode(payload_document(value))
        except (TypeError, ValueError) as exc:
            raise type(exc)(
                f"the payload cannot be sent through Redis: the "
                f"{self._config.codec.name} codec refuses it ({exc})"
            ) from exc
        limit = self._config.max_payload_bytes
        if len(data) > limit:
            raise ValueError(
                f"the payload is {len(data)} bytes encoded, over "
                f"max_payload_bytes={limit}"
            )
        return self._keys.band(event.priority), data

    def check_open(self) -> None:
        if self._closed is not None:
            raise QueueClosed(self._closed)

    async def submit(self, event: CollectorEvent[Any], band: int, data: bytes) -> None:
        """Queue one entry and wait until Redis has accepted it."""
        self.check_open()
        future = asyncio.get_running_loop().create_future()
        self._push(Pending(event, band, data, Waiter(future, 1)))
        await future

    async def submit_many(
        self, entries: list[tuple[CollectorEvent[Any], int, bytes]]
    ) -> None:
        """Queue entries and wait until Redis has accepted every one; the
        first refused raises (the others are written all the same)."""
        self.check_open()
        if not entries:
            return
        future = asyncio.get_running_loop().create_future()
        waiter = Waiter(future, len(entries))
        append = self._queue.append
        for event, band, data in entries:
            append(Pending(event, band, data, waiter))
        self._idle.clear()
        self._wake.set()
        await future

    def submit_nowait(self, event: CollectorEvent[Any], band: int, data: bytes) -> None:
        """Queue one entry without waiting; ``QueueFull`` when a bounded
        stream was found full and its writes are waiting for room."""
        self.check_open()
        if self._full:
            raise QueueFull(
                f"the Redis stream is full (maxsize={self._config.maxsize})"
            )
        self._push(Pending(event, band, data, None))

    def _push(self, item: Pending) -> None:
        self._queue.append(item)
        self._idle.clear()
        self._wake.set()

    async def wait_idle(self, timeout: float | None) -> None:  # noqa: ASYNC109
        """Wait until every event sent so far is written and answered."""
        async with asyncio.timeout(timeout):
            while self._queue or self.waiting:
                self._idle.clear()
                await self._idle.wait()

    async def wait_written(self, timeout: float) -> None:  # noqa: ASYNC109
        """Wait until nothing queued is left to write."""
        async with asyncio.timeout(timeout):
            while self._queue:
                self._written.clear()
                await self._written.wait()

    def _notify(self) -> None:
        if not self._queue and not self.waiting:
            self._idle.set()

    async def _write(self) -> None:
        backoff = Backoff()
        # What is being written: stop() answers it, and while it is not
        # empty the reader keeps answers to entries nobody waits for yet (a
        # batch written again with IDMP is given the ids its first write
        # had, whose answers may come while this task waits to try again).
        batch = self._batch
        number = 0  # the batch's: with the index, each entry's IDMP id
        again = False  # the batch's write failed and may have been run
        while not self._stopping or batch or self._queue:
            if not batch:
                while not self._queue:
                    if self._stopping:
                        return
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(_EPOCH_EVERY):
                            await self._wake.wait()
                    if self.waiting and not self._wake.is_set():
                        # Nothing to write, events waiting: a Redis that
                        # restarted empty must not leave them waiting for
                        # ever, even if no read failed (redis-py may have
                        # reconnected without a word).
                        with contextlib.suppress(*RETRYABLE):
                            await self._check_epoch()
                size = IDMP_BATCH if self.idmp else BATCH
                for _ in range(min(size, len(self._queue))):
                    batch.append(self._queue.popleft())
                number, again = next(self._batch_numbers), False
            try:
                epoch, ids = await self._add(batch, number, again)
            except RETRYABLE as exc:
                self._suspect = True
                self._log.warning(
                    "redis write failed; retrying", error=str(exc), events=len(batch)
                )
                again = True
                await asyncio.sleep(backoff.next())
                continue  # the same batch, with the same number
            except Exception as exc:
                # Not the connection: the server refused (an ACL, OOM...).
                # The senders get the error; nothing is retried.
                for item in batch:
                    self._refuse(item, exc)
                batch.clear()
                continue
            backoff.reset()
            # Before the batch waits: what waited before a loss is lost,
            # the batch itself is on the new server. The batch is written:
            # a failure here must not write it again, nor refuse it.
            try:
                await self._observe_epoch(epoch)
            except RETRYABLE:
                self._suspect = True
            except Exception as exc:
                self._suspect = True
                self._log.error("redis refused the epoch check", error=str(exc))
            left: list[Pending] = []
            for item, entry_id in zip(batch, ids, strict=True):
                if entry_id is None:
                    left.append(item)  # the bounded streams are full
                elif isinstance(entry_id, Exception):
                    self._refuse(item, entry_id)
                else:
                    self._accepted(item, entry_id.decode())
            # An answer still kept is to no entry of this batch, the only
            # one written and not settled: a first copy, or a duplicate.
            if self._early:
                self._early.clear()
            self._full = bool(left)
            batch[:] = left
            if not self._queue:
                self._written.set()
            if left:
                # What is left was not added: written again, it is a new
                # batch (its entries' indexes changed), with its own number.
                number, again = next(self._batch_numbers), False
                await asyncio.sleep(0.02)  # wait for room
            self._notify()


def event_for(value: Any, priority: int, sent_at: float) -> CollectorEvent[Any]:
    """A publisher-side event; its payload is made at once, so that the
    entry id can be set on it when Redis accepts it."""
    event: CollectorEvent[Any] = CollectorEvent(value, priority, sent_at)
    if not isinstance(value, Payload):
        _ = event.payload
    return event
