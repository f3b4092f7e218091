"""What both sides of the Redis transport share: the key names, the
settings, the backoff between reconnects and the errors that mean "try
again"."""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import os
import random
import secrets
import socket
from collections.abc import Sequence
from typing import Any

import redis.exceptions as rexc

from .._models import DEFAULT_PRIORITY, QueueType
from ..data import Error, ResultList
from ..exceptions import DeliveryExhausted
from ._codec import Codec, JsonCodec, answer_document
from ._packing import client_from_url

__all__ = [
    "RETRYABLE",
    "Backoff",
    "Client",
    "Config",
    "Keys",
    "close_clients",
    "consumer_name",
    "dead_letter_commands",
    "ensure_group",
    "is_nogroup",
    "stop_tasks",
]

Client = Any
"""redis-py's asyncio client. Typed loosely on purpose: redis-py's own
annotations of command replies change from one release to the next (bytes
or str, lists or tuples), and what this package reads of them is checked
where it is read."""

RETRYABLE: tuple[type[BaseException], ...] = (
    rexc.ConnectionError,  # BusyLoadingError too: Redis is loading its AOF
    rexc.TimeoutError,
    OSError,
    asyncio.TimeoutError,
)
"""Errors after which a loop waits (:class:`Backoff`) and tries again."""

DEFAULT_BANDS: tuple[int, ...] = (DEFAULT_PRIORITY // 2, DEFAULT_PRIORITY)
"""The upper bounds of the default priority bands: urgent (priority <= 50),
normal (<= 100, where the default priority falls) and low (the rest)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Keys:
    """The Redis keys of one work stream; all but the stream itself and a
    dead-letter stream given by hand start with ``<stream>:``, so that one
    ACL key pattern ``<stream>*`` covers them."""

    stream: str
    group: str
    dead: str
    bands: tuple[str, ...]
    """The work streams, highest priority first: ``(stream,)`` for FIFO."""
    bounds: tuple[int, ...]
    """The upper priority bound of each band but the last."""

    @classmethod
    def make(
        cls,
        stream: str,
        group: str,
        dead: str | None,
        queue_type: QueueType,
        bands: Sequence[int],
    ) -> Keys:
        if queue_type is QueueType.PRIORITY:
            bounds = tuple(bands)
            names = (*(f"{stream}:p{b}" for b in bounds), f"{stream}:plast")
        else:
            bounds, names = (), (stream,)
        return cls(stream, group, dead or f"{stream}:dead", names, bounds)

    def band(self, priority: int) -> int:
        """The index of the band a priority falls in."""
        if not self.bounds:
            return 0
        return bisect.bisect_left(self.bounds, priority)

    def event_id(self, band: int, entry_id: str) -> str:
        """The id an event is known by: its entry's id; on several bands
        (priority), prefixed by the band's key, since two bands can hand out
        the same entry id."""
        if len(self.bands) == 1:
            return entry_id
        return f"{self.bands[band]}/{entry_id}"

    def reply(self, owner: str) -> str:
        """The reply stream of one publisher."""
        return f"{self.stream}:reply:{owner}"

    @property
    def epoch(self) -> str:
        """A random token set when the group is created: a publisher that
        sees it change knows Redis lost what it had accepted."""
        return f"{self.stream}:epoch"

    @property
    def workers(self) -> str:
        """A sorted set of live workers, scored by when they last reported."""
        return f"{self.stream}:workers"

    def worker(self, name: str) -> str:
        """The hash of one worker's figures (it expires with the worker)."""
        return f"{self.stream}:worker:{name}"


@dataclasses.dataclass(frozen=True, slots=True)
class Config:
    """A transport's checked settings, shared by its sides."""

    url: str
    keys: Keys
    codec: Codec
    visibility_timeout: float
    max_deliveries: int
    max_payload_bytes: int
    maxsize: int
    reply_ttl: float
    heartbeat_interval: float
    reclaim_interval: float
    client_options: dict[str, Any]

    def client(self, **extra: Any) -> Client:
        """A new asyncio client with its own connection pool."""
        options = {
            "socket_connect_timeout": 2.0,
            "socket_keepalive": True,
            "health_check_interval": 0,
            **self.client_options,
            **extra,
        }
        return client_from_url(self.url, **options)


class Backoff:
    """Seconds to wait before the next try: doubling from ``first`` up to
    ``cap``, with jitter, so that a fleet does not reconnect in step."""

    __slots__ = ("_cap", "_first", "_next")

    def __init__(self, first: float = 0.05, cap: float = 1.0) -> None:
        self._first = first
        self._cap = cap
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self._cap, delay * 2)
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self._next = self._first


async def stop_tasks(tasks: list[asyncio.Task[None]], *, grace: float) -> None:
    """Let loops that watch a stop flag end on their own for ``grace``
    seconds, then cancel them. A task blocked in a read on a Redis
    connection may not see a cancellation at once (redis-py can swallow
    it while re-entering a blocking read), so nothing here waits on a
    cancelled task for long."""
    if not tasks:
        return
    _, late = await asyncio.wait(tasks, timeout=grace)
    for task in late:
        task.cancel()
    if late:
        await asyncio.wait(late, timeout=grace)
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: a failure was logged where it happened


async def close_clients(*clients: Client | None) -> None:
    """Close clients and their connection pools (``None`` is skipped)."""
    for client in clients:
        if client is not None:
            await client.aclose()


def consumer_name() -> str:
    """A name for this process in the consumer group: host, pid and a
    random part (a restarted process with the same pid is a new
    consumer)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def is_nogroup(exc: BaseException) -> bool:
    """Whether Redis said the stream or the consumer group does not exist."""
    return isinstance(exc, rexc.ResponseError) and str(exc).startswith("NOGROUP")


async def ensure_group(client: Client, keys: Keys) -> bool:
    """Create the consumer group on every band (with the stream, reading
    from its start) unless it exists, and the epoch token with it; return
    whether a group was created."""
    created = False
    for band in keys.bands:
        try:
            await client.xgroup_create(band, keys.group, id="0", mkstream=True)
            created = True
        except rexc.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
    if created:
        await client.set(keys.epoch, secrets.token_hex(8))
        return True
    # The group was there. Its creator sets the epoch just after creating
    # it: give it a moment before setting one here, so that two processes
    # starting together do not read two different tokens.
    for _ in range(20):
        if await client.get(keys.epoch) is not None:
            return False
        await asyncio.sleep(0.05)
    await client.set(keys.epoch, secrets.token_hex(8), nx=True)
    return False


_JSON = JsonCodec()


def dead_letter_commands(
    pipe: Any, keys: Keys, codec: Codec, item: tuple[Any, ...], ttl_ms: int
) -> None:
    """Queue on ``pipe`` the moving of one entry to the dead-letter stream
    (its fields, with why) and its answer to its publisher, if it waits."""
    _, band, entry_id, fields, reason, attempts, last_error = item
    dead = dict(fields)
    dead[b"dead:reason"] = reason.encode()
    dead[b"dead:attempts"] = str(attempts).encode()
    dead[b"dead:entry"] = entry_id.encode()
    dead[b"dead:stream"] = keys.bands[band].encode()
    if last_error:
        dead[b"dead:error"] = last_error.encode()
    pipe.xadd(keys.dead, dead)
    reply_to = fields.get(b"r")
    if reply_to:
        if attempts and reason.startswith("delivered"):
            err: BaseException = DeliveryExhausted(attempts)
        else:
            err = ValueError(reason)
        # In JSON, which every publisher reads: the entry may have been
        # written with a codec this worker does not read.
        answer = _JSON.encode(answer_document(ResultList((Error(err),))))
        pipe.xadd(
            reply_to,
            {
                b"e": keys.event_id(band, entry_id).encode(),
                b"a": answer,
                b"c": b"json",
            },
            maxlen=100_000,
            approximate=True,
        )
        pipe.pexpire(reply_to, ttl_ms)
