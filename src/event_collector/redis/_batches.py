"""The two round trips that carry many events at once, each one script
call: a publisher's batch of new entries, and a worker's batch of answers
with their acknowledgements.

One call instead of a pipeline of a command per event: the client packs
one command and reads one reply, where a pipeline costs redis-py a reply
to parse per command (and ``MULTI`` one more per command, ``QUEUED``);
those replies were most of the client-side cost of an event on the
``redis`` benchmark (``python -m benchmarks --only redis``). A worker's
answers to one publisher go in one reply entry, and the entries a script
adds wake a blocked worker once, with all of them. Re-run that benchmark
before going back to pipelines.

A script is atomic, like the ``MULTI`` it replaces: an answer is written
with its acknowledgement or not at all. Every command in it is a
``redis.pcall``, so that one refused command (a group lost with a Redis
restart) does not stop the others; the answers are written before the
acknowledgements, so that a failure between them leaves an event to be
redelivered rather than acknowledged without an answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import redis.exceptions as rexc

from ._common import Client, Keys

__all__ = ["ACK", "ADD", "ack_args", "add_args", "answers", "has_command"]

ADD = """
local limit = tonumber(ARGV[1])
local reply, codec, pid, batch = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local room = -1
if limit > 0 and not (pid ~= '' and ARGV[6] == '1') then
  local total = 0
  for i = 2, #KEYS do total = total + redis.call('XLEN', KEYS[i]) end
  room = math.max(0, limit - total)
end
local out = {redis.call('GET', KEYS[1]), 1}
for i = 7, #ARGV, 2 do
  if room == 0 then
    out[#out + 1] = false
  else
    local key = KEYS[1 + tonumber(ARGV[i])]
    local id = nil
    if pid ~= '' then
      local iid = batch .. ':' .. ((i - 7) / 2)
      id = redis.pcall('XADD', key, 'IDMP', pid, iid, '*',
        'd', ARGV[i + 1], 'r', reply, 'c', codec)
      if type(id) == 'table' and id.err then id = nil end
    end
    if id == nil then
      id = redis.pcall('XADD', key, '*', 'd', ARGV[i + 1], 'r', reply, 'c', codec)
      if pid ~= '' and not (type(id) == 'table' and id.err) then
        -- A server before 8.6 reads IDMP as the entry id: a plain XADD did
        -- what that one could not, so the server lacks IDMP.
        pid = ''
        out[2] = 0
      end
    end
    if type(id) == 'table' and id.err then
      -- In a script, Redis's refusal does not name the command: say it.
      local code, text = string.match(id.err, '^(%S+) (.*)$')
      id = {err = (code or 'ERR') .. ' XADD ' .. key .. ': ' .. (text or id.err)}
    end
    out[#out + 1] = id
    if room > 0 then room = room - 1 end
  end
end
return out
"""
"""Adds a publisher's entries. KEYS: the epoch token, then every band.
ARGV: ``maxsize`` (0 for none), the reply stream, the codec's name, the
producer id for ``XADD IDMP`` (empty for a plain ``XADD``), the batch's
number (each entry's idempotency id is that number and the entry's index),
``1`` when the batch is written again after a failed write (else ``0``),
then per entry its band (1 for the first) and its encoded payload.

A batch written again with ``IDMP`` is not held to ``maxsize``: the
entries its first write added count in the backlog already, and would be
refused room that they do not need. Those the first write did not add go
past the bound then, by one batch at most.

Returns the epoch token; 0 when ``IDMP`` was asked for and the server has
none (the entries were added without it), else 1; then per entry its id,
an error, or nil when the bounded streams were full (undelivered and
pending entries: acknowledged ones are deleted). With ``IDMP``, an entry
the server had added already under the same producer and idempotency id
(a batch written again after its reply was lost) is not added twice: its
first id is returned."""

ACK = """
local group, ttl, codec = ARGV[1], ARGV[2], ARGV[3]
local bands, ackdel = tonumber(ARGV[4]), ARGV[5] == '1'
local ok = 1
local i = 6
for k = bands + 1, #KEYS do
  local n = tonumber(ARGV[i])
  local fields
  if n == 1 then
    fields = {'c', codec, 'e', ARGV[i + 1], 'a', ARGV[i + 2]}
  else
    fields = {'c', codec, 'n', n}
    for j = 0, n - 1 do
      fields[#fields + 1] = 'e' .. j
      fields[#fields + 1] = ARGV[i + 1 + 2 * j]
      fields[#fields + 1] = 'a' .. j
      fields[#fields + 1] = ARGV[i + 2 + 2 * j]
    end
  end
  redis.pcall('XADD', KEYS[k], 'MAXLEN', '~', 100000, '*', unpack(fields))
  redis.pcall('PEXPIRE', KEYS[k], ttl)
  i = i + 1 + 2 * n
end
for b = 1, bands do
  local n = tonumber(ARGV[i])
  if n > 0 then
    local done = false
    if ackdel then
      local r = redis.pcall('XACKDEL', KEYS[b], group, 'IDS', n,
        unpack(ARGV, i + 1, i + n))
      done = type(r) ~= 'table' or r.err == nil
      if not done then ok = 0 end
    end
    if not done then
      redis.pcall('XACK', KEYS[b], group, unpack(ARGV, i + 1, i + n))
      redis.pcall('XDEL', KEYS[b], unpack(ARGV, i + 1, i + n))
    end
  end
  i = i + 1 + n
end
return ok
"""
"""Answers and acknowledges a worker's batch. KEYS: every band, then the
reply stream of each publisher answered. ARGV: the group, the reply
streams' time to live (ms), the codec's name, how many KEYS are bands,
``1`` to acknowledge with ``XACKDEL`` (Redis 8.2 and later), then per
reply stream a count and that many (event id, answer) pairs, then per band
a count and that many entry ids. Returns 0 when ``XACKDEL`` was asked for
and refused (``XACK`` and ``XDEL`` did its work), else 1."""


def add_args(
    maxsize: int,
    reply_key: bytes,
    codec: bytes,
    entries: Iterable[tuple[int, bytes]],
    producer: bytes = b"",
    batch: int = 0,
    again: bool = False,
) -> list[Any]:
    """The ARGV of :data:`ADD` for ``entries``, (band index, encoded
    payload) pairs; ``producer`` (empty for none) and ``batch`` make the
    entries' ``IDMP`` ids; ``again``: the batch's write failed before."""
    args: list[Any] = [maxsize, reply_key, codec, producer, batch, int(again)]
    for band, data in entries:
        args += (band + 1, data)
    return args


def ack_args(
    keys: Keys,
    codec: bytes,
    ttl_ms: int,
    ackdel: bool,
    replies: dict[bytes, list[bytes]],
    acks: Sequence[list[str]],
) -> tuple[list[Any], list[Any]]:
    """The KEYS and ARGV of :data:`ACK`: ``replies`` maps each reply
    stream to its (event id, answer) pairs, flattened; ``acks`` holds the
    entry ids to acknowledge, per band."""
    args: list[Any] = [keys.group, ttl_ms, codec, len(keys.bands), int(ackdel)]
    for pairs in replies.values():
        args.append(len(pairs) // 2)
        args += pairs
    for ids in acks:
        args.append(len(ids))
        args += ids
    return [*keys.bands, *replies], args


def answers(fields: dict[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    """The (event id, encoded answer) pairs of one reply entry: one
    (fields ``e`` and ``a``) or ``n`` of them (``e0``, ``a0``, ...)."""
    single = fields.get(b"e")
    if single is not None:
        return [(single, fields.get(b"a", b""))]
    try:
        count = int(fields.get(b"n", b"0"))
    except ValueError:
        return []
    found = []
    for k in range(count):
        event_id = fields.get(b"e%d" % k)
        if event_id is not None:
            found.append((event_id, fields.get(b"a%d" % k, b"")))
    return found


async def has_command(client: Client, name: str) -> bool:
    """Whether the server knows command ``name`` (``COMMAND INFO`` answers
    nothing for one it does not know). A user whose ACL does not allow the
    look is answered no: the older commands do the work then."""
    try:
        info = await client.execute_command("COMMAND INFO", name)
    except rexc.ResponseError:
        return False
    return bool(info) and info[0] is not None
