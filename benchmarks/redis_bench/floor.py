"""The floor: the round trips of event-collector's Redis transport, written
by hand on redis-py's asyncio client (with hiredis), and nothing else.

The publisher writes each batch of events to the work stream in one round
trip, a call of a small script that adds an entry ``{d: <JSON payload>, r:
<reply stream>}`` per event and returns their ids, and one task reads the
answers from its own reply stream ``<stream>:reply:<id>``: each read is one
pipelined round trip that deletes the replies read before and blocks for
new ones (``XREAD COUNT 500 BLOCK 500``), as the transport's reader does.

A worker reads up to 100 entries at a time with ``XREADGROUP ... COUNT 100
BLOCK 100``, runs the trivial handler on each, and answers the batch in one
script call that adds one reply entry per publisher holding its answers
(``n``, then ``e0``, ``a0``, ``e1``, ``a1``...), then acknowledges and
deletes the batch's ids (``XACK``, ``XDEL``).

These are the transport's round trips since it writes its batches with
scripts; the floor before that (a pipeline of an ``XADD`` per event, and a
``MULTI`` of an ``XADD`` per answer, ``XACK`` and ``XDEL``) is in the git
history, and ``BENCHMARKS.md`` quotes both.

What the transport does on top (leases, reclaiming, counting the backlog,
codec checks, bounded streams, priority bands, reconnecting) is left out:
that is its price, which the comparison shows.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from ._drive import Client

__all__ = ["connect", "work"]

GROUP = "g"
READ_COUNT = 100  # entries a worker reads at once
READ_BLOCK_MS = 100
REPLY_COUNT = 500  # replies the publisher reads at once
REPLY_BLOCK_MS = 500

_encode = json.JSONEncoder(separators=(",", ":")).encode
_decode = json.loads  # of bytes

# KEYS[1]: the stream; ARGV[1]: the reply stream; then one payload per event.
ADD = """
local ids = {}
for i = 2, #ARGV do
  ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'd', ARGV[i], 'r', ARGV[1])
end
return ids
"""

# KEYS[1]: the stream, then the reply streams; ARGV[1]: the group; then per
# reply stream a count and its (entry id, answer) pairs; then the entry ids.
ANSWER = """
local i = 2
for k = 2, #KEYS do
  local n = tonumber(ARGV[i])
  local fields = {'n', n}
  for j = 0, n - 1 do
    fields[#fields + 1] = 'e' .. j
    fields[#fields + 1] = ARGV[i + 1 + 2 * j]
    fields[#fields + 1] = 'a' .. j
    fields[#fields + 1] = ARGV[i + 2 + 2 * j]
  end
  redis.call('XADD', KEYS[k], '*', unpack(fields))
  i = i + 1 + 2 * n
end
redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, i))
redis.call('XDEL', KEYS[1], unpack(ARGV, i))
return 1
"""


async def handle(value: Any) -> Any:
    """The trivial handler: the answer is the payload."""
    return value


async def _ensure_group(client: aioredis.Redis, stream: str) -> None:
    try:
        await client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def work(url: str, stream: str, consumer: str, ready: Callable[[], None]) -> None:
    """Serve ``stream`` as ``consumer`` until cancelled; call ``ready()``
    once the group exists."""
    client = aioredis.Redis.from_url(url)
    answer_all = client.register_script(ANSWER)
    try:
        await _ensure_group(client, stream)
        ready()
        while True:
            # redis-py types its replies loosely: the shape is RESP2's.
            reply: Any = await client.xreadgroup(
                GROUP, consumer, {stream: ">"}, count=READ_COUNT, block=READ_BLOCK_MS
            )
            if not reply:
                continue
            entries = reply[0][1]
            answers: dict[bytes, list[bytes]] = {}
            ids = []
            for entry_id, fields in entries:
                answer = await handle(_decode(fields[b"d"]))
                pairs = answers.setdefault(fields[b"r"], [])
                pairs += (entry_id, _encode(answer).encode())
                ids.append(entry_id)
            args: list[Any] = [GROUP]
            for pairs in answers.values():
                args.append(len(pairs) // 2)
                args += pairs
            args += ids
            await answer_all(keys=[stream, *answers], args=args)
    finally:
        await client.aclose()


class FloorClient:
    """The publisher: batches into the work stream, answers resolved from
    the reply stream by one reader task."""

    def __init__(self, url: str, stream: str) -> None:
        self._stream = stream
        self._reply = f"{stream}:reply:{secrets.token_hex(8)}".encode()
        self._client = aioredis.Redis.from_url(url)
        self._add = self._client.register_script(ADD)
        self._reader = aioredis.Redis.from_url(url)
        self._waiting: dict[bytes, asyncio.Future[Any]] = {}
        # Answers read before their send's round trip returned the id.
        self._early: dict[bytes, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        await _ensure_group(self._client, self._stream)
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def close(self) -> None:
        # The reader sees the flag when its blocking read returns: a task
        # cancelled in a read of redis-py's can miss the cancellation.
        self._closing = True
        if self._task is not None:
            await self._task
        await self._client.delete(self._reply)
        await self._client.aclose()
        await self._reader.aclose()

    async def send(
        self, payloads: list[dict[str, int]]
    ) -> Sequence[asyncio.Future[Any]]:
        """Write the batch in one round trip; a future per payload."""
        args: list[Any] = [self._reply, *(_encode(value) for value in payloads)]
        ids: list[bytes] = await self._add(keys=[self._stream], args=args)
        loop = asyncio.get_running_loop()
        futures = []
        for entry_id in ids:
            future = loop.create_future()
            if entry_id in self._early:
                future.set_result(self._early.pop(entry_id))
            else:
                self._waiting[entry_id] = future
            futures.append(future)
        return futures

    async def wait(self, future: asyncio.Future[Any]) -> Any:
        """The answer of one payload."""
        return await future

    async def _read(self) -> None:
        last: bytes = b"0-0"
        done: list[bytes] = []
        key = self._reply
        waiting, early = self._waiting, self._early
        while not self._closing:
            pipe = self._reader.pipeline(transaction=False)
            if done:
                pipe.xdel(key, *done)
            pipe.xread({key: last}, count=REPLY_COUNT, block=REPLY_BLOCK_MS)
            streams = (await pipe.execute())[-1]
            done = []
            for _name, entries in streams or ():
                for entry_id, fields in entries:
                    last = entry_id
                    done.append(entry_id)
                    for k in range(int(fields[b"n"])):
                        answered = fields[b"e%d" % k]
                        answer = _decode(fields[b"a%d" % k])
                        future = waiting.pop(answered, None)
                        if future is None:
                            early[answered] = answer
                        else:
                            future.set_result(answer)


@asynccontextmanager
async def connect(url: str, stream: str) -> AsyncIterator[Client[Any]]:
    """A started :class:`FloorClient` of ``stream``."""
    client = FloorClient(url, stream)
    await client.start()
    try:
        yield client
    finally:
        await client.close()
