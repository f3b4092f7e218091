"""Flow control: ordering keys, concurrency and rate limits, retries and
dead letters, batches.

Timing rules are checked in loop time (looptime) or with an injected
clock: nothing here sleeps for real.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from conftest import is_cancelled
from event_collector import (
    BatchCollector,
    Collector,
    CollectorQueue,
    ConfigError,
    Context,
    DeadLettered,
    Error,
    EventCancelled,
    Ok,
    Payload,
    QueueFull,
    RateLimit,
    Retry,
    RetryAfter,
    Router,
    Superseded,
)
from event_collector.flow import TokenBucket

GUARD = 60.0


def _queue(*collectors: Collector, **options: Any) -> CollectorQueue:
    options.setdefault("logging", False)
    return CollectorQueue(list(collectors), **options)


# -- the parts, with an injected clock ---------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_starts_full_then_refills_at_its_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(RateLimit(50, per=1.0, burst=10), clock)
    assert [bucket.take() for _ in range(11)] == [True] * 10 + [False]
    assert bucket.wait() == pytest.approx(0.02)
    clock.now = 0.019
    assert not bucket.take()
    clock.now = 0.02
    assert bucket.take()
    clock.now = 100.0  # a long quiet spell refills to the burst, no more
    assert bucket.tokens == 10
    assert sum(bucket.take() for _ in range(20)) == 10


def test_token_bucket_default_burst_spaces_calls_evenly() -> None:
    clock = Clock()
    bucket = TokenBucket(RateLimit(4, per=2.0), clock)
    taken = []
    for step in range(41):
        clock.now = step * 0.05
        if bucket.take():
            taken.append(round(clock.now, 2))
    assert taken == [0.0, 0.5, 1.0, 1.5, 2.0]


def test_retry_backoff_doubles_up_to_the_cap() -> None:
    retry = Retry(attempts=8, backoff=0.1, max_backoff=1.0, jitter=False)
    assert [retry.delay(n) for n in range(1, 7)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    )
    assert retry.delay(5000) == 1.0  # no overflow far past the cap


def test_retry_jitter_draws_between_half_and_all_of_the_wait() -> None:
    retry = Retry(backoff=0.4, max_backoff=30.0)
    assert retry.delay(2, rand=0.0) == pytest.approx(0.4)
    assert retry.delay(2, rand=0.5) == pytest.approx(0.6)
    assert retry.delay(2, rand=0.999) == pytest.approx(0.7996)
    draws = {retry.delay(1) for _ in range(50)}
    assert all(0.2 <= d <= 0.4 for d in draws)
    assert len(draws) > 1


def test_retry_retries_only_what_it_names() -> None:
    retry = Retry(on=(ConnectionError,))
    assert retry.retries(ConnectionRefusedError())
    assert not retry.retries(ValueError())
    assert Retry(on=KeyError).on == (KeyError,)


@pytest.mark.parametrize(
    ("make", "word"),
    [
        (lambda: RateLimit(0), "rate"),
        (lambda: RateLimit(5, per=float("inf")), "per"),
        (lambda: RateLimit(5, burst=0), "burst"),
        (lambda: RateLimit(5, burst=True), "burst"),
        (lambda: Retry(attempts=0), "attempts"),
        (lambda: Retry(backoff=-1), "backoff"),
        (lambda: Retry(max_backoff=0), "max_backoff"),
        (lambda: Retry(on=("ValueError",)), "on"),  # type: ignore[arg-type]
        (lambda: Collector("c", _echo, concurrency=0), "concurrency"),
        (lambda: Collector("c", _echo, rate_limit=50), "rate_limit"),  # type: ignore[arg-type]
        (lambda: Collector("c", _echo, retry=3), "retry"),  # type: ignore[arg-type]
        (lambda: BatchCollector("b", _batch_len, max_size=0), "max_size"),
        (lambda: BatchCollector("b", _batch_len, max_wait=-1), "max_wait"),
        (lambda: BatchCollector("b", _sync_batch, max_wait=1), "processor"),  # type: ignore[arg-type]
    ],
)
def test_bad_options_are_config_errors_naming_them(
    make: Callable[[], object], word: str
) -> None:
    with pytest.raises(ConfigError, match=word):
        make()


def test_retry_after_needs_a_finite_delay() -> None:
    assert RetryAfter(2).seconds == 2.0
    with pytest.raises(ValueError, match="finite"):
        RetryAfter(float("nan"))


async def _echo(payload: Payload[Any], ctx: Context) -> Any:
    return payload.value


def _sync_batch(payloads: list[Payload[Any]], ctx: Context) -> list[Any]:
    return payloads


async def _batch_len(payloads: list[Payload[Any]], ctx: Context) -> list[int]:
    return [len(payloads)] * len(payloads)


# -- per-key ordering ----------------------------------------------------------


@pytest.mark.looptime
async def test_events_of_a_key_run_one_at_a_time_in_send_order() -> None:
    log: list[tuple[str, Any, Any]] = []

    async def handler(payload: Payload[Any], ctx: Context) -> Any:
        key = payload.ordering_key
        log.append(("start", key, payload.value))
        await asyncio.sleep(0.1 if payload.value % 2 else 0.3)
        log.append(("end", key, payload.value))
        return payload.value

    queue = _queue(Collector("c", handler), autoscale=False, max_consumers=8)
    async with queue:
        publisher = queue.get_publisher()
        events = [await publisher.send(i, ordering_key=f"k{i % 3}") for i in range(12)]
        async with asyncio.timeout(GUARD):
            results = [await e for e in events]
    assert results == [[Ok(i)] for i in range(12)]
    for key in ("k0", "k1", "k2"):
        mine = [(what, v) for what, k, v in log if k == key]
        values = [v for _, v in mine]
        # start, end, start, end...: never two of a key at once, in order.
        assert [w for w, _ in mine] == ["start", "end"] * 4
        assert values[::2] == sorted(values[::2])
    # Different keys ran side by side.
    assert log[:3] == [("start", "k0", 0), ("start", "k1", 1), ("start", "k2", 2)]


@pytest.mark.looptime
async def test_a_key_orders_the_whole_event_across_its_collectors() -> None:
    running: set[str] = set()
    overlaps = []

    def make(name: str, seconds: float) -> Collector:
        async def handler(payload: Payload[Any], ctx: Context) -> Any:
            if running:
                overlaps.append((name, payload.value, set(running)))
            running.add(name)
            await asyncio.sleep(seconds)
            running.discard(name)
            return name

        return Collector(name, handler)

    queue = _queue(make("a", 0.1), make("b", 0.4), max_consumers=4, autoscale=False)
    async with queue:
        publisher = queue.get_publisher()
        events = [await publisher.send(i, ordering_key="one") for i in range(3)]
        results = [await e for e in events]
    assert results == [[Ok("a"), Ok("b")]] * 3
    # Within one event a and b overlap; the next event waited for both.
    assert [(n, v) for n, v, _ in overlaps] == [("b", 0), ("b", 1), ("b", 2)]


@pytest.mark.looptime
async def test_a_thousand_events_of_one_key_need_one_consumer() -> None:
    loop = asyncio.get_running_loop()

    async def handler(payload: Payload[Any], ctx: Context) -> Any:
        await asyncio.sleep(0.001)
        return payload.value

    # No spare consumers (wip_margin=0): the pool holds what the runnable
    # work needs, and one key's events are one runnable event at a time.
    queue = _queue(
        Collector("c", handler),
        min_consumers=1,
        max_consumers=50,
        monitor_interval=0.01,
        wip_margin=0.0,
        clock=loop.time,
    )
    async with queue:
        publisher = queue.get_publisher()
        events = [await publisher.send(i, ordering_key="device-7") for i in range(1000)]
        peak = 0
        sizes = []
        while not events[-1].is_done():
            await asyncio.sleep(0.05)
            load = queue.current_load()
            sizes.append(load.qsize)
            peak = max(peak, queue.consumer_count())
        results = [await e for e in events]
    assert results == [[Ok(i)] for i in range(1000)]
    assert queue._engine.inbox.put_count == 1000  # every one an arrival
    assert peak == 1
    assert max(sizes) <= 1  # only the key's head is ever queued


async def test_supersede_keeps_only_the_newest_unstarted_event() -> None:
    gate, started = asyncio.Event(), asyncio.Event()
    seen: list[Any] = []

    async def handler(payload: Payload[Any], ctx: Context) -> Any:
        seen.append(payload.value)
        if payload.value == "first":
            started.set()
            await gate.wait()
        return payload.value

    queue = _queue(Collector("c", handler), autoscale=False, max_consumers=2)
    async with queue:
        publisher = queue.get_publisher()
        first = await publisher.send("first", ordering_key="s")
        await started.wait()
        stale = [await publisher.send(i, ordering_key="s") for i in range(3)]
        other = await publisher.send("other", ordering_key="t")
        newest = await publisher.send("newest", ordering_key="s", supersede=True)
        for event in stale:
            [result] = await event
            assert isinstance(result, Error)
            assert isinstance(result.err, Superseded)
            assert isinstance(result.err, EventCancelled)
        assert not first.is_done()  # it had started: it goes on
        gate.set()
        assert await first == [Ok("first")]
        assert await newest == [Ok("newest")]
        assert await other == [Ok("other")]
    assert seen == ["first", "other", "newest"]


async def test_supersede_replaces_a_queued_event_that_has_not_started() -> None:
    queue = _queue(Collector("c", _echo), autoscale=False, max_consumers=1)
    async with queue:
        publisher = queue.get_publisher()
        # Sent without yielding: the consumer has started neither.
        old = publisher.send_nowait(1, ordering_key="k")
        new = publisher.send_nowait(2, ordering_key="k", supersede=True)
        [result] = await old
        assert isinstance(result, Error)
        assert isinstance(result.err, Superseded)
        assert await new == [Ok(2)]
        assert queue.current_load().qsize == 0


async def test_every_event_says_its_ordering_key() -> None:
    seen: list[Any] = []
    handed: list[Payload[Any]] = []

    async def handler(payload: Payload[Any], ctx: Context) -> Any:
        seen.append(payload.ordering_key)
        handed.append(payload)
        return payload.value

    queue = _queue(Collector("c", handler))
    async with queue:
        publisher = queue.get_publisher()
        plain = await publisher.send(1)
        keyed = [await publisher.send(n, ordering_key="k") for n in (2, 3)]
        # Read while it waits behind its key: the handler gets this one.
        early = keyed[1].payload
        answers = [await e for e in (plain, *keyed)]
    assert answers == [[Ok(1)], [Ok(2)], [Ok(3)]]
    assert sorted(seen, key=str) == [None, "k", "k"]
    assert [p for p in handed if p.value == 3] == [early]
    assert next(p for p in handed if p.value == 3) is early
    assert [e.ordering_key for e in (plain, *keyed)] == [None, "k", "k"]
    # The event's own Payload, made when read after the handler ran, says
    # the key as well.
    assert [e.payload.ordering_key for e in (plain, *keyed)] == [None, "k", "k"]
    assert keyed[1].payload is keyed[1].payload


async def test_payload_ordering_key_and_bad_keys() -> None:
    queue = _queue(Collector("c", _echo))
    async with queue:
        publisher = queue.get_publisher()
        event = await publisher.send(Payload("v", ordering_key=5))
        assert event.payload.ordering_key == 5
        assert await event == [Ok("v")]
        with pytest.raises(TypeError, match="ordering_key"):
            await publisher.send(1, ordering_key=1.5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="supersede"):
            await publisher.send(1, supersede=True)
    with pytest.raises(TypeError, match="ordering_key"):
        Payload(1, ordering_key=True)


async def test_held_events_count_toward_maxsize() -> None:
    gate = asyncio.Event()

    async def handler(payload: Payload[Any], ctx: Context) -> Any:
        await gate.wait()
        return payload.value

    queue = _queue(Collector("c", handler), autoscale=False, max_consumers=1, maxsize=3)
    async with queue:
        publisher = queue.get_publisher()
        running = publisher.send_nowait(0, ordering_key="k")
        await asyncio.sleep(0)
        held = [publisher.send_nowait(i, ordering_key="k") for i in (1, 2, 3)]
        with pytest.raises(QueueFull):
            publisher.send_nowait(4, ordering_key="k")
        blocked = asyncio.create_task(publisher.send(4, ordering_key="k"))
        await asyncio.sleep(0.01)
        assert not blocked.done()
        gate.set()
        fourth = await blocked
        assert [await e for e in (running, *held, fourth)] == [
            [Ok(i)] for i in range(5)
        ]


# -- concurrency and rate limits --------------------------------------------------


@pytest.mark.looptime
async def test_concurrency_limit_holds_no_consumer() -> None:
    now_running = 0
    peak = 0

    async def slow(payload: Payload[Any], ctx: Context) -> Any:
        nonlocal now_running, peak
        now_running += 1
        peak = max(peak, now_running)
        await asyncio.sleep(1.0)
        now_running -= 1
        return payload.value

    queue = _queue(
        Collector("slow", slow, topics=["slow"], concurrency=2),
        Collector("fast", _echo, topics=["fast"]),
        autoscale=False,
        max_consumers=3,
    )
    loop = asyncio.get_running_loop()
    async with queue:
        publisher = queue.get_publisher()
        slow_events = [
            await publisher.send(Payload(i, topics=["slow"])) for i in range(10)
        ]
        await asyncio.sleep(0.1)
        # Eight slow calls wait, and the three consumers are still free for
        # the fast collector.
        start = loop.time()
        fast = [await publisher.send(Payload(i, topics=["fast"])) for i in range(5)]
        assert [await e for e in fast] == [[Ok(i)] for i in range(5)]
        assert loop.time() - start < 0.5
        assert [await e for e in slow_events] == [[Ok(i)] for i in range(10)]
    assert peak == 2
    assert loop.time() >= 5.0  # ten one-second calls, two at a time


@pytest.mark.looptime
async def test_rate_limit_spaces_calls_and_counts_retries() -> None:
    loop = asyncio.get_running_loop()
    starts: list[float] = []
    failed: set[int] = set()

    async def handler(payload: Payload[Any], ctx: Context) -> Any:
        starts.append(loop.time())
        if payload.value % 2 and payload.value not in failed:
            failed.add(payload.value)
            raise ConnectionError("once")
        return payload.value

    queue = _queue(
        Collector(
            "c",
            handler,
            rate_limit=RateLimit(10, per=1.0, burst=2),
            retry=Retry(attempts=2, backoff=0.0),
        ),
        autoscale=False,
        max_consumers=4,
    )
    async with queue:
        t0 = loop.time()
        publisher = queue.get_publisher()
        events = [await publisher.send(i) for i in range(10)]
        assert [await e for e in events] == [[Ok(i)] for i in range(10)]
    assert len(starts) == 15  # ten calls and five retries
    offsets = [round(s - t0, 3) for s in starts]
    # Two at once (the burst), then one every 0.1 s.
    assert offsets[:2] == [0.0, 0.0]
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(offsets[1:])]
    assert min(gaps) >= 0.1 - 1e-6
    assert offsets[-1] == pytest.approx(1.3, abs=0.01)


# -- retries ---------------------------------------------------------------------


@pytest.mark.looptime
async def test_retry_waits_the_backoff_schedule_then_dead_letters() -> None:
    loop = asyncio.get_running_loop()
    calls: list[float] = []

    async def down(payload: Payload[Any], ctx: Context) -> Any:
        calls.append(loop.time())
        raise ConnectionError(f"attempt {len(calls)}")

    letters: list[DeadLettered] = []
    queue = _queue(
        Collector(
            "api",
            down,
            retry=Retry(attempts=4, backoff=0.5, max_backoff=1.5, jitter=False),
        ),
        autoscale=False,
        max_consumers=1,
    )

    async def store(message: DeadLettered, _: Any) -> None:
        assert not message.event.is_done()  # stored before the answer
        letters.append(message)

    queue.get_message_bus().add_msg_handler(DeadLettered, store)
    async with queue:
        t0 = loop.time()
        event = await queue.get_publisher().send("x")
        [result] = await event
    assert [round(c - t0, 3) for c in calls] == [0.0, 0.5, 1.5, 3.0]
    assert isinstance(result, Error)
    assert isinstance(result.err, ConnectionError)
    assert str(result.err) == "attempt 4"
    assert result.details == {"attempts": 4}
    [letter] = letters
    assert (letter.collector, letter.attempts, letter.event) == ("api", 4, event)
    assert letter.error is result.err


@pytest.mark.looptime
async def test_retry_after_sets_the_wait_and_other_errors_are_not_retried() -> None:
    loop = asyncio.get_running_loop()
    calls: list[tuple[Any, float]] = []

    async def handler(payload: Payload[Any], ctx: Context) -> Any:
        calls.append((payload.value, loop.time()))
        if payload.value == "later" and len(calls) == 1:
            raise RetryAfter(7)
        if payload.value == "bad":
            raise ValueError("not retried")
        return payload.value

    letters: list[DeadLettered] = []

    async def store(message: DeadLettered, _: Any) -> None:
        letters.append(message)

    queue = _queue(Collector("c", handler, retry=Retry(attempts=3)), max_consumers=1)
    queue.get_message_bus().add_msg_handler(DeadLettered, store)
    async with queue:
        t0 = loop.time()
        publisher = queue.get_publisher()
        later = await (await publisher.send("later"))
        bad = await (await publisher.send("bad"))
    assert later == [Ok("later")]
    assert [round(t - t0, 3) for v, t in calls if v == "later"] == [0.0, 7.0]
    [result] = bad
    assert isinstance(result, Error)
    assert isinstance(result.err, ValueError)
    assert result.details is None
    assert sum(v == "bad" for v, _ in calls) == 1
    assert letters == []


async def test_retry_after_without_retry_is_an_ordinary_error() -> None:
    async def handler(payload: Payload[Any], ctx: Context) -> Any:
        raise RetryAfter(1)

    queue = _queue(Collector("c", handler))
    async with queue:
        [result] = await (await queue.get_publisher().send(1))
    assert isinstance(result, Error)
    assert isinstance(result.err, RetryAfter)


@pytest.mark.looptime
async def test_a_waiting_retry_holds_no_consumer() -> None:
    failed: list[Any] = []

    async def flaky(payload: Payload[Any], ctx: Context) -> Any:
        if payload.value == "flaky" and not failed:
            failed.append(payload.value)
            raise TimeoutError("slow backend")
        return payload.value

    queue = _queue(
        Collector("c", flaky, retry=Retry(backoff=20.0, jitter=False)),
        autoscale=False,
        max_consumers=1,
    )
    loop = asyncio.get_running_loop()
    async with queue:
        publisher = queue.get_publisher()
        t0 = loop.time()
        waiting = await publisher.send("flaky")
        others = [await publisher.send(i) for i in range(3)]
        assert [await e for e in others] == [[Ok(i)] for i in range(3)]
        assert loop.time() - t0 < 1.0
        load = queue.current_load()
        assert (load.qsize, load.busy, load.consumers) == (0, 0, 1)
        assert await waiting == [Ok("flaky")]
        assert loop.time() - t0 >= 20.0


# -- batches ---------------------------------------------------------------------


@pytest.mark.looptime
async def test_batches_fill_up_to_max_size_or_wait_max_wait() -> None:
    loop = asyncio.get_running_loop()
    batches: list[tuple[float, list[Any]]] = []

    async def insert(payloads: list[Payload[Any]], ctx: Context) -> list[Any]:
        batches.append((loop.time(), [p.value for p in payloads]))
        return [p.value * 10 for p in payloads]

    queue = _queue(BatchCollector("db", insert, max_size=4, max_wait=0.5))
    async with queue:
        t0 = loop.time()
        publisher = queue.get_publisher()
        events = [await publisher.send(i) for i in range(10)]
        results = [await e for e in events]
    assert results == [[Ok(i * 10)] for i in range(10)]
    assert [values for _, values in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [round(t - t0, 3) for t, _ in batches] == [0.0, 0.0, 0.5]


async def test_a_batch_error_answers_every_event_of_the_batch() -> None:
    async def broken(payloads: list[Payload[Any]], ctx: Context) -> list[Any]:
        if payloads[0].value == "short":
            return []
        raise RuntimeError("database down")

    queue = _queue(BatchCollector("db", broken, max_size=2, max_wait=0))
    async with queue:
        publisher = queue.get_publisher()
        events = [await publisher.send(v) for v in ("a", "b", "short", "c")]
        answers = [await e for e in events]
    errors = [r[0].err for r in answers if isinstance(r[0], Error)]
    assert [type(e) for e in errors] == [
        RuntimeError,
        RuntimeError,
        ValueError,
        ValueError,
    ]
    assert "returned 0 results for 2 payloads" in str(errors[2])


async def test_batch_processor_may_return_results() -> None:
    async def mixed(payloads: list[Payload[Any]], ctx: Context) -> list[Any]:
        return [Ok(1), Error("no"), 3][: len(payloads)]

    queue = _queue(BatchCollector("db", mixed, max_size=3, max_wait=1))
    async with queue:
        publisher = queue.get_publisher()
        events = [await publisher.send(i) for i in range(3)]
        first, second, third = [await e for e in events]
    assert first == [Ok(1)]
    assert third == [Ok(3)]
    [error] = second
    assert isinstance(error, Error)
    assert error.err == "no"


# -- shutdown ----------------------------------------------------------------------


@pytest.mark.looptime
async def test_shutdown_drains_held_work_within_the_timeout() -> None:
    loop = asyncio.get_running_loop()
    attempts = 0

    async def flaky(payload: Payload[Any], ctx: Context) -> Any:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError("first")
        return payload.value

    queue = _queue(
        Collector("r", flaky, topics=["r"], retry=Retry(backoff=2.0, jitter=False)),
        Collector("k", _slow_echo, topics=["k"]),
        consumer_shutdown_timeout=10.0,
        autoscale=False,
        max_consumers=2,
    )
    await queue.init_queue()
    publisher = queue.get_publisher()
    retried = await publisher.send(Payload("r", topics=["r"]))
    keyed = [
        await publisher.send(Payload(i, topics=["k"]), ordering_key="k")
        for i in range(4)
    ]
    await asyncio.sleep(0.1)
    t0 = loop.time()
    await queue.shut_down_queue()
    assert await retried == [Ok("r")]
    assert [await e for e in keyed] == [[Ok(i)] for i in range(4)]
    assert loop.time() - t0 < 10.0


async def _slow_echo(payload: Payload[Any], ctx: Context) -> Any:
    await asyncio.sleep(1.0)
    return payload.value


@pytest.mark.looptime
async def test_shutdown_cancels_what_is_still_held_after_the_timeout() -> None:
    async def hang(payload: Payload[Any], ctx: Context) -> Any:
        await asyncio.Event().wait()

    async def down(payload: Payload[Any], ctx: Context) -> Any:
        raise ConnectionError("down")

    queue = _queue(
        Collector("hang", hang, topics=["hang"], concurrency=1),
        Collector("down", down, topics=["down"], retry=Retry(backoff=50.0)),
        BatchCollector("b", _batch_len, topics=["b"], max_size=100, max_wait=100.0),
        consumer_shutdown_timeout=1.0,
        autoscale=False,
        max_consumers=2,
    )
    await queue.init_queue()
    publisher = queue.get_publisher()
    sends: list[Awaitable[Any]] = []
    for topic in ("hang", "hang", "down", "b"):
        sends.append(await publisher.send(Payload(topic, topics=[topic])))
    keyed = [
        await publisher.send(Payload(i, topics=["hang"]), ordering_key="x")
        for i in range(3)
    ]
    await asyncio.sleep(0.5)
    async with asyncio.timeout(GUARD):
        await queue.shut_down_queue()
    answers = [await e for e in (*sends, *keyed)]
    assert all(is_cancelled(a) for a in answers), answers
    assert queue.get_metrics().qsize == 0


# -- where flow control cannot hold -------------------------------------------------


def test_a_custom_router_cannot_use_flow_controlled_collectors() -> None:
    class Mine(Router):
        async def handle_event(self, payload: Payload[Any]) -> Any:
            return []

    with pytest.raises(ConfigError, match="SimpleRouter"):
        _queue(Collector("c", _echo, concurrency=2), router=Mine)


def test_flow_control_is_refused_on_a_transport_of_other_processes() -> None:
    pytest.importorskip("redis")
    from event_collector.redis import RedisTransport

    transport = RedisTransport("redis://127.0.0.1:1/0", stream="s")
    with pytest.raises(ConfigError, match="in-memory transport"):
        _queue(Collector("c", _echo, retry=Retry()), transport=transport)


async def test_plain_queues_keep_the_plain_pool() -> None:
    from event_collector._consumers import ConsumerPool
    from event_collector._flow_pool import FlowPool

    plain = _queue(Collector("c", _echo))
    assert type(plain._engine.pool) is ConsumerPool
    limited = _queue(Collector("c", _echo, concurrency=3))
    assert type(limited._engine.pool) is FlowPool


async def test_observers_and_metrics_see_each_event_once() -> None:
    seen: list[int] = []

    failed: set[int] = set()

    async def flaky(payload: Payload[Any], ctx: Context) -> Any:
        if payload.value % 2 and payload.value not in failed:
            failed.add(payload.value)
            raise ConnectionError("again")
        return payload.value

    queue = _queue(
        Collector("c", flaky, retry=Retry(backoff=0.001), concurrency=2),
        BatchCollector("b", _batch_len, max_size=3, max_wait=0.001),
    )
    queue.add_event_observer(lambda event: seen.append(event.id))
    async with queue:
        publisher = queue.get_publisher()
        events = [await publisher.send(i) for i in range(9)]
        for event in events:
            assert len(await event) == 2
        await publisher.wait()
        metrics = queue.get_metrics()
    assert sorted(seen) == sorted(e.id for e in events)
    assert metrics.event_count == 9


@pytest.mark.looptime
async def test_rate_limit_holds_for_starts_delayed_by_busy_consumers() -> None:
    loop = asyncio.get_running_loop()
    starts: list[float] = []

    async def rated(payload: Payload[Any], ctx: Context) -> Any:
        starts.append(loop.time())
        return payload.value

    queue = _queue(
        Collector("slow", _slow_echo, topics=["slow"]),
        Collector("rated", rated, topics=["rated"], rate_limit=RateLimit(5, burst=1)),
        autoscale=False,
        max_consumers=1,
    )
    async with queue:
        publisher = queue.get_publisher()
        t0 = loop.time()
        slow = await publisher.send(Payload("s", topics=["slow"]))
        await asyncio.sleep(0)  # the one consumer is busy for a second
        events = [await publisher.send(Payload(i, topics=["rated"])) for i in range(4)]
        await slow
        assert [await e for e in events] == [[Ok(i)] for i in range(4)]
    # Released while the consumer was busy, they still start 0.2 s apart.
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(starts)]
    assert starts[0] - t0 >= 1.0
    assert gaps == [0.2, 0.2, 0.2]


async def test_prometheus_exports_held_back_work_by_reason() -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from event_collector.prometheus import instrument

    gate = asyncio.Event()

    async def blocked(payload: Payload[Any], ctx: Context) -> Any:
        await gate.wait()
        return payload.value

    queue = _queue(
        Collector("k", blocked, topics=["k"]),
        Collector("one", blocked, topics=["one"], concurrency=1),
        autoscale=False,
        max_consumers=4,
    )
    registry = prometheus_client.CollectorRegistry()
    instrument(queue, registry=registry, name="flow")

    def held(reason: str) -> float | None:
        value: float | None = registry.get_sample_value(
            "event_collector_held_events", {"queue": "flow", "reason": reason}
        )
        return value

    async with queue:
        publisher = queue.get_publisher()
        events = [
            await publisher.send(Payload(i, topics=["k"]), ordering_key="x")
            for i in range(3)
        ]
        events += [await publisher.send(Payload(i, topics=["one"])) for i in range(4)]
        await asyncio.sleep(0.01)
        assert held("ordering_key") == 2
        assert held("concurrency") == 3
        assert held("retry") == held("rate_limit") == held("batch") == 0
        assert queue.get_metrics().qsize == 0
        gate.set()
        for event in events:
            await event
        assert held("ordering_key") == held("concurrency") == 0


@pytest.mark.looptime
async def test_a_shutdown_during_a_dead_letter_dispatch_still_answers() -> None:
    async def down(payload: Payload[Any], ctx: Context) -> Any:
        raise ConnectionError("down")

    async def slow_store(message: DeadLettered, _: Any) -> None:
        await asyncio.sleep(10)

    queue = _queue(
        Collector("api", down, retry=Retry(attempts=1)),
        autoscale=False,
        max_consumers=1,
        consumer_shutdown_timeout=0.2,
    )
    queue.get_message_bus().add_msg_handler(DeadLettered, slow_store)
    await queue.init_queue()
    event = await queue.get_publisher().send("x")
    await asyncio.sleep(0.05)  # the call failed; the dispatch is under way
    await queue.shut_down_queue()
    [result] = await event
    assert isinstance(result, Error)
    assert isinstance(result.err, ConnectionError)
    assert queue._engine.pool.busy == 0


@pytest.mark.looptime
async def test_a_held_send_waiting_for_room_passes_a_wake_up_on() -> None:
    loop = asyncio.get_running_loop()

    async def handler(payload: Payload[Any], ctx: Context) -> Any:
        await asyncio.sleep({"head": 3.0, "short": 0.2}.get(payload.value, 0))
        return payload.value

    queue = _queue(Collector("c", handler), maxsize=1, autoscale=False, max_consumers=2)
    async with queue:
        publisher = queue.get_publisher()
        await publisher.send("head", ordering_key="k")
        await publisher.send("short")
        await asyncio.sleep(0.01)
        await publisher.send("held", ordering_key="k")  # behind the head
        await publisher.send("queued")
        keyed = asyncio.create_task(publisher.send("keyed", ordering_key="k"))
        await asyncio.sleep(0)
        t0 = loop.time()
        # Room comes when "short" ends and "queued" is taken, at 0.2 s.
        await publisher.send("unkeyed")
        assert loop.time() - t0 == pytest.approx(0.19, abs=0.01)
        await keyed
