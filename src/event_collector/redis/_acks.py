"""A worker's answers: each answered event's reply to its publisher and its
acknowledgement, written together, in batches, by one task (a base of
:class:`~event_collector.redis._worker.Worker`).

Answers go through the :data:`~event_collector.redis._batches.ACK` script;
dead letters, and every answer when the server refuses the script (an ACL
without ``EVALSHA``), through a ``MULTI`` transaction instead.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import redis.exceptions as rexc

from ._batches import ACK, ack_args
from ._common import RETRYABLE, Backoff, dead_letter_commands
from ._inbox import Delivered
from ._upkeep import Upkeep

__all__ = ["Acks"]

_ACK_BATCH = 500  # answers per round trip, at most


class Acks(Upkeep):
    """The acknowledging half of a worker; the state it shares is declared
    here and on :class:`~event_collector.redis._report.Report`."""

    _acks: deque[tuple[Any, ...]]
    _acked: asyncio.Event
    _wake_acker: asyncio.Event
    _codec_name: bytes
    ackdel = False
    """Whether answers are acknowledged with ``XACKDEL`` (Redis 8.2 and
    later, found at start) rather than ``XACK`` and ``XDEL``."""
    _ack_script: Any = None

    def _dead_letter(
        self,
        band: int,
        entry_id: str,
        fields: dict[bytes, bytes],
        reason: str,
        attempts: int,
        last_error: str | None,
    ) -> None:
        self._acks.append(
            ("dead", band, entry_id, fields, reason, attempts, last_error)
        )
        self._wake_acker.set()

    async def _ack(self) -> None:
        assert self._client is not None
        if self._ack_script is None:
            self._ack_script = self._client.register_script(ACK)
        backoff = Backoff()
        while True:
            while not self._acks:
                self._acked.set()
                self._wake_acker.clear()
                await self._wake_acker.wait()
            batch = [
                self._acks.popleft() for _ in range(min(_ACK_BATCH, len(self._acks)))
            ]
            answered = [item for item in batch if item[0] == "ack"]
            dead = [item for item in batch if item[0] != "ack"]
            while True:
                try:
                    if answered:
                        await self._write_answers(answered)
                    if dead:
                        await self._write_multi(dead)
                    backoff.reset()
                    break
                except RETRYABLE as exc:
                    self._log.warning(
                        "redis acknowledgement failed; retrying", error=str(exc)
                    )
                    await asyncio.sleep(backoff.next())
            for item in answered:
                self.held.pop(item[1].entry_id, None)
            for item in dead:
                self.held.pop(item[2], None)
            self.handled += len(answered)
            self.dead_lettered += len(dead)

    async def _write_answers(self, items: list[tuple[Any, ...]]) -> None:
        """Answers and acknowledgements of a batch, in one script call."""
        if self._ack_script is False:
            await self._write_multi(items)
            return
        replies: dict[bytes, list[bytes]] = {}
        by_band: list[list[str]] = [[] for _ in self._keys.bands]
        for _, event, answer in items:
            assert isinstance(event, Delivered)
            if event.reply_to:
                pairs = replies.get(event.reply_to)
                if pairs is None:
                    pairs = replies[event.reply_to] = []
                pairs += (event.payload.event_id.encode(), answer)
            by_band[event.band].append(event.entry_id)
        keys, args = ack_args(
            self._keys,
            self._codec_name,
            int(self._config.reply_ttl * 1000),
            self.ackdel,
            replies,
            by_band,
        )
        try:
            done = await self._ack_script(keys=keys, args=args)
        except rexc.ResponseError as exc:
            # Refused (an ACL without EVALSHA): MULTI does the same work.
            self._log.warning(
                "redis refused the acknowledgement script; using MULTI",
                error=str(exc),
            )
            self._ack_script = False
            await self._write_multi(items)
            return
        if self.ackdel and done == 0:
            self.ackdel = False
            self._log.warning("redis refused XACKDEL; acknowledging with XACK and XDEL")

    async def _write_multi(self, items: list[tuple[Any, ...]]) -> None:
        """Answers, dead letters and acknowledgements in one ``MULTI``."""
        assert self._client is not None
        keys = self._keys
        ttl_ms = int(self._config.reply_ttl * 1000)
        pipe = self._client.pipeline(transaction=True)
        by_band: dict[int, list[str]] = {}
        replied: set[bytes] = set()
        for item in items:
            if item[0] == "ack":
                event: Delivered = item[1]
                if event.reply_to:
                    pipe.xadd(
                        event.reply_to,
                        {
                            b"e": event.payload.event_id.encode(),
                            b"a": item[2],
                            b"c": self._codec_name,
                        },
                        maxlen=100_000,
                        approximate=True,
                    )
                    replied.add(event.reply_to)
                by_band.setdefault(event.band, []).append(event.entry_id)
            else:
                dead_letter_commands(pipe, keys, self._config.codec, item, ttl_ms)
                by_band.setdefault(item[1], []).append(item[2])
        for reply_to in replied:  # once per publisher and batch
            pipe.pexpire(reply_to, ttl_ms)
        for band, ids in by_band.items():
            pipe.xack(keys.bands[band], keys.group, *ids)
            pipe.xdel(keys.bands[band], *ids)
        await pipe.execute(raise_on_error=False)
