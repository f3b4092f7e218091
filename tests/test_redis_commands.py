"""What the Redis transport sends: the commands it chooses by what the
server has (``XACKDEL`` on Redis 8.2 and later, ``XACK`` and ``XDEL``
before; ``XADD IDMP`` on Redis 8.6 and later, a plain ``XADD`` before),
its batch scripts and the reply entries they write, and the packing of
commands by hiredis.

Redis 7.0 is what Debian ships and what the suite runs on: there the
older commands must be chosen, and a worker wrongly told that ``XACKDEL``
exists must still acknowledge everything. The tests of the newer paths
themselves run only on a server that has them; CI runs this module again
with a newer ``redis-server`` first on ``PATH`` (``scripts/newer_redis.py``)
and ``EVENT_COLLECTOR_REQUIRE_XACKDEL=1`` and ``EVENT_COLLECTOR_REQUIRE_IDMP=1``,
which make those tests fail instead of skipping.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
from typing import Any

import pytest
import redis.exceptions

from event_collector import (
    Collector,
    CollectorQueue,
    Context,
    Ok,
    Payload,
    QueueClosed,
    QueueType,
)
from event_collector.redis import RedisTransport, acl_rules
from event_collector.redis._batches import ACK, ack_args, answers, has_command
from event_collector.redis._common import DEFAULT_BANDS, Keys
from event_collector.redis._packing import client_from_url
from redis_server import RedisServer, redis_server_module  # noqa: F401

GUARD = 20.0
REQUIRE_XACKDEL = os.environ.get("EVENT_COLLECTOR_REQUIRE_XACKDEL") == "1"
REQUIRE_IDMP = os.environ.get("EVENT_COLLECTOR_REQUIRE_IDMP") == "1"
_names = itertools.count(1)


class Events:
    """A logger that keeps what the transport tells it."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def _log(self, event: str, *args: Any, **fields: Any) -> None:
        self.lines.append(event)

    debug = info = warning = error = _log

    def said(self, text: str) -> int:
        return sum(1 for event in self.lines if text in event)


@pytest.fixture
def stream() -> str:
    return f"commands-{next(_names)}"


@pytest.fixture
def server(redis_server_module: RedisServer) -> RedisServer:  # noqa: F811
    return redis_server_module


async def echo(payload: Payload[Any], ctx: Context) -> Any:
    return payload.value


def worker(url: str, stream: str, log: Events | None = None) -> CollectorQueue:
    transport = RedisTransport(url, stream=stream, logger=log)
    return CollectorQueue(
        [Collector("echo", echo)],
        transport=transport,
        logging=False,
        autoscale=False,
        min_consumers=20,
        max_consumers=20,
    )


def server_has_xackdel(server: RedisServer) -> bool:
    client: Any = server.client()
    return bool(client.execute_command("COMMAND INFO", "XACKDEL")[0])


def server_has_idmp(server: RedisServer) -> bool:
    """Whether ``XADD`` takes ``IDMP`` here (its documented arguments)."""
    client: Any = server.client()
    return "IDMP" in repr(client.execute_command("COMMAND DOCS", "XADD"))


def need_idmp(server: RedisServer) -> None:
    """Skip on a server without ``XADD IDMP``; fail instead in CI's run on
    the newer server (``EVENT_COLLECTOR_REQUIRE_IDMP=1``)."""
    if not server_has_idmp(server):
        if REQUIRE_IDMP:
            pytest.fail("EVENT_COLLECTOR_REQUIRE_IDMP=1: XADD has no IDMP here")
        pytest.skip("XADD has no IDMP here (Redis 8.6 and later have it)")


def calls(server: RedisServer, command: str) -> int:
    """How often the server ran ``command`` (from scripts too)."""
    stats = server.client().info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def round_trip(url: str, stream: str, count: int) -> list[Any]:
    """Send ``count`` events at once through a publisher; their answers."""
    async with RedisTransport(url, stream=stream).publisher() as publisher:
        events = await publisher.send_many([{"n": i} for i in range(count)])
        async with asyncio.timeout(GUARD):
            results = [await event.wait() for event in events]
    return [r.first() for r in results]


def settled(server: RedisServer, stream: str) -> tuple[int, int]:
    client = server.client()
    return client.xlen(stream), client.xpending(stream, "event-collector")["pending"]


# -- feature detection -----------------------------------------------------------


async def test_has_command_asks_the_server(server: RedisServer) -> None:
    client = client_from_url(server.url)
    try:
        assert await has_command(client, "XACK")
        assert not await has_command(client, "NO-SUCH-COMMAND")
        assert await has_command(client, "XACKDEL") == server_has_xackdel(server)
    finally:
        await client.aclose()


async def test_has_command_says_no_when_the_user_may_not_look(
    server: RedisServer,
) -> None:
    url = server.acl_user("no-look", "secret", ["~*", "+get"])
    client = client_from_url(url)
    try:
        assert not await has_command(client, "XACK")
    finally:
        await client.aclose()


async def test_a_server_without_xackdel_gets_xack_and_xdel(
    server: RedisServer, stream: str
) -> None:
    if server_has_xackdel(server):
        pytest.skip("this redis-server has XACKDEL")
    before = calls(server, "xack"), calls(server, "xdel")
    queue = worker(server.url, stream)
    async with queue:
        transport = queue.transport
        assert isinstance(transport, RedisTransport)
        assert transport._worker is not None
        assert transport._worker.ackdel is False
        answers_ = await round_trip(server.url, stream, 30)
    assert answers_ == [Ok({"n": i}) for i in range(30)]
    assert calls(server, "xack") > before[0]
    assert calls(server, "xdel") > before[1]
    assert settled(server, stream) == (0, 0)


async def test_a_worker_wrongly_told_of_xackdel_acknowledges_all_the_same(
    server: RedisServer, stream: str
) -> None:
    """As if the server had said it has XACKDEL and then refused it (a
    user without ``+xackdel``, a failover to an older replica): the script
    acknowledges with XACK and XDEL, and the worker says so once and stops
    asking for XACKDEL."""
    if server_has_xackdel(server):
        pytest.skip("this redis-server has XACKDEL")
    log = Events()
    queue = worker(server.url, stream, log)
    async with queue:
        transport = queue.transport
        assert isinstance(transport, RedisTransport)
        assert transport._worker is not None
        transport._worker.ackdel = True
        first = await round_trip(server.url, stream, 10)
        assert transport._worker.ackdel is False
        second = await round_trip(server.url, stream, 10)
    assert first == second == [Ok({"n": i}) for i in range(10)]
    assert log.said("redis refused XACKDEL") == 1
    assert settled(server, stream) == (0, 0)


async def test_a_server_with_xackdel_gets_it(server: RedisServer, stream: str) -> None:
    """Runs only on Redis 8.2 or later (CI builds one for it)."""
    if not server_has_xackdel(server):
        if REQUIRE_XACKDEL:
            pytest.fail("EVENT_COLLECTOR_REQUIRE_XACKDEL=1: this redis-server lacks it")
        pytest.skip("this redis-server has no XACKDEL (Redis 8.2 and later have)")
    before = calls(server, "xackdel"), calls(server, "xack")
    queue = worker(server.url, stream)
    async with queue:
        transport = queue.transport
        assert isinstance(transport, RedisTransport)
        assert transport._worker is not None
        assert transport._worker.ackdel is True
        answered = await round_trip(server.url, stream, 30)
    assert answered == [Ok({"n": i}) for i in range(30)]
    assert calls(server, "xackdel") > before[0]
    assert calls(server, "xack") == before[1]
    assert settled(server, stream) == (0, 0)


class LostReply:
    """The publisher's batch script, run for real, whose first reply is
    lost: the call raises ``ConnectionError`` after Redis added the
    entries, and the writer writes the same batch again. Its second call
    waits (5 s at most) for the answers to the first write's entries, so
    that they come while the writer waits to try again, when nobody knows
    their ids yet: they must be kept for the ids the second write gets."""

    def __init__(self, sender: Any, answers_in: int) -> None:
        self._script = sender._script
        self._sender = sender
        self._answers_in = answers_in
        self.calls = 0
        self.kept = -1
        """Answers kept when the second call began (the test checks it)."""

    async def __call__(self, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == 1:
            await self._script(**kwargs)
            raise redis.exceptions.ConnectionError("reply lost (injected)")
        if self.calls == 2:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    # The reader keeps them in a plain dict: nothing to await.
                    while len(self._sender._early) < self._answers_in:  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
            self.kept = len(self._sender._early)
        return await self._script(**kwargs)


async def lost_reply_round(server: RedisServer, stream: str) -> tuple[Any, ...]:
    """20 events whose batch's first reply is lost; what the handler saw,
    the answers, the script that lost the reply, and the sender."""
    handled: list[int] = []

    async def count(payload: Payload[Any], ctx: Context) -> Any:
        handled.append(payload.value["n"])
        return payload.value

    queue = CollectorQueue(
        [Collector("count", count)],
        transport=RedisTransport(server.url, stream=stream),
        logging=False,
    )
    async with queue, RedisTransport(server.url, stream=stream).publisher() as pub:
        sender = pub._sender
        assert sender is not None
        await pub.send({"n": -1})  # the first batch: IDMP is found or not
        sender._script = lost = LostReply(sender, 20)
        events = await pub.send_many([{"n": i} for i in range(20)])
        async with asyncio.timeout(GUARD):
            results = [await event.wait() for event in events]
    return handled, [r.first() for r in results], lost, sender


async def test_a_server_with_idmp_adds_a_batch_written_again_once(
    server: RedisServer, stream: str
) -> None:
    """Runs only on Redis 8.6 or later (CI builds one for it). The second
    write of the batch is given the ids of the first, whose answers came
    before it and were kept: every event is handled once and answered."""
    need_idmp(server)
    handled, answered, lost, sender = await lost_reply_round(server, stream)
    assert sender.idmp is True
    assert (lost.calls, lost.kept) == (2, 20)
    assert sorted(handled) == [-1, *range(20)]
    assert answered == [Ok({"n": i}, "count") for i in range(20)]
    assert settled(server, stream) == (0, 0)


async def test_a_batch_written_again_with_idmp_is_not_refused_room(
    server: RedisServer, stream: str
) -> None:
    """A bounded stream that the first write filled: the second write finds
    its own entries there and is given their ids, instead of waiting for
    room that they already have (no worker runs until then)."""
    need_idmp(server)
    bounded = RedisTransport(server.url, stream=stream, maxsize=20)
    async with bounded.publisher() as pub:
        sender = pub._sender
        assert sender is not None
        sender._script = lost = LostReply(sender, 0)
        async with asyncio.timeout(GUARD):
            events = await pub.send_many([{"n": i} for i in range(20)])
        assert lost.calls == 2
        assert server.client().xlen(stream) == 20
        assert not sender._full
        async with worker(server.url, stream), asyncio.timeout(GUARD):
            results = [await event.wait() for event in events]
    assert [r.first() for r in results] == [Ok({"n": i}) for i in range(20)]
    assert settled(server, stream) == (0, 0)


async def test_a_publisher_closed_while_it_writes_again_answers_the_batch(
    server: RedisServer, stream: str
) -> None:
    """Every write of the batch fails (as if Redis were unreachable): the
    publisher's close answers the senders instead of leaving them waiting."""

    class Unreachable:
        calls = 0

        async def __call__(self, **kwargs: Any) -> Any:
            self.calls += 1
            raise redis.exceptions.ConnectionError("unreachable (injected)")

    async with RedisTransport(server.url, stream=stream).publisher() as pub:
        sender = pub._sender
        assert sender is not None
        sender._script = unreachable = Unreachable()
        sending = asyncio.ensure_future(pub.send_many([{"n": 1}, {"n": 2}]))
        async with asyncio.timeout(GUARD):
            while unreachable.calls < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    with pytest.raises(QueueClosed, match="may have been written"):
        async with asyncio.timeout(GUARD):
            await sending
    assert sender._batch == []


async def test_a_server_without_idmp_handles_a_batch_written_again_twice(
    server: RedisServer, stream: str
) -> None:
    """At least once: the second write adds the entries again, each is
    handled twice, and each event is answered once (by its second copy)."""
    if server_has_idmp(server):
        pytest.skip("XADD has IDMP here")
    handled, answered, lost, sender = await lost_reply_round(server, stream)
    assert sender.idmp is False
    assert (lost.calls, lost.kept) == (2, 20)
    assert sorted(handled) == [-1, *sorted([*range(20), *range(20)])]
    assert answered == [Ok({"n": i}, "count") for i in range(20)]


# -- the batch scripts -------------------------------------------------------------


async def test_the_ack_script_writes_one_reply_entry_per_publisher(
    server: RedisServer, stream: str
) -> None:
    client = client_from_url(server.url)
    try:
        keys = Keys.make(stream, "g", None, QueueType.FIFO, DEFAULT_BANDS)
        await client.xgroup_create(stream, "g", id="0", mkstream=True)
        ids = [await client.xadd(stream, {"d": str(i)}) for i in range(3)]
        await client.xreadgroup("g", "c", {stream: ">"})
        replies = {
            f"{stream}:reply:a".encode(): [b"e1", b"A1", b"e2", b"A2"],
            f"{stream}:reply:b".encode(): [b"e3", b"A3"],
        }
        names, args = ack_args(
            keys, b"json", 60_000, False, replies, [[i.decode() for i in ids]]
        )
        done = await client.register_script(ACK)(keys=names, args=args)
        assert done == 1
        (only_a,) = await client.xrange(f"{stream}:reply:a")
        assert answers(only_a[1]) == [(b"e1", b"A1"), (b"e2", b"A2")]
        (only_b,) = await client.xrange(f"{stream}:reply:b")
        assert answers(only_b[1]) == [(b"e3", b"A3")]
        assert 0 < await client.pttl(f"{stream}:reply:b") <= 60_000
        assert await client.xlen(stream) == 0
        assert (await client.xpending(stream, "g"))["pending"] == 0
    finally:
        await client.aclose()


async def test_a_publisher_reads_a_reply_entry_of_many_answers(
    server: RedisServer, stream: str
) -> None:
    """No worker: the answers are written by hand, three in one entry."""
    async with RedisTransport(server.url, stream=stream).publisher() as publisher:
        events = await publisher.send_many(["a", "b", "c"])
        sender = publisher._sender
        assert sender is not None
        fields: dict[Any, Any] = {b"c": b"json", b"n": 3}
        for k, event in enumerate(events):
            fields[b"e%d" % k] = event.payload.event_id
            fields[b"a%d" % k] = json.dumps([["ok", f"{event.payload.value}!"]])
        server.client().xadd(sender.reply_key, fields)
        async with asyncio.timeout(GUARD):
            results = [await event.wait() for event in events]
    assert [r.first() for r in results] == [Ok("a!"), Ok("b!"), Ok("c!")]


async def test_users_without_evalsha_write_without_scripts(
    server: RedisServer, stream: str
) -> None:
    """Rules written before the scripts (no ``+evalsha``): the publisher
    writes with XADD and the worker acknowledges in MULTI, each saying so
    once."""
    worker_rules = [r for r in acl_rules(stream) if r != "+evalsha"]
    publisher_rules = [
        r for r in acl_rules(stream, role="publisher") if r != "+evalsha"
    ]
    worker_url = server.acl_user("old-worker", "secret", worker_rules)
    publisher_url = server.acl_user("old-web", "secret", publisher_rules)
    worker_log, publisher_log = Events(), Events()
    async with worker(worker_url, stream, worker_log):
        transport = RedisTransport(publisher_url, stream=stream, logger=publisher_log)
        async with transport.publisher() as publisher:
            for _ in range(2):
                events = await publisher.send_many([{"n": i} for i in range(20)])
                async with asyncio.timeout(GUARD):
                    results = [await event.wait() for event in events]
                assert [r.first() for r in results] == [Ok({"n": i}) for i in range(20)]
    assert publisher_log.said("redis refused the batch script") == 1
    assert worker_log.said("redis refused the acknowledgement script") == 1
    assert settled(server, stream) == (0, 0)


def test_reply_entries_hold_one_answer_or_many() -> None:
    assert answers({b"c": b"json", b"e": b"1-0", b"a": b"[1]"}) == [(b"1-0", b"[1]")]
    many = {b"c": b"json", b"n": b"2", b"e0": b"1-0", b"a0": b"x", b"e1": b"2-0"}
    many[b"a1"] = b"y"
    assert answers(many) == [(b"1-0", b"x"), (b"2-0", b"y")]
    assert answers({b"n": b"nonsense"}) == []
    assert answers({b"c": b"json"}) == []


async def test_a_full_bounded_stream_takes_what_fits(
    server: RedisServer, stream: str
) -> None:
    """The batch script counts the backlog once and adds what fits; the
    rest waits for room (no worker here: nothing makes room)."""
    transport = RedisTransport(server.url, stream=stream, maxsize=5)
    async with transport.publisher() as publisher:
        for i in range(5):
            publisher.send_nowait(i)
        await asyncio.wait_for(publisher_written(publisher), GUARD)
        assert server.client().xlen(stream) == 5
        late = asyncio.ensure_future(publisher.send(5))
        await asyncio.sleep(0.3)
        assert not late.done()
        assert server.client().xlen(stream) == 5
        late.cancel()


async def publisher_written(publisher: Any) -> None:
    sender = publisher._sender
    await sender.wait_written(GUARD)


def test_keys_of_a_batch_are_the_bands_then_the_reply_streams() -> None:
    keys = Keys.make("s", "g", None, QueueType.PRIORITY, DEFAULT_BANDS)
    names, args = ack_args(
        keys, b"json", 1000, False, {b"s:reply:a": [b"1-0", b"x"]}, [["1-0"], [], []]
    )
    assert names == ["s:p50", "s:p100", "s:plast", b"s:reply:a"]
    assert args == ["g", 1000, b"json", 3, 0, 1, b"1-0", b"x", 1, "1-0", 0, 0]


# -- packing with hiredis ------------------------------------------------------------


async def test_commands_packed_by_hiredis_reach_the_server(
    server: RedisServer, stream: str
) -> None:
    client = client_from_url(server.url)
    try:
        connection_class = client.connection_pool.connection_class
        assert connection_class.__name__.startswith("HiredisPacking")
        await client.set(f"{stream}:k", 1.5)
        assert await client.get(f"{stream}:k") == b"1.5"
        # What hiredis does not take goes through redis-py's own packing.
        await client.set(f"{stream}:m", memoryview(b"view"))
        assert await client.get(f"{stream}:m") == b"view"
        with pytest.raises(redis.exceptions.DataError):
            await client.set(f"{stream}:b", True)
        # A command of two words, split as redis-py splits it.
        assert await client.execute_command("CONFIG GET", "maxmemory")
    finally:
        await client.aclose()
