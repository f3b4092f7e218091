"""The publisher's half that reads answers: one task blocks on the
publisher's reply stream and answers the waiting events, and what waits
is answered ``Error(EventLost)`` when Redis lost it (a base of
:class:`~event_collector.redis._sender.Sender`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import redis.exceptions as rexc

from .._log import Logger
from .._models import CollectorEvent
from ..data import Error, ResultList
from ..exceptions import EventLost
from ._batches import answers
from ._codec import JsonCodec, results_from_document
from ._common import RETRYABLE, Backoff, Client, Config, Keys, ensure_group

__all__ = ["Replies"]

_BATCH = 500  # replies per read, at most
_JSON = JsonCodec()


class Replies:
    """Reading the reply stream; the state it shares with the writer is
    declared here."""

    _config: Config
    _keys: Keys
    _log: Logger
    _clock: Callable[[], float]
    _client: Client | None
    _reader_client: Client | None
    _stopping: bool
    _suspect: bool
    _last: bytes
    _batch: list[Any]
    """The entries the writer is writing, until they are settled."""
    _early: dict[str, tuple[float, bytes | None, bytes]]
    _epoch: bytes | None
    reply_key: str
    waiting: dict[str, CollectorEvent[Any]]

    def _notify(self) -> None:
        raise NotImplementedError

    async def _read(self) -> None:
        assert self._reader_client is not None
        client = self._reader_client
        key = self.reply_key
        ttl_ms = int(self._config.reply_ttl * 1000)
        self._last = last = b"0-0"
        done: list[bytes] = []
        backoff = Backoff()
        refresh_every = max(0.5, self._config.reply_ttl / 3)
        refreshed = -refresh_every
        while not self._stopping:
            try:
                pipe = client.pipeline(transaction=False)
                if done:
                    pipe.xdel(key, *done)
                now = self._clock()
                if now - refreshed >= refresh_every:
                    pipe.pexpire(key, ttl_ms)
                pipe.xread({key: last}, count=_BATCH, block=500)
                replies = await pipe.execute()
                if now - refreshed >= refresh_every:
                    refreshed = now
                done = []
                backoff.reset()
            except RETRYABLE as exc:
                self._suspect = True
                self._log.warning("redis reply read failed; retrying", error=str(exc))
                await asyncio.sleep(backoff.next())
                if self._suspect and self._client is not None:
                    with contextlib.suppress(*RETRYABLE):
                        await self._check_epoch()
                continue
            except rexc.ResponseError as exc:
                self._log.error("redis refused the reply read", error=str(exc))
                await asyncio.sleep(backoff.next())
                continue
            streams = replies[-1]
            if not streams:
                continue
            for _name, entries in streams:
                for entry_id, fields in entries:
                    self._last = last = entry_id
                    done.append(entry_id)
                    self._resolve(fields)
            self._notify()

    def _resolve(self, fields: dict[bytes, bytes]) -> None:
        codec = fields.get(b"c")
        waiting = self.waiting
        for raw_id, data in answers(fields):
            entry_id = raw_id.decode()
            event = waiting.pop(entry_id, None)
            if event is None:
                # The answer came before the writer saw Redis accept the
                # entry (both replies can arrive in one turn of the loop, and
                # a batch written again after a lost reply is given, with
                # IDMP, the ids of its first write, answered meanwhile), or
                # it is a duplicate: kept for the writer to find until its
                # batch is settled.
                if self._batch:
                    self._keep_early(entry_id, codec, data)
                continue
            self._settle(event, codec, data)

    def _keep_early(self, entry_id: str, codec: bytes | None, data: bytes) -> None:
        early = self._early
        early[entry_id] = (self._clock(), codec, data)
        if len(early) > 10_000:
            horizon = self._clock() - 60.0
            for key in [k for k, (at, _, _) in early.items() if at < horizon]:
                del early[key]

    def _settle(
        self, event: CollectorEvent[Any], codec: bytes | None, data: bytes
    ) -> None:
        # A worker answers in the codec it read the entry with; one that
        # could not read it (another codec) answers in JSON, which every
        # publisher reads.
        decode = self._config.codec.decode
        if codec == b"json" and self._config.codec.name != "json":
            decode = _JSON.decode
        try:
            results = results_from_document(decode(data))
        except Exception as exc:
            results = ResultList(
                (Error(ValueError(f"the reply could not be decoded: {exc}")),)
            )
        if event._set_answer(results):
            event.finished_at = self._clock()

    # -- answering what waits ------------------------------------------------

    def _answer(self, event: CollectorEvent[Any], result: Error) -> None:
        if event._set_answer(ResultList((result,))):
            event.finished_at = self._clock()

    def _fail_waiting(self, exc: BaseException) -> None:
        waiting, self.waiting = self.waiting, {}
        for event in waiting.values():
            self._answer(event, Error(exc))
        self._notify()

    async def _check_epoch(self) -> None:
        """Read the epoch now (see :meth:`_observe_epoch`)."""
        assert self._client is not None
        await self._observe_epoch(await self._client.get(self._keys.epoch))

    async def _observe_epoch(self, epoch: bytes | None) -> None:
        """If Redis came back without the group (restarted empty), the
        events it had accepted are gone: answer them ``Error(EventLost)``
        instead of letting them wait for ever. ``epoch`` was read from the
        server; ``None`` when it has none (the group is made again)."""
        assert self._client is not None
        if epoch is None:
            await ensure_group(self._client, self._keys)
            epoch = await self._client.get(self._keys.epoch)
        self._suspect = False
        if epoch != self._epoch:
            self._epoch = epoch
            lost = len(self.waiting)
            if lost:
                self._log.error(
                    "redis lost the events it had accepted (it restarted empty)",
                    events=lost,
                )
            self._fail_waiting(
                EventLost("Redis restarted without the event; it may not have run")
            )
