"""``sender_context.carry``: handlers that see the sender's context variables."""

from __future__ import annotations

import asyncio
import contextvars
import copy
import gc
import io
import pickle
import weakref
from typing import Any

import pytest
import structlog

from event_collector import BatchCollector, Collector, CollectorQueue, Context, Payload
from event_collector.data import Delivery, Error, Ok
from event_collector.exceptions import ConfigError, EventCancelled
from event_collector.redis import RedisTransport
from event_collector.sender_context import _step_in, carry

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)


async def _read_request_id(payload: Payload[Any], ctx: Context) -> str | None:
    return request_id.get()


async def _send_as(publisher: Any, rid: str, value: Any) -> Any:
    """Send ``value`` from a context of its own in which ``request_id`` is
    ``rid`` (a web request's task, say)."""

    async def request() -> Any:
        request_id.set(rid)
        return await publisher.send(value)

    return await asyncio.create_task(request())


async def test_a_handler_sees_the_senders_values_only_when_carried() -> None:
    async with CollectorQueue([Collector("h", _read_request_id)], logging=False) as q:
        publisher = q.get_publisher()
        before = await _send_as(publisher, "r-0", 0)
        assert await before == [Ok(None)]

        remove = carry(q)
        carried = await _send_as(publisher, "r-1", 1)
        assert await carried == [Ok("r-1")]

        remove()
        after = await _send_as(publisher, "r-2", 2)
        assert await after == [Ok(None)]


async def test_structlog_values_bound_by_the_sender_show_in_the_handlers_log() -> None:
    out = io.StringIO()
    log = structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.KeyValueRenderer(key_order=["event"]),
        ],
    )

    async def handler(payload: Payload[Any], ctx: Context) -> None:
        log.info("charged", amount=payload.value)

    async with CollectorQueue([Collector("pay", handler)], logging=False) as q:
        carry(q)

        async def request() -> None:
            structlog.contextvars.bind_contextvars(request_id="req-7")
            await (await q.get_publisher().send(12))

        await asyncio.create_task(request())
    assert out.getvalue().strip() == "event='charged' amount=12 request_id='req-7'"
    assert structlog.contextvars.get_contextvars() == {}


async def test_concurrent_events_each_see_their_own_sender() -> None:
    started = 0
    all_started = asyncio.Event()
    release = asyncio.Event()

    async def handler(payload: Payload[Any], ctx: Context) -> str | None:
        nonlocal started
        started += 1
        if started == 6:
            all_started.set()
        await release.wait()
        return request_id.get()

    async with CollectorQueue(
        [Collector("h", handler)], min_consumers=6, logging=False
    ) as q:
        carry(q)
        publisher = q.get_publisher()
        events = [await _send_as(publisher, f"r-{n}", n) for n in range(6)]
        await asyncio.wait_for(all_started.wait(), 10)
        release.set()
        answers = [await event for event in events]
    assert answers == [[Ok(f"r-{n}")] for n in range(6)]


async def test_what_a_handler_sets_stays_in_its_call() -> None:
    seen: dict[str, object] = {}

    async def first(payload: Payload[Any], ctx: Context) -> None:
        seen["first saw"] = request_id.get()
        request_id.set("set by first")

    async def second(payload: Payload[Any], ctx: Context) -> None:
        await asyncio.sleep(0)
        seen["second saw"] = request_id.get()
        request_id.set("set by second")

    async with CollectorQueue(
        [Collector("first", first), Collector("second", second)], logging=False
    ) as q:
        carry(q)
        request_id.set("sender")
        results = await (await q.get_publisher().send(1))
        # The sender's own value is untouched.
        assert request_id.get() == "sender"
        again = await (await q.get_publisher().send(2))
    assert [r.collector for r in results] == ["first", "second"]
    assert all(r.ok() for r in results + again)
    assert seen == {"first saw": "sender", "second saw": "sender"}


async def test_a_carried_call_runs_in_its_consumers_task_and_keeps_its_result() -> None:
    """Each step of the call runs in the sender's context, across waits on
    futures and bare yields, in the consumer's own task (no task of its
    own); its value and its exception come back as results."""
    later: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def handler(payload: Payload[Any], ctx: Context) -> Any:
        task = asyncio.current_task()
        assert task is not None
        seen = [request_id.get()]
        await asyncio.sleep(0)  # a bare yield
        seen.append(request_id.get())
        if payload.value == "wait":
            seen.append(await later)  # a future resolved by another task
            seen.append(request_id.get())
        if payload.value == "fail":
            raise LookupError(f"no such order (seen {seen})")
        return task.get_name(), seen

    async with CollectorQueue([Collector("h", handler)], logging=False) as q:
        carry(q)
        publisher = q.get_publisher()
        ok = await _send_as(publisher, "r-1", "name")
        waiting = await _send_as(publisher, "r-2", "wait")
        asyncio.get_running_loop().call_later(0.01, later.set_result, "resolved")
        failed = await _send_as(publisher, "r-3", "fail")
        answers = [await ok, await waiting, await failed]
    assert answers[0] == [Ok(("event-collector-consumer", ["r-1", "r-1"]))]
    assert answers[1] == [
        Ok(("event-collector-consumer", ["r-2", "r-2", "resolved", "r-2"]))
    ]
    (error,) = answers[2]
    assert type(error) is Error
    assert isinstance(error.err, LookupError)
    assert str(error.err) == "no such order (seen ['r-3', 'r-3'])"
    assert error.collector == "h"


async def test_a_failed_future_is_thrown_into_the_carried_call() -> None:
    async def handler(payload: Payload[Any], ctx: Context) -> str:
        failing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(failing.set_exception, KeyError("k"))
        try:
            await failing
        except KeyError:
            return f"caught in {request_id.get()}"
        return "not thrown"

    async with CollectorQueue([Collector("h", handler)], logging=False) as q:
        carry(q)
        answer = await (await _send_as(q.get_publisher(), "r-9", 1))
    assert answer == [Ok("caught in r-9")]


async def test_keyed_and_topic_delivery_and_timeouts_are_carried() -> None:
    async def slow(payload: Payload[Any], ctx: Context) -> None:
        await asyncio.sleep(30)

    collectors = [
        Collector("reader", _read_request_id, topics=["t"]),
        Collector("slow", slow, timeout=0.01),
    ]
    async with CollectorQueue(collectors, logging=False) as q:
        carry(q)
        publisher = q.get_publisher()
        request_id.set("sender")
        by_topic = await (await publisher.send(Payload(1, topics=["t"])))
        by_key = await (await publisher.send(Payload(2, Delivery.KEY, keys=["slow"])))
    assert by_topic == [Ok("sender")]
    (timed_out,) = by_key
    assert type(timed_out) is Error
    assert isinstance(timed_out.err, TimeoutError)
    assert "slow" in str(timed_out.err)


async def test_shutdown_cancels_a_carried_call_and_answers_its_event() -> None:
    started = asyncio.Event()

    cancelled_in: list[str | None] = []

    async def hang(payload: Payload[Any], ctx: Context) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled_in.append(request_id.get())
            raise

    q = CollectorQueue(
        [Collector("h", hang)], consumer_shutdown_timeout=0.01, logging=False
    )
    await q.init_queue()
    carry(q)
    event = await _send_as(q.get_publisher(), "r-5", 1)
    await asyncio.wait_for(started.wait(), 10)
    await q.shut_down_queue()
    (result,) = await event
    assert type(result) is Error
    assert isinstance(result.err, EventCancelled)
    # The consumer's cancellation reached the handler, in the sender's context.
    assert cancelled_in == ["r-5"]


async def test_shut_down_queue_from_inside_a_carried_handler() -> None:
    async def stop(payload: Payload[Any], ctx: Context) -> str:
        await ctx.queue.shut_down_queue()
        return "stopped"

    q = CollectorQueue([Collector("h", stop)], logging=False)
    stop_collector = q.collectors[0]
    stop_collector.ctx.queue = q
    await q.init_queue()
    carry(q)
    event = await q.get_publisher().send(1)
    assert await asyncio.wait_for(event.wait(), 10) == [Ok("stopped")]
    await asyncio.wait_for(q.shut_down_queue(), 10)
    assert q.state == "closed"


async def test_carry_is_refused_where_a_context_cannot_go() -> None:
    q = CollectorQueue(
        [Collector("h", _read_request_id)],
        transport=RedisTransport("redis://127.0.0.1:1/0", stream="nowhere"),
        logging=False,
    )
    with pytest.raises(ConfigError, match="memory only"):
        carry(q)
    with pytest.raises(TypeError, match="CollectorQueue"):
        carry(object())  # type: ignore[arg-type]
    memory = CollectorQueue([Collector("h", _read_request_id)], logging=False)
    carry(memory)
    with pytest.raises(ConfigError, match="already"):
        carry(memory)


class _Boom(Exception):
    """An exception a weak reference can follow."""


def _failing_soon() -> asyncio.Future[None]:
    future = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(future.set_exception, _Boom())
    return future


async def _fails_from_a_future() -> None:
    await _failing_soon()  # no local: the future holds the exception


async def _fails_after_a_step() -> None:
    await asyncio.sleep(0)
    raise _Boom


@pytest.mark.parametrize("call", [_fails_from_a_future, _fails_after_a_step])
async def test_an_exception_out_of_a_carried_call_is_in_no_reference_cycle(
    call: Any,
) -> None:
    # Freed by reference counting alone: a cycle through a frame of the
    # stepping would keep the exception, its traceback and the sender's
    # context alive until the garbage collector runs.
    gc.disable()
    try:
        try:
            await _step_in(contextvars.copy_context(), call())
        except _Boom as exc:
            freed = weakref.ref(exc)
        # The loop holds the step that woke the task (and so the failed
        # future) until it runs the next one.
        for _ in range(3):
            await asyncio.sleep(0)
        assert freed() is None
    finally:
        gc.enable()


async def test_a_carried_payload_pickles_and_copies_without_the_senders_context() -> (
    None
):
    kept: list[Payload[Any]] = []

    async def handler(payload: Payload[Any], ctx: Context) -> None:
        kept.append(payload)

    async with CollectorQueue([Collector("h", handler)], logging=False) as q:
        carry(q)
        event = await _send_as(q.get_publisher(), "r-5", {"n": 5})
        await event
    (payload,) = kept
    assert isinstance(payload._sent_in, contextvars.Context)
    for other in (
        pickle.loads(pickle.dumps(payload)),
        copy.deepcopy(payload),
        copy.copy(payload),
    ):
        assert other.value == {"n": 5}
        assert other.event_id == payload.event_id
        assert other.headers == {}
        assert not hasattr(other, "_sent_in")


async def test_a_batch_call_runs_in_its_consumers_context() -> None:
    # A batch holds the events of several senders: no one context is its.
    seen: list[tuple[list[Any], str | None]] = []

    async def insert(payloads: list[Payload[Any]], ctx: Context) -> list[Any]:
        seen.append(([p.value for p in payloads], request_id.get()))
        return [p.value for p in payloads]

    # max_wait is a guard: the batch goes when its two payloads are there.
    batch = BatchCollector("rows", insert, max_size=2, max_wait=30.0)
    async with CollectorQueue([batch], logging=False) as q:
        carry(q)
        events = [await _send_as(q.get_publisher(), f"r-{n}", n) for n in (1, 2)]
        answers = [await e for e in events]
    assert answers == [[Ok(1)], [Ok(2)]]
    assert seen == [([1, 2], None)]


class _Tagged(Payload[Any]):
    __slots__ = ("tag",)
    tag: str


class _Noted(Payload[Any]):
    """A subclass with a __dict__."""


async def test_a_carried_payload_subclass_keeps_its_own_fields() -> None:
    kept: list[Payload[Any]] = []

    async def handler(payload: Payload[Any], ctx: Context) -> None:
        kept.append(payload)

    tagged, noted = _Tagged("a"), _Noted("b")
    tagged.tag = "t"
    noted.note = "n"  # type: ignore[attr-defined]
    async with CollectorQueue([Collector("h", handler)], logging=False) as q:
        carry(q)
        for payload in (tagged, noted):
            await (await _send_as(q.get_publisher(), "r-6", payload))
    assert kept == [tagged, noted]
    for original in kept:
        assert hasattr(original, "_sent_in")
        for other in (pickle.loads(pickle.dumps(original)), copy.deepcopy(original)):
            assert type(other) is type(original)
            assert other.value == original.value
            assert not hasattr(other, "_sent_in")
    assert pickle.loads(pickle.dumps(tagged)).tag == "t"
    assert copy.copy(noted).note == "n"  # type: ignore[attr-defined]
