"""The publisher's half that reads answers: one task blocks on the
publisher's reply stream and answers the waiting events (a base of
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
from ._codec import JsonCodec, results_from_document
from ._common import RETRYABLE, Backoff, Client, Config

__all__ = ["Replies"]

_BATCH = 500  # replies per read, at most
_JSON = JsonCodec()


class Replies:
    """Reading the reply stream; the state it shares with the writer is
    declared here."""

    _config: Config
    _log: Logger
    _clock: Callable[[], float]
    _client: Client | None
    _reader_client: Client | None
    _stopping: bool
    _suspect: bool
    _last: bytes
    _queue_in_flight: int
    _early: dict[str, tuple[float, dict[bytes, bytes]]]
    reply_key: str
    waiting: dict[str, CollectorEvent[Any]]

    def _notify(self) -> None:
        raise NotImplementedError

    async def _check_epoch(self) -> None:
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
        raw_id = fields.get(b"e")
        if raw_id is None:
            return
        entry_id = raw_id.decode()
        event = self.waiting.pop(entry_id, None)
        if event is None:
            # The answer came before the writer saw Redis accept the entry
            # (both replies can arrive in one turn of the loop), or it is a
            # duplicate: kept a while for the writer to find.
            if self._queue_in_flight:
                self._keep_early(entry_id, fields)
            return
        self._settle(event, fields)

    def _keep_early(self, entry_id: str, fields: dict[bytes, bytes]) -> None:
        early = self._early
        early[entry_id] = (self._clock(), fields)
        if len(early) > 10_000:
            horizon = self._clock() - 60.0
            for key in [k for k, (at, _) in early.items() if at < horizon]:
                del early[key]

    def _settle(self, event: CollectorEvent[Any], fields: dict[bytes, bytes]) -> None:
        # A worker answers in the codec it read the entry with; one that
        # could not read it (another codec) answers in JSON, which every
        # publisher reads.
        codec = fields.get(b"c")
        decode = self._config.codec.decode
        if codec == b"json" and self._config.codec.name != "json":
            decode = _JSON.decode
        try:
            results = results_from_document(decode(fields.get(b"a", b"")))
        except Exception as exc:
            results = ResultList(
                (Error(ValueError(f"the reply could not be decoded: {exc}")),)
            )
        if event._set_answer(results):
            event.finished_at = self._clock()
