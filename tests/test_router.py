"""Routing: key, topic and broadcast delivery, runners, custom routers."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from event_collector import BatchCollector, CollectorQueue, ConfigError
from event_collector._lanes import batch_call
from event_collector.collector import Collector
from event_collector.data import Context, Delivery, Error, Ok, Payload, ResultList
from event_collector.router import Router, SimpleRouter, collector_call, make_runner


def tagger(tag: str) -> Any:
    async def handle(payload: Payload[Any], ctx: Context) -> str:
        return f"{tag}:{payload.value}"

    return handle


def collectors() -> dict[str, Collector]:
    made = [
        Collector("a", tagger("a"), topics=["red", "blue"]),
        Collector("b", tagger("b"), topics=["blue"]),
        Collector("c", tagger("c")),
    ]
    return {c.key: c for c in made}


def oks(results: ResultList) -> list[Any]:
    return [r.unwrap() for r in results]


# -- SimpleRouter on its own ---------------------------------------------------


async def test_broadcast_reaches_every_collector_in_order() -> None:
    router = SimpleRouter(collectors())
    results = await router.handle_event(Payload(1))
    assert oks(results) == ["a:1", "b:1", "c:1"]


async def test_key_delivery() -> None:
    router = SimpleRouter(collectors())
    one = await router.handle_event(Payload(1, delivery=Delivery.KEY, keys=["b"]))
    assert oks(one) == ["b:1"]
    # Results follow the order of the keys; duplicates and unknown keys drop.
    two = await router.handle_event(
        Payload(2, delivery=Delivery.KEY, keys=["c", "zzz", "a", "c"])
    )
    assert oks(two) == ["c:2", "a:2"]


async def test_topic_delivery_reaches_each_subscriber_once() -> None:
    router = SimpleRouter(collectors())
    blue = await router.handle_event(
        Payload(1, delivery=Delivery.TOPIC, topics=["blue"])
    )
    assert oks(blue) == ["a:1", "b:1"]
    both = await router.handle_event(
        Payload(2, delivery=Delivery.TOPIC, topics=["red", "blue"])
    )
    assert oks(both) == ["a:2", "b:2"]


async def test_unknown_key_or_topic_gives_an_empty_result_list() -> None:
    router = SimpleRouter(collectors())
    for payload in (
        Payload(1, delivery=Delivery.KEY, keys=["nobody"]),
        Payload(1, delivery=Delivery.KEY),
        Payload(1, delivery=Delivery.TOPIC, topics=["green"]),
    ):
        results = await router.handle_event(payload)
        assert isinstance(results, ResultList)
        assert results.size() == 0
        assert isinstance(results.first(), Error)


async def test_single_collector_broadcast() -> None:
    only = Collector("only", tagger("o"))
    router = SimpleRouter({"only": only})
    assert oks(await router.handle_event(Payload(1))) == ["o:1"]
    assert repr(router) == "<SimpleRouter collectors=['only']>"


async def test_several_collectors_run_concurrently() -> None:
    both_started = asyncio.Event()
    started = 0

    async def meet(payload: Payload[Any], ctx: Context) -> str:
        nonlocal started
        started += 1
        if started == 2:
            both_started.set()
        # Each handler waits for the other: this only finishes if they run
        # at the same time.
        await both_started.wait()
        return "met"

    router = SimpleRouter({k: Collector(k, meet) for k in ("x", "y")})
    results = await asyncio.wait_for(router.handle_event(Payload(0)), 10)
    assert oks(results) == ["met", "met"]


async def test_one_failing_collector_does_not_hide_the_others() -> None:
    async def fail(payload: Payload[Any], ctx: Context) -> None:
        raise KeyError("bad")

    router = SimpleRouter(
        {"ok": Collector("ok", tagger("ok")), "bad": Collector("bad", fail)}
    )
    results = await router.handle_event(Payload(1))
    assert results[0] == Ok("ok:1")
    assert isinstance(results[1], Error)
    assert isinstance(results[1].err, KeyError)


async def test_unknown_delivery_mode_raises() -> None:
    router = SimpleRouter(collectors())
    payload = Payload(1)
    payload.delivery = "sideways"  # type: ignore[assignment]
    with pytest.raises(ValueError, match="unknown delivery mode"):
        await router.handle_event(payload)


# -- make_runner ---------------------------------------------------------------


async def test_runner_wraps_plain_values_and_keeps_results() -> None:
    async def give(payload: Payload[Any], ctx: Context) -> Any:
        return payload.value

    run = make_runner(Collector("c", give))
    assert await run(Payload(3)) == Ok(3)
    err = Error("mine")
    assert await run(Payload(err)) is err
    ok = Ok("mine")
    assert await run(Payload(ok)) is ok


@pytest.mark.parametrize("limit", [None, 5.0])
async def test_runner_turns_exceptions_into_errors(limit: float | None) -> None:
    async def fail(payload: Payload[Any], ctx: Context) -> None:
        raise ValueError("handler failed")

    result = await make_runner(Collector("c", fail, timeout=limit))(Payload(1))
    assert isinstance(result, Error)
    assert isinstance(result.err, ValueError)
    assert "handler failed" in result.traceback


@pytest.mark.parametrize("limit", [None, 5.0])
async def test_runner_turns_a_handlers_own_cancelled_error_into_an_error(
    limit: float | None,
) -> None:
    async def cancel_itself(payload: Payload[Any], ctx: Context) -> None:
        raise asyncio.CancelledError()

    result = await make_runner(Collector("c", cancel_itself, timeout=limit))(Payload(1))
    assert isinstance(result, Error)
    assert isinstance(result.err, asyncio.CancelledError)


@pytest.mark.parametrize("limit", [None, 5.0])
async def test_runner_lets_the_cancellation_of_its_task_through(
    limit: float | None,
) -> None:
    started = asyncio.Event()

    async def hang(payload: Payload[Any], ctx: Context) -> None:
        started.set()
        await asyncio.Event().wait()

    run = make_runner(Collector("c", hang, timeout=limit))

    async def call() -> Ok[Any] | Error:
        return await run(Payload(1))

    task = asyncio.create_task(call())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_runner_times_out_slow_handlers() -> None:
    async def hang(payload: Payload[Any], ctx: Context) -> None:
        await asyncio.Event().wait()

    result = await make_runner(Collector("slow", hang, timeout=0.01))(Payload(1))
    assert isinstance(result, Error)
    assert isinstance(result.err, TimeoutError)
    assert "'slow'" in str(result.err)
    assert "0.01" in str(result.err)


async def test_runner_keeps_a_handlers_own_timeout_error() -> None:
    async def own(payload: Payload[Any], ctx: Context) -> None:
        raise TimeoutError("upstream timed out")

    result = await make_runner(Collector("c", own, timeout=5.0))(Payload(1))
    assert isinstance(result, Error)
    assert str(result.err) == "upstream timed out"


# -- through the queue ---------------------------------------------------------


async def test_queue_routes_by_key_topic_and_broadcast() -> None:
    async with CollectorQueue(list(collectors().values()), logging=False) as queue:
        pub = queue.get_publisher()
        by_key = await pub.send(Payload("k", delivery=Delivery.KEY, keys=["c"]))
        by_topic = await pub.send(Payload("t", delivery=Delivery.TOPIC, topics=["red"]))
        everyone = await pub.send("all")
        nobody = await pub.send(Payload("n", delivery=Delivery.KEY, keys=["zzz"]))
        assert oks(await by_key.wait()) == ["c:k"]
        assert oks(await by_topic.wait()) == ["a:t"]
        assert oks(await everyone.wait()) == ["a:all", "b:all", "c:all"]
        empty = await nobody.wait()
        assert empty.size() == 0
        first = empty.first()
        assert isinstance(first, Error)


class Reverser(Router):
    """Calls every collector and returns the results in reverse order."""

    instances: list[Reverser] = []

    def __init__(self, collectors: Mapping[str, Collector]) -> None:
        super().__init__(collectors)
        Reverser.instances.append(self)

    async def handle_event(self, payload: Payload[Any]) -> ResultList:
        runners = [make_runner(c) for c in self.collectors.values()]
        results = [await run(payload) for run in runners]
        return ResultList(reversed(results))


async def test_custom_router_class_is_used_by_the_queue() -> None:
    Reverser.instances.clear()
    queue = CollectorQueue(list(collectors().values()), router=Reverser, logging=False)
    assert queue.router is Reverser
    assert len(Reverser.instances) == 1
    assert set(Reverser.instances[0].collectors) == {"a", "b", "c"}
    async with queue:
        event = await queue.get_publisher().send(1)
        assert oks(await event.wait()) == ["c:1", "b:1", "a:1"]


class Loose(Router):
    """Returns plain values and lists instead of a ResultList."""

    async def handle_event(self, payload: Payload[Any]) -> Any:
        if payload.value == "list":
            return [1, Error("two")]
        if payload.value == "raise":
            raise RuntimeError("router broke")
        return payload.value


async def test_custom_router_answers_are_made_result_lists() -> None:
    async with CollectorQueue(
        [Collector("c", tagger("c"))], router=Loose, logging=False
    ) as queue:
        pub = queue.get_publisher()
        plain = await (await pub.send("plain")).wait()
        listed = await (await pub.send("list")).wait()
        raised = await (await pub.send("raise")).wait()
    assert isinstance(plain, ResultList)
    assert plain == [Ok("plain")]
    assert listed[0] == Ok(1)
    assert isinstance(listed[1], Error)
    failure = raised.first()
    assert isinstance(failure, Error)
    assert isinstance(failure.err, RuntimeError)


@pytest.mark.parametrize("router", [SimpleRouter(collectors()), object, "SimpleRouter"])
def test_router_must_be_a_router_class(router: Any) -> None:
    with pytest.raises(ConfigError, match="router must be a Router subclass"):
        CollectorQueue(list(collectors().values()), router=router, logging=False)


def test_router_is_abstract() -> None:
    with pytest.raises(TypeError):
        Router({})  # type: ignore[abstract]


async def _hang(payload: Payload[Any], ctx: Context) -> Any:
    await asyncio.Event().wait()


async def _hang_batch(payloads: list[Payload[Any]], ctx: Context) -> list[Any]:
    await asyncio.Event().wait()
    raise AssertionError("never set")


def _held_by_its_own_frames(exc: BaseException) -> list[str]:
    """The frames ``exc`` left (its traceback past the frame that caught
    it) that hold it, or its cause, in a local: a reference cycle through a
    frame."""
    held = []
    chain = [exc] if exc.__cause__ is None else [exc, exc.__cause__]
    tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
    while tb is not None:
        if any(v is e for v in tb.tb_frame.f_locals.values() for e in chain):
            held.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    return held


async def test_a_collectors_timeout_error_is_in_no_reference_cycle() -> None:
    # The timeout error is raised from the timed call's frame; a local
    # holding it there would keep it, and the payloads, until gc runs.
    slow = Collector("slow", _hang, timeout=0.01)
    batch = BatchCollector("b", _hang_batch, max_size=2, max_wait=60.0, timeout=0.01)
    with pytest.raises(TimeoutError, match="longer than its timeout") as one:
        await collector_call(slow)(Payload(1))
    with pytest.raises(TimeoutError, match="for a batch of 1") as many:
        await batch_call(batch)([Payload(1)])
    assert _held_by_its_own_frames(one.value) == []
    assert _held_by_its_own_frames(many.value) == []
