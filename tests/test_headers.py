"""What goes with an event and what comes back with it: the headers a
sender gives (``Payload.headers``, ``send(..., headers=)``) and the
collector each result names (``result.collector``).

Most tests run once per transport (see ``transports.py``); the Redis
publisher's own sends and the Redis wire format are tested against a
server started for this module.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from conftest import Gate, LoopErrors, is_cancelled
from event_collector import (
    BatchCollector,
    Collector,
    CollectorQueue,
    Context,
    Delivery,
    Error,
    Ok,
    Payload,
    RemoteError,
    Retry,
    Superseded,
)
from event_collector.redis import JsonCodec, RedisPublisher, RedisTransport
from redis_server import RedisServer, redis_server_module  # noqa: F401

# The hook and the fixture run every test here once per transport.
from transports import (  # noqa: F401
    GUARD,
    _on_transport,
    pytest_generate_tests,
    queue_of,
    results_of,
    value_of,
)

# A test of a value that no transport carries runs once.
NO_TRANSPORT = pytest.mark.transports("memory")

_streams = itertools.count(1)

# Flow control (concurrency, retry, batches) holds in one process only: a
# broker's transport refuses it at construction.
_IN_MEMORY_FLOW = pytest.mark.transports("memory")


class Boom(Exception):
    """A handler's failure."""


async def _seen(payload: Payload[Any], ctx: Context) -> dict[str, Any]:
    """What the handler sees, in a form every transport carries back."""
    return {
        "value": payload.value,
        "headers": dict(payload.headers),
        "id": payload.event_id,
    }


async def _echo(payload: Payload[Any], ctx: Context) -> Any:
    return payload.value


async def _raise(payload: Payload[Any], ctx: Context) -> Any:
    raise Boom(f"refused {payload.value}")


async def _hang(payload: Payload[Any], ctx: Context) -> Any:
    await asyncio.Event().wait()


# -- headers through the queue -------------------------------------------------


async def test_a_payloads_headers_reach_the_handler(loop_guard: LoopErrors) -> None:
    headers = {"traceparent": "00-4bf92f-00f067-01", "tenant": "acme"}
    async with queue_of(Collector("c", _seen)) as queue:
        event = await queue.get_publisher().send(Payload(1, headers=headers))
        seen = value_of(await results_of(event))
    assert seen["value"] == 1
    assert seen["headers"] == headers
    assert isinstance(seen["id"], str)
    assert seen["id"]
    assert seen["id"] == event.payload.event_id


async def test_the_headers_of_send_reach_the_handler(loop_guard: LoopErrors) -> None:
    async with queue_of(Collector("c", _seen)) as queue:
        publisher = queue.get_publisher()
        plain = await publisher.send("plain", headers={"request-id": "r-1"})
        nowait = publisher.send_nowait("nowait", headers={"request-id": "r-2"})
        first, second = (
            value_of(await results_of(plain)),
            value_of(await results_of(nowait)),
        )
    assert first["headers"] == {"request-id": "r-1"}
    assert second["headers"] == {"request-id": "r-2"}
    assert first["id"]
    assert second["id"]
    assert first["id"] != second["id"]


async def test_send_threadsafe_carries_headers(loop_guard: LoopErrors) -> None:
    async with queue_of(Collector("c", _seen)) as queue:
        publisher = queue.get_publisher()

        def from_a_thread() -> Any:
            future = publisher.send_threadsafe("t", headers={"origin": "mqtt"})
            return future.result(GUARD)

        results = await asyncio.to_thread(from_a_thread)
    seen = value_of(results)
    assert seen["value"] == "t"
    assert seen["headers"] == {"origin": "mqtt"}
    assert seen["id"]


async def test_the_headers_of_send_are_merged_over_the_payloads(
    loop_guard: LoopErrors,
) -> None:
    payload = Payload("p", headers={"a": "payload", "b": "payload"})
    async with queue_of(Collector("c", _seen)) as queue:
        event = await queue.get_publisher().send(
            payload, headers={"b": "send", "c": "send"}
        )
        seen = value_of(await results_of(event))
    merged = {"a": "payload", "b": "send", "c": "send"}
    assert seen["headers"] == merged
    assert event.payload.headers == merged


async def test_headers_set_on_a_payload_before_it_is_sent_are_carried(
    loop_guard: LoopErrors,
) -> None:
    payload = Payload("p")
    payload.headers["set-later"] = "yes"
    async with queue_of(Collector("c", _seen)) as queue:
        seen = value_of(await results_of(await queue.get_publisher().send(payload)))
    assert seen["headers"] == {"set-later": "yes"}


async def test_an_event_sent_without_headers_has_none(loop_guard: LoopErrors) -> None:
    async with queue_of(Collector("c", _seen)) as queue:
        publisher = queue.get_publisher()
        plain = await publisher.send("plain")
        payload = await publisher.send(Payload("payload", priority=3))
        explicit = await publisher.send("explicit", headers=None)
        results = [value_of(await results_of(e)) for e in (plain, payload, explicit)]
    assert [r["headers"] for r in results] == [{}, {}, {}]
    assert all(r["id"] for r in results)


def _many(count: int) -> dict[str, str]:
    return {f"h{i}": "v" for i in range(count)}


_REFUSED: list[tuple[str, Any, type[Exception], str]] = [
    ("not-a-mapping", ["a", "b"], TypeError, "mapping of str to str"),
    ("int-name", {1: "v"}, TypeError, "str names to str values"),
    ("int-value", {"n": 1}, TypeError, "str names to str values"),
    ("none-value", {"n": None}, TypeError, "str names to str values"),
    ("empty-name", {"": "v"}, ValueError, "must not be empty"),
    ("65", _many(65), ValueError, r"at most 64 headers \(got 65\)"),
    ("8193-chars", {"n": "x" * 8192}, ValueError, "add up to 8193 characters"),
]
"""Headers refused, what is raised and what its message says."""


async def test_refused_headers_send_nothing(loop_guard: LoopErrors) -> None:
    handled: list[Any] = []

    async def record(payload: Payload[Any], ctx: Context) -> Any:
        handled.append(payload.value)
        return payload.value

    async with queue_of(Collector("c", record)) as queue:
        publisher = queue.get_publisher()
        for _, headers, error, message in _REFUSED:
            with pytest.raises(error, match=message):
                await publisher.send("send", headers=headers)
            with pytest.raises(error, match=message):
                publisher.send_nowait("send_nowait", headers=headers)
            with pytest.raises(error, match=message):
                await publisher.send(Payload("payload"), headers=headers)
            future = publisher.send_threadsafe("threadsafe", headers=headers)
            with pytest.raises(error, match=message):
                await asyncio.wrap_future(future)
        # Events are handled in the order sent: had a refused one gone in,
        # it would have been handled before this one.
        assert value_of(await results_of(await publisher.send("after"))) == "after"
    assert handled == ["after"]


async def test_a_refused_merge_leaves_the_payloads_headers_as_they_were(
    loop_guard: LoopErrors,
) -> None:
    payload = Payload("p", headers=_many(60))
    async with queue_of(Collector("c", _seen)) as queue:
        publisher = queue.get_publisher()
        with pytest.raises(ValueError, match=r"at most 64 headers \(got 65\)"):
            await publisher.send(payload, headers={f"x{i}": "v" for i in range(5)})
        assert payload.headers == _many(60)
        # The four that fit are merged.
        event = await publisher.send(payload, headers={f"x{i}": "v" for i in range(4)})
        seen = value_of(await results_of(event))
    assert len(seen["headers"]) == 64


# Per-key ordering is an in-memory promise (a broker's transport refuses it).
@pytest.mark.transports("memory")
async def test_headers_go_with_an_ordering_key(loop_guard: LoopErrors) -> None:
    async with queue_of(Collector("c", _seen)) as queue:
        publisher = queue.get_publisher()
        event = await publisher.send("k", ordering_key="order-7", headers={"a": "1"})
        seen = value_of(await results_of(event))
    assert seen["headers"] == {"a": "1"}
    assert event.payload.ordering_key == "order-7"


# -- headers on a payload --------------------------------------------------------


@NO_TRANSPORT
def test_headers_at_the_limits_are_accepted() -> None:
    assert len(Payload(1, headers=_many(64)).headers) == 64
    # Names and values together: 8,192 characters.
    exact = {"n": "x" * 8191}
    assert Payload(1, headers=exact).headers == exact
    assert Payload(1, headers={"empty": ""}).headers == {"empty": ""}
    assert Payload(1).headers == {}
    assert Payload(1, headers={}).headers == {}


@NO_TRANSPORT
@pytest.mark.parametrize(
    ("headers", "error", "message"),
    [pytest.param(*case, id=name) for name, *case in _REFUSED],
)
def test_a_payload_refuses_bad_headers(
    headers: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Payload(1, headers=headers)


@NO_TRANSPORT
def test_a_payload_keeps_its_own_copy_of_the_headers() -> None:
    given = {"a": "1"}
    payload = Payload(1, headers=given)
    given["b"] = "2"
    assert payload.headers == {"a": "1"}
    assert "headers={'a': '1'}" in repr(payload)
    assert "headers" not in repr(Payload(1))


# -- headers from a Redis publisher ---------------------------------------------


@pytest.fixture
def url(redis_server_module: RedisServer) -> str:  # noqa: F811
    return redis_server_module.url


@pytest.fixture
def stream() -> str:
    return f"headers-{next(_streams)}"


@pytest.fixture
async def publisher(url: str, stream: str) -> AsyncIterator[RedisPublisher]:
    async with RedisTransport(url, stream=stream).publisher() as publisher:
        yield publisher


def _worker(url: str, stream: str, *collectors: Collector, **options: Any) -> Any:
    return CollectorQueue(
        list(collectors),
        transport=RedisTransport(url, stream=stream, **options),
        logging=False,
    )


@pytest.mark.transports("redis")
async def test_a_redis_publishers_headers_reach_the_worker(
    url: str, stream: str, publisher: RedisPublisher
) -> None:
    async with _worker(url, stream, Collector("c", _seen)):
        sent = await publisher.send("send", headers={"how": "send"})
        nowait = publisher.send_nowait("nowait", headers={"how": "nowait"})
        many = await publisher.send_many(
            ["one", Payload("two", headers={"own": "two", "how": "payload"})],
            headers={"how": "send_many"},
        )
        plain = await publisher.send("plain")
        seen = [value_of(await results_of(e)) for e in (sent, nowait, *many, plain)]
    assert [s["value"] for s in seen] == ["send", "nowait", "one", "two", "plain"]
    assert [s["headers"] for s in seen] == [
        {"how": "send"},
        {"how": "nowait"},
        {"how": "send_many"},
        {"own": "two", "how": "send_many"},
        {},
    ]
    assert all(
        s["id"] == e.payload.event_id
        for s, e in zip(seen, [sent, nowait, *many, plain], strict=True)
    )


@pytest.mark.transports("redis")
async def test_the_work_entry_carries_the_headers_in_its_h_field(
    redis_server_module: RedisServer,  # noqa: F811
    stream: str,
    publisher: RedisPublisher,
) -> None:
    # No worker: the entries stay in the stream to be read.
    await publisher.send("with", headers={"traceparent": "00-ab-cd-01"})
    await publisher.send("without")
    entries: Any = redis_server_module.client().xrange(stream)
    documents = [json.loads(fields[b"d"]) for _, fields in entries]
    assert documents == [
        {"v": "with", "h": {"traceparent": "00-ab-cd-01"}},
        {"v": "without"},
    ]


@pytest.mark.transports("redis")
async def test_a_redis_publisher_refuses_bad_headers_and_sends_nothing(
    redis_server_module: RedisServer,  # noqa: F811
    stream: str,
    publisher: RedisPublisher,
) -> None:
    with pytest.raises(TypeError, match="str names to str values"):
        await publisher.send(1, headers={"n": 2})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="must not be empty"):
        publisher.send_nowait(1, headers={"": "v"})
    with pytest.raises(ValueError, match=r"send_many: value 0: headers: at most 64"):
        await publisher.send_many([1, 2], headers=_many(65))
    with pytest.raises(ValueError, match=r"send_many: value 1: headers: at most 64"):
        await publisher.send_many(
            [1, Payload(2, headers=_many(60))], headers={f"x{i}": "v" for i in range(5)}
        )
    assert redis_server_module.client().xlen(stream) == 0


class _BadHeaders(JsonCodec):
    """A publisher's codec that writes a header value that is not a str, as
    a sender in another language might."""

    def encode(self, value: Any) -> bytes:
        if isinstance(value, dict) and "v" in value:
            value = {**value, "h": {"n": 1}}
        return super().encode(value)


@pytest.mark.transports("redis")
async def test_an_entry_with_bad_headers_is_answered_with_why(
    url: str, stream: str
) -> None:
    transport = RedisTransport(url, stream=stream, codec=_BadHeaders())
    async with (
        transport.publisher() as publisher,
        _worker(url, stream, Collector("c", _seen)),
    ):
        results = await results_of(await publisher.send("x"))
    (result,) = results
    assert isinstance(result, Error)
    assert isinstance(result.err, RemoteError)
    assert result.err.type == "ValueError"
    assert "headers are invalid" in result.err.message
    assert "str names to str values" in result.err.message


# -- the collector a result names --------------------------------------------------


@NO_TRANSPORT
def test_ok_equality_ignores_the_collector_and_repr_shows_it() -> None:
    assert Ok(1, "a") == Ok(1, "b")
    assert Ok(1, "a") == Ok(1)
    assert Ok(1, "a") != Ok(2, "a")
    assert repr(Ok(1)) == "Ok(1)"
    assert repr(Ok(1, "a")) == "Ok(1, collector='a')"
    assert repr(Error("no")) == "Error('no')"
    assert repr(Error("no", None, "a")) == "Error('no', collector='a')"
    assert Ok(1).collector is None
    assert Error("no").collector is None


async def test_a_broadcast_names_each_collector(loop_guard: LoopErrors) -> None:
    queue = queue_of(
        Collector("a", _echo), Collector("b", _raise), Collector("c", _echo)
    )
    async with queue:
        results = await results_of(await queue.get_publisher().send(5))
    assert [r.collector for r in results] == ["a", "b", "c"]
    assert results[0] == Ok(5)
    assert isinstance(results[1], Error)
    assert "refused 5" in str(results[1].err)
    assert results[2] == Ok(5)


async def test_key_and_topic_delivery_name_the_collectors(
    loop_guard: LoopErrors,
) -> None:
    queue = queue_of(
        Collector("a", _echo, topics=["t1"]),
        Collector("b", _echo, topics=["t1", "t2"]),
        Collector("c", _echo, topics=["t2"]),
    )
    async with queue:
        publisher = queue.get_publisher()
        by_key = await publisher.send(Payload(1, Delivery.KEY, keys=["c", "a"]))
        one_key = await publisher.send(Payload(2, Delivery.KEY, keys=["b"]))
        by_topic = await publisher.send(Payload(3, Delivery.TOPIC, topics=["t2"]))
        results = [await results_of(e) for e in (by_key, one_key, by_topic)]
    assert [[r.collector for r in rs] for rs in results] == [
        ["c", "a"],
        ["b"],
        ["b", "c"],
    ]
    assert results == [[Ok(1), Ok(1)], [Ok(2)], [Ok(3), Ok(3)]]


_ELSEWHERE = Ok("elsewhere's", "elsewhere")


async def _answer(payload: Payload[Any], ctx: Context) -> Any:
    """Answer as the payload's value says."""
    kind = payload.value
    if kind == "value":
        return "v"
    if kind == "ok":
        return Ok("own")
    if kind == "error":
        return Error("declined")
    if kind == "named":
        return _ELSEWHERE
    if kind == "raise":
        raise Boom("raised")
    raise AssertionError(kind)


# A lone plain collector is called by the consumer itself (its raw answer
# is made a result when read); with a timeout it goes through a runner;
# beside another collector, with Delivery.KEY, through the router.
_PATHS: dict[str, Callable[[], list[Collector]]] = {
    "direct": lambda: [Collector("c", _answer)],
    "runner": lambda: [Collector("c", _answer, timeout=60)],
    "routed": lambda: [Collector("c", _answer), Collector("other", _answer)],
}


def _to_c(path: str, kind: str) -> Payload[str]:
    """A payload for collector ``c`` only, the way ``path`` delivers it."""
    if path == "routed":
        return Payload(kind, Delivery.KEY, keys=["c"])
    return Payload(kind)


@pytest.mark.parametrize("path", list(_PATHS))
async def test_every_outcome_of_a_handler_names_its_collector(
    loop_guard: LoopErrors, path: str
) -> None:
    kinds = ["value", "ok", "error", "named", "raise"]
    async with queue_of(*_PATHS[path]()) as queue:
        publisher = queue.get_publisher()
        events = [await publisher.send(_to_c(path, kind)) for kind in kinds]
        results = [await results_of(e) for e in events]
        # Read again: the direct path makes its result on every read.
        again = [list(e.get_result() or []) for e in events]
    for outcomes in (results, again):
        assert [[r.collector for r in rs] for rs in outcomes] == [["c"]] * len(kinds)
    value, ok, error, named, raised = (rs[0] for rs in results)
    assert value == Ok("v")
    assert ok == Ok("own")
    assert named == Ok("elsewhere's")
    assert isinstance(error, Error)
    assert str(error.err) == "declined"
    assert isinstance(raised, Error)
    assert "raised" in str(raised.err)


# Identity is a promise of one process: across a broker a result is a copy.
@pytest.mark.transports("memory")
@pytest.mark.parametrize("path", list(_PATHS))
async def test_a_returned_result_is_named_in_place_or_copied(
    loop_guard: LoopErrors, path: str
) -> None:
    returned: list[Ok[Any] | Error] = []

    async def keep(payload: Payload[Any], ctx: Context) -> Any:
        result = await _answer(payload, ctx)
        returned.append(result)
        return result

    collectors = [Collector(c.key, keep, timeout=c.timeout) for c in _PATHS[path]()]
    async with queue_of(*collectors) as queue:
        publisher = queue.get_publisher()
        ok = await publisher.send(_to_c(path, "ok"))
        error = await publisher.send(_to_c(path, "error"))
        named = await publisher.send(_to_c(path, "named"))
        (ok_result,) = await results_of(ok)
        (error_result,) = await results_of(error)
        (named_result,) = await results_of(named)
    assert len(returned) == 3
    # One that named no collector is named in place.
    assert ok_result is returned[0]
    assert error_result is returned[1]
    # One that named another is copied; the original is left as it was.
    assert named_result is not _ELSEWHERE
    assert named_result.collector == "c"
    assert _ELSEWHERE.collector == "elsewhere"


async def test_one_result_returned_by_two_collectors_names_each(
    loop_guard: LoopErrors,
) -> None:
    shared = Ok("shared")

    async def give(payload: Payload[Any], ctx: Context) -> Any:
        return shared

    async with queue_of(Collector("a", give), Collector("b", give)) as queue:
        results = await results_of(await queue.get_publisher().send(1))
    assert [r.collector for r in results] == ["a", "b"]
    assert results == [Ok("shared"), Ok("shared")]


async def test_a_collectors_timeout_names_it(loop_guard: LoopErrors) -> None:
    async with queue_of(Collector("slow", _hang, timeout=0.05)) as queue:
        (result,) = await results_of(await queue.get_publisher().send(1))
    assert isinstance(result, Error)
    assert result.collector == "slow"
    assert "took longer than its timeout of 0.05 s" in str(result.err)


@_IN_MEMORY_FLOW
async def test_a_batch_collectors_results_name_it(loop_guard: LoopErrors) -> None:
    async def batch(payloads: list[Payload[Any]], ctx: Context) -> list[Any]:
        values = [p.value for p in payloads]
        if "boom" in values:
            raise Boom("the batch failed")
        if "short" in values:
            return values[:-1]
        return [Error("odd") if v % 2 else v for v in values]

    collector = BatchCollector("rows", batch, max_size=3, max_wait=GUARD)
    results: list[list[list[Ok[Any] | Error]]] = []
    async with queue_of(collector) as queue:
        publisher = queue.get_publisher()
        # Each batch fills to max_size (none waits for max_wait) and is
        # answered before the next is sent.
        for values in ([0, 1, 2], [3, "boom", 5], [6, "short", 8]):
            events = [await publisher.send(v) for v in values]
            results.append([await results_of(e) for e in events])
    assert [[r.collector for (r,) in rs] for rs in results] == [["rows"] * 3] * 3
    (good, odd, two), failed, short = results
    assert good == [Ok(0)]
    assert two == [Ok(2)]
    assert isinstance(odd[0], Error)
    assert str(odd[0].err) == "odd"
    for (result,) in failed:
        assert isinstance(result, Error)
        assert "the batch failed" in str(result.err)
    for (result,) in short:
        assert isinstance(result, Error)
        assert "returned 2 results for 3 payloads" in str(result.err)


@_IN_MEMORY_FLOW
async def test_flow_controlled_collectors_name_their_results(
    loop_guard: LoopErrors,
) -> None:
    calls: list[int] = []

    async def flaky(payload: Payload[Any], ctx: Context) -> Any:
        calls.append(payload.value)
        raise ConnectionError(f"down {payload.value}")

    limited = Collector("limited", _echo, concurrency=1)
    retried = Collector(
        "retried", flaky, retry=Retry(attempts=2, backoff=0, on=ConnectionError)
    )
    async with queue_of(limited, retried) as queue:
        results = await results_of(await queue.get_publisher().send(7))
    assert [r.collector for r in results] == ["limited", "retried"]
    assert results[0] == Ok(7)
    dead = results[1]
    assert isinstance(dead, Error)
    assert "down 7" in str(dead.err)
    assert dead.details is not None
    assert dead.details["attempts"] == 2
    assert calls == [7, 7]


# -- errors no collector made (in memory: a broker hands them back) ---------------


@pytest.mark.transports("memory")
async def test_an_event_cancelled_at_shutdown_names_no_collector(
    loop_guard: LoopErrors,
) -> None:
    gate = Gate()
    # The lone plain collector: the consumer calls it itself, and is
    # cancelled inside it when the drain's time is up.
    queue = queue_of(
        Collector("c", gate),
        autoscale=False,
        max_consumers=1,
        consumer_shutdown_timeout=0.01,
    )
    await queue.init_queue()
    publisher = queue.get_publisher()
    running = await publisher.send("running")
    await gate.until_running(1)
    queued = await publisher.send("queued")
    async with asyncio.timeout(GUARD):
        await queue.shut_down_queue()
        answers = [await running, await queued]
    for results in answers:
        assert is_cancelled(results)
        assert [r.collector for r in results] == [None]


@pytest.mark.transports("memory")
async def test_a_superseded_event_names_no_collector(loop_guard: LoopErrors) -> None:
    gate = Gate()
    queue = queue_of(Collector("c", gate), autoscale=False, max_consumers=2)
    async with queue:
        publisher = queue.get_publisher()
        first = await publisher.send("first", ordering_key="k")
        await gate.until_running(1)
        stale = await publisher.send("stale", ordering_key="k")
        newest = await publisher.send("newest", ordering_key="k", supersede=True)
        (result,) = await results_of(stale)
        gate.open()
        assert await results_of(first) == [Ok("first")]
        (last,) = await results_of(newest)
    assert isinstance(result, Error)
    assert isinstance(result.err, Superseded)
    assert result.collector is None
    assert last.collector == "c"


# -- the collector across Redis ---------------------------------------------------


class _OldReplies(JsonCodec):
    """A worker's codec that writes replies the way workers did before
    results named their collector: ``["ok", value]`` and ``["err", type,
    message, details]``."""

    def encode(self, value: Any) -> bytes:
        if isinstance(value, list):
            value = [item[:2] if item[0] == "ok" else item[:4] for item in value]
        return super().encode(value)


class _NumberedReplies(JsonCodec):
    """A worker's codec that names each result's collector by a number."""

    def encode(self, value: Any) -> bytes:
        if isinstance(value, list):
            value = [[*item[:-1], 7] for item in value]
        return super().encode(value)


@pytest.mark.transports("redis")
async def test_a_redis_reply_names_each_collector(
    url: str, stream: str, publisher: RedisPublisher
) -> None:
    worker = _worker(url, stream, Collector("a", _echo), Collector("b", _raise))
    async with worker:
        results = await results_of(await publisher.send(3))
    assert [r.collector for r in results] == ["a", "b"]
    assert results[0] == Ok(3)
    assert isinstance(results[1], Error)
    assert isinstance(results[1].err, RemoteError)
    assert results[1].err.type == f"{__name__}.Boom"


@pytest.mark.transports("redis")
async def test_a_reply_that_names_no_collector_still_reads(
    url: str, stream: str, publisher: RedisPublisher
) -> None:
    worker = _worker(
        url, stream, Collector("a", _echo), Collector("b", _raise), codec=_OldReplies()
    )
    async with worker:
        results = await results_of(await publisher.send(3))
    assert [r.collector for r in results] == [None, None]
    assert results[0] == Ok(3)
    assert isinstance(results[1], Error)
    assert isinstance(results[1].err, RemoteError)
    assert results[1].err.type == f"{__name__}.Boom"
    assert results[1].err.message == "refused 3"


@pytest.mark.transports("redis")
async def test_a_reply_naming_a_collector_by_a_non_str_is_refused(
    url: str, stream: str, publisher: RedisPublisher
) -> None:
    worker = _worker(url, stream, Collector("a", _echo), codec=_NumberedReplies())
    async with worker:
        results = await results_of(await publisher.send(3))
    (result,) = results
    assert isinstance(result, Error)
    assert isinstance(result.err, ValueError)
    assert "names no collector" in str(result.err)
    assert result.collector is None
