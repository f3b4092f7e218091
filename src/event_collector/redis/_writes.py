"""The publisher's writes: a batch of entries in one call of the batch
script (:data:`~event_collector.redis._batches.ADD`), and what each entry's
fate tells its sender (a base of
:class:`~event_collector.redis._sender.Sender`, which runs the writing
loop)."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.exceptions as rexc

from .._models import CollectorEvent
from ..data import Error
from ..exceptions import QueueClosed
from ._batches import add_args
from ._replies import Replies

__all__ = ["BATCH", "IDMP_BATCH", "Pending", "Waiter", "Writes"]

BATCH = 500
"""Entries per round trip, at most."""
IDMP_BATCH = 100
"""Entries per round trip, at most, while ``XADD IDMP`` is in use: a stream
remembers 100 idempotency ids per producer unless told otherwise
(``stream-idmp-maxsize``), and a batch written again must find all of its
own."""


class Waiter:
    """What a ``send`` (one entry) or a ``send_many`` (all of its entries)
    waits on: resolved when the last of its entries is accepted, failed by
    the first refused. One future for a whole batch, not a task per entry
    (benchmark: redis)."""

    __slots__ = ("future", "left")

    def __init__(self, future: asyncio.Future[None], left: int) -> None:
        self.future = future
        self.left = left


class Pending:
    """One entry waiting for the writer."""

    __slots__ = ("band", "data", "event", "waiter")

    def __init__(
        self,
        event: CollectorEvent[Any],
        band: int,
        data: bytes,
        waiter: Waiter | None,
    ) -> None:
        self.event = event
        self.band = band
        self.data = data
        self.waiter = waiter


class Writes(Replies):
    """Writing a batch and settling its entries; the state it shares with
    the writing loop is declared here."""

    _script: Any
    _reply_field: bytes
    _codec_field: bytes
    _producer: bytes
    idmp: bool

    async def _add(
        self, batch: list[Pending], number: int, again: bool
    ) -> tuple[bytes | None, list[Any]]:
        """Write a batch in one script call (:data:`ADD`), with ``XADD
        IDMP`` while :attr:`idmp`; return the epoch read just before it and
        the entry ids, errors, or ``None`` for entries the bounded streams
        had no room for. ``number`` is the batch's: written ``again`` after
        a failed write, the same batch has the same number."""
        assert self._client is not None
        if self._script is not None:
            keys = [self._keys.epoch, *self._keys.bands]
            args = add_args(
                self._config.maxsize,
                self._reply_field,
                self._codec_field,
                [(item.band, item.data) for item in batch],
                self._producer if self.idmp else b"",
                number,
                again,
            )
            try:
                epoch, idmp, *replies = await self._script(keys=keys, args=args)
                if not idmp and self.idmp:
                    self.idmp = False
                    self._log.debug(
                        "redis has no XADD IDMP; a batch written again after "
                        "a lost reply may add its entries twice"
                    )
            except rexc.NoPermissionError as exc:
                if self._config.maxsize:
                    raise  # the bound is kept by the script alone
                # A user without EVALSHA: what a pipeline of XADDs does too.
                self._log.warning(
                    "redis refused the batch script; writing with XADD",
                    error=str(exc),
                )
                self._script = None
                self.idmp = False  # a plain XADD per entry from now on
        if self._script is None:
            pipe = self._client.pipeline(transaction=False)
            pipe.get(self._keys.epoch)
            fields = {b"r": self._reply_field, b"c": self._codec_field}
            for item in batch:
                pipe.xadd(self._keys.bands[item.band], {b"d": item.data, **fields})
            epoch, *replies = await pipe.execute(raise_on_error=False)
            if isinstance(epoch, Exception):
                raise epoch
        if len(replies) != len(batch):
            raise RuntimeError(f"redis answered {len(replies)} of {len(batch)} writes")
        return epoch, replies

    def _accepted(self, item: Pending, entry_id: str) -> None:
        event = item.event
        payload = event.payload
        event_id = payload._eid = self._keys.event_id(item.band, entry_id)
        if not event.is_done():
            early = self._early.pop(event_id, None)
            if early is None:
                self.waiting[event_id] = event
            else:
                self._settle(event, early[1], early[2])
        waiter = item.waiter
        if waiter is not None and not waiter.future.done():
            waiter.left -= 1
            if not waiter.left:
                waiter.future.set_result(None)

    def _refuse(self, item: Pending, exc: BaseException) -> None:
        error = QueueClosed(f"Redis refused the event: {exc}")
        waiter = item.waiter
        if waiter is not None and not waiter.future.done():
            waiter.future.set_exception(error)
        else:
            self._answer(item.event, Error(error))
