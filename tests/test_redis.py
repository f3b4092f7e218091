"""The Redis transport's own promises, on a real ``redis-server``: what a
publisher and a worker see (ids, attempts, errors from another process,
refused input, bounds, priority bands, hand-back at shutdown).

The delivery-contract suite runs on this transport too (see
``transports.py``); the fault suite (killed workers, restarted servers) is
in ``test_redis_faults.py``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from conftest import Gate
from event_collector import (
    Collector,
    CollectorQueue,
    ConfigError,
    Context,
    Error,
    Ok,
    Payload,
    QueueClosed,
    QueueFull,
    QueueType,
    RemoteError,
    ResultList,
)
from event_collector.redis import MsgpackCodec, RedisPublisher, RedisTransport
from redis_server import RedisServer, redis_server_module  # noqa: F401

GUARD = 20.0
_names = itertools.count(1)


class Declined(Exception):
    """A handler's own exception, to check how its class is named remotely."""


@pytest.fixture
def stream() -> str:
    return f"orders-{next(_names)}"


@pytest.fixture
def url(redis_server_module: RedisServer) -> str:  # noqa: F811
    return redis_server_module.url


def transport(url: str, stream: str, **options: Any) -> RedisTransport:
    return RedisTransport(url, stream=stream, **options)


@pytest.fixture
async def publisher(url: str, stream: str) -> AsyncIterator[RedisPublisher]:
    async with transport(url, stream).publisher() as publisher:
        yield publisher


async def echo(payload: Payload[Any], ctx: Context) -> Any:
    if payload.value == "decline":
        raise Declined("not today")
    if payload.value == "value-error":
        raise ValueError("bad value")
    if payload.value == "huge":
        return "x" * 5000
    return {"value": payload.value, "id": payload.event_id, "attempt": payload.attempt}


def value_of(results: ResultList) -> Any:
    """The value of a lone collector's result (failing on an error)."""
    (result,) = results
    assert isinstance(result, Ok), result
    return result.value


def _names_of(client: Any, stream: str) -> list[str]:
    names = [c["name"] for c in client.xinfo_consumers(stream, "event-collector")]
    return [n.decode() if isinstance(n, bytes) else n for n in names]


def worker(
    url: str, stream: str, *collectors: Collector, **options: Any
) -> CollectorQueue:
    queue_options = {
        k: options.pop(k)
        for k in (
            "min_consumers",
            "max_consumers",
            "autoscale",
            "queue_type",
            "consumer_shutdown_timeout",
        )
        if k in options
    }
    return CollectorQueue(
        list(collectors) or [Collector("echo", echo)],
        transport=transport(url, stream, **options),
        logging=False,
        **queue_options,
    )


# -- round trips -------------------------------------------------------------


async def test_the_handler_sees_the_event_id_and_attempt(
    url: str, stream: str, publisher: RedisPublisher
) -> None:
    async with worker(url, stream):
        event = await publisher.send(7)
        (result,) = await event.wait(timeout=GUARD)
    assert isinstance(result, Ok)
    assert result.value == {"value": 7, "id": event.payload.event_id, "attempt": 1}
    # The id is the stream entry's: milliseconds, a dash, a sequence number.
    ms, _, seq = event.payload.event_id.partition("-")
    assert ms.isdigit()
    assert seq.isdigit()


async def test_a_workers_own_publisher_goes_through_redis(
    url: str, stream: str
) -> None:
    async with worker(url, stream) as queue:
        event = await queue.get_publisher().send(Payload(3, keys=["echo"]))
        (result,) = await event.wait(timeout=GUARD)
    assert isinstance(result, Ok)
    assert result.value["value"] == 3
    assert result.value["id"] == event.payload.event_id


async def test_events_sent_before_any_worker_are_handled_when_one_starts(
    url: str, stream: str, publisher: RedisPublisher
) -> None:
    events = await publisher.send_many(range(20))
    assert not any(e.is_done() for e in events)
    async with worker(url, stream):
        results = await asyncio.gather(*(e.wait(timeout=GUARD) for e in events))
    assert [value_of(r)["value"] for r in results] == list(range(20))


async def test_routing_by_key_crosses_the_wire(
    url: str, stream: str, publisher: RedisPublisher
) -> None:
    async def first(payload: Payload[Any], ctx: Context) -> str:
        return "first"

    async def second(payload: Payload[Any], ctx: Context) -> str:
        return "second"

    async with worker(url, stream, Collector("a", first), Collector("b", second)):
        only_b = await publisher.send(Payload(1, keys=["b"]))
        both = await publisher.send(2)
        assert await only_b.wait(timeout=GUARD) == [Ok("second")]
        assert await both.wait(timeout=GUARD) == [Ok("first"), Ok("second")]


# -- errors from the other side ----------------------------------------------------


async def test_a_handler_exception_is_a_remote_error_naming_its_class(
    url: str, stream: str, publisher: RedisPublisher
) -> None:
    async with worker(url, stream):
        builtin = await publisher.send("value-error")
        own = await publisher.send("decline")
        (b,) = await builtin.wait(timeout=GUARD)
        (o,) = await own.wait(timeout=GUARD)
    assert isinstance(b, Error)
    assert isinstance(b.err, RemoteError)
    assert b.err.type == "ValueError"
    assert str(b.err) == "bad value"
    assert isinstance(o, Error)
    assert isinstance(o.err, RemoteError)
    assert o.err.type == f"{__name__}.Declined"
    assert str(o.err) == "not today"


async def test_a_result_too_large_is_answered_with_an_error(
    url: str, stream: str, publisher: RedisPublisher
) -> None:
    async with worker(url, stream, max_payload_bytes=1000):
        event = await publisher.send("huge")
        (result,) = await event.wait(timeout=GUARD)
    assert isinstance(result, Error)
    assert "max_payload_bytes=1000" in str(result.err)


async def test_a_result_the_codec_cannot_carry_is_an_error(
    url: str, stream: str, publisher: RedisPublisher
) -> None:
    async def returns_a_set(payload: Payload[Any], ctx: Context) -> Any:
        return {1, 2}

    async with worker(url, stream, Collector("sets", returns_a_set)):
        event = await publisher.send(1)
        (result,) = await event.wait(timeout=GUARD)
    assert isinstance(result, Error)
    assert "cannot be sent back" in str(result.err)


# -- refused input -------------------------------------------------------------


async def test_payloads_the_codec_refuses_or_too_large_are_refused_at_send(
    url: str,
    stream: str,
    redis_server_module: RedisServer,  # noqa: F811
) -> None:
    async with transport(url, stream, max_payload_bytes=100).publisher() as pub:
        with pytest.raises(TypeError, match="json codec refuses"):
            await pub.send({1, 2})
        with pytest.raises(ValueError, match="over max_payload_bytes=100"):
            await pub.send("y" * 200)
        with pytest.raises(TypeError, match="value 2"):
            await pub.send_many([1, 2, {3}, 4])
        with pytest.raises(ValueError, match="value 1"):
            await pub.send_many([1, "y" * 200])
    # Nothing of the refused batch reached the stream.
    assert redis_server_module.client().xlen(stream) == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"visibility_timeout": 0}, "visibility_timeout"),
        ({"max_deliveries": 0}, "max_deliveries"),
        ({"max_payload_bytes": -1}, "max_payload_bytes"),
        ({"maxsize": -1}, "maxsize"),
        ({"priority_bands": (100, 50)}, "priority_bands"),
        ({"heartbeat_interval": 5.0, "visibility_timeout": 6.0}, "heartbeat_interval"),
        ({"stream": ""}, "stream"),
        ({"codec": object()}, "codec"),
    ],
)
def test_bad_settings_are_refused(options: dict[str, Any], message: str) -> None:
    options = {"stream": "s", **options}
    with pytest.raises(ConfigError, match=message):
        RedisTransport("redis://127.0.0.1:1/0", **options)


def test_a_bad_url_is_refused() -> None:
    with pytest.raises(ConfigError, match="url"):
        RedisTransport("http://127.0.0.1/", stream="s")


def test_lifo_is_refused() -> None:
    with pytest.raises(ConfigError, match="LIFO"):
        CollectorQueue(
            [Collector("echo", echo)],
            transport=RedisTransport("redis://127.0.0.1:1/0", stream="s"),
            queue_type=QueueType.LIFO,
        )
    with pytest.raises(ConfigError, match="LIFO"):
        RedisTransport("redis://127.0.0.1:1/0", stream="s").publisher(
            queue_type=QueueType.LIFO
        )


async def test_sending_on_a_closed_publisher_raises(url: str, stream: str) -> None:
    pub = transport(url, stream).publisher()
    with pytest.raises(QueueClosed, match="not started"):
        await pub.send(1)
    async with pub:
        pass
    with pytest.raises(QueueClosed):
        await pub.send(1)


# -- waiting -------------------------------------------------------------------


async def test_a_wait_that_times_out_gets_the_late_answer_later(
    url: str, stream: str, publisher: RedisPublisher
) -> None:
    event = await publisher.send(1)
    with pytest.raises(TimeoutError):
        await event.wait(timeout=0.05)
    async with worker(url, stream):
        (result,) = await event.wait(timeout=GUARD)
    assert isinstance(result, Ok)


async def test_publisher_wait_returns_once_everything_is_answered(
    url: str, stream: str, publisher: RedisPublisher
) -> None:
    events = await publisher.send_many(range(50))
    with pytest.raises(TimeoutError):
        await publisher.wait(timeout=0.05)
    async with worker(url, stream):
        await publisher.wait(timeout=GUARD)
        assert all(e.is_done() for e in events)
        assert publisher.waiting == 0


async def test_closing_a_publisher_answers_what_still_waits(
    url: str, stream: str
) -> None:
    async with transport(url, stream).publisher() as pub:
        event = await pub.send(1)
    (result,) = await event.wait(timeout=GUARD)
    assert isinstance(result, Error)
    assert "closed before the answer came" in str(result.err)


# -- bounds and bands ------------------------------------------------------------


async def test_maxsize_bounds_the_stream(
    url: str,
    stream: str,
    redis_server_module: RedisServer,  # noqa: F811
) -> None:
    async with transport(url, stream, maxsize=3).publisher() as pub:
        events = [await pub.send(i) for i in range(3)]
        blocked = asyncio.create_task(pub.send(3))
        await asyncio.sleep(0.3)
        assert not blocked.done()  # waits for room
        assert redis_server_module.client().xlen(stream) == 3
        with pytest.raises(QueueFull, match="maxsize=3"):
            pub.send_nowait(4)
        async with worker(url, stream):
            async with asyncio.timeout(GUARD):
                events.append(await blocked)
            results = await asyncio.gather(*(e.wait(timeout=GUARD) for e in events))
    assert [value_of(r)["value"] for r in results] == [0, 1, 2, 3]


async def test_the_queues_maxsize_and_the_transports_must_agree() -> None:
    with pytest.raises(ConfigError, match="maxsize"):
        CollectorQueue(
            [Collector("echo", echo)],
            transport=RedisTransport("redis://127.0.0.1:1/0", stream="s", maxsize=5),
            maxsize=7,
        )


async def test_priority_bands_are_read_highest_first(url: str, stream: str) -> None:
    gate = Gate()
    async with transport(url, stream).publisher(queue_type=QueueType.PRIORITY) as pub:
        low = await pub.send_many(["low-1", "low-2"], priority=200)
        normal = await pub.send("normal")  # the default priority, 100
        urgent = await pub.send("urgent", priority=10)
        queue = worker(
            url,
            stream,
            Collector("gate", gate),
            queue_type=QueueType.PRIORITY,
            autoscale=False,
            max_consumers=1,
        )
        async with queue:
            gate.open()
            for event in (*low, normal, urgent):
                await event.wait(timeout=GUARD)
    assert gate.order == ["urgent", "normal", "low-1", "low-2"]


# -- shutdown --------------------------------------------------------------------


async def test_a_stopping_worker_hands_back_what_it_has_not_started(
    url: str, stream: str, publisher: RedisPublisher
) -> None:
    gate = Gate()
    first = worker(
        url,
        stream,
        Collector("gate", gate),
        autoscale=False,
        max_consumers=2,
        consumer_shutdown_timeout=0.2,
    )
    await first.init_queue()
    events = await publisher.send_many(range(2))
    await gate.until_running(2)
    # Two more are fetched as soon as a consumer falls idle: none will be,
    # so they stay in the stream for the next worker.
    later = await publisher.send_many(range(2, 4))
    await first.shut_down_queue()  # cancels the two running handlers
    assert not any(e.is_done() for e in (*events, *later))

    async with worker(url, stream):
        results = await asyncio.gather(
            *(e.wait(timeout=GUARD) for e in (*events, *later))
        )
    values = [value_of(r) for r in results]
    assert [v["value"] for v in values] == [0, 1, 2, 3]
    # The cancelled ones count the delivery they had; the others were never
    # delivered before.
    assert [v["attempt"] for v in values] == [2, 2, 1, 1]


async def test_a_worker_leaves_the_group_when_it_holds_nothing(
    url: str,
    stream: str,
    redis_server_module: RedisServer,  # noqa: F811
) -> None:
    queue = worker(url, stream)
    async with queue:
        name = queue.transport.consumer  # type: ignore[attr-defined]
        client = redis_server_module.client()
        # A consumer joins the group with its first fetch that gets an entry.
        await (await queue.get_publisher().send(1)).wait(timeout=GUARD)
        assert name in _names_of(client, stream)
    assert name not in _names_of(client, stream)
    assert client.zscore(f"{stream}:workers", name) is None


# -- codecs ----------------------------------------------------------------------


async def test_msgpack_carries_bytes_both_ways(url: str, stream: str) -> None:
    async def double(payload: Payload[Any], ctx: Context) -> bytes:
        value: bytes = payload.value
        return value * 2

    options = {"codec": MsgpackCodec()}
    async with (
        worker(url, stream, Collector("double", double), **options),
        transport(url, stream, **options).publisher() as pub,
    ):
        event = await pub.send(b"\x00ab")
        assert await event.wait(timeout=GUARD) == [Ok(b"\x00ab\x00ab")]


async def test_an_entry_of_another_codec_is_dead_lettered_with_the_reason(
    url: str,
    stream: str,
    redis_server_module: RedisServer,  # noqa: F811
) -> None:
    async with (
        worker(url, stream),
        transport(url, stream, codec=MsgpackCodec()).publisher() as pub,
    ):
        event = await pub.send(1)
        (result,) = await event.wait(timeout=GUARD)
    assert isinstance(result, Error)
    assert "'msgpack' codec" in str(result.err)
    client: Any = redis_server_module.client()
    ((_, fields),) = client.xrange(f"{stream}:dead")
    reason = fields[b"dead:reason"].decode()
    assert "written with the 'msgpack' codec, read with 'json'" in reason


async def test_a_publisher_refuses_an_ordering_key(url: str) -> None:
    transport = RedisTransport(url, stream="flow-refused")
    async with transport.publisher() as publisher:
        with pytest.raises(ConfigError, match="in-memory transport"):
            await publisher.send(Payload(1, ordering_key="k"))
        with pytest.raises(ConfigError, match="in-memory transport"):
            await publisher.send_many([2, Payload(3, ordering_key="k")])
