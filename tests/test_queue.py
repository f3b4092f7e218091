"""The collector queue: the names of the specification page and their
defaults, parameters, life cycle, autoscaling, metrics, the reporter,
logging, queue types, collectors and the message bus."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import typing_extensions
from structlog.testing import capture_logs

import event_collector._monitor as monitor_module
import event_collector.queue as queue_module
from conftest import FakeClock, Gate, wait_for, wait_reads
from event_collector import (
    Collector,
    CollectorQueue,
    Context,
    Payload,
    QueueClosed,
    QueueType,
    SimpleRouter,
)
from event_collector.data import Ok
from event_collector.messagebus import BusEventQueue, Command, Message, MessageBus
from event_collector.publisher import CollectorEvent
from event_collector.queue import (
    AVG_LOAD_INTERVAL,
    CONSUMER_SHUTDOWN_TIMEOUT,
    DEFAULT_MAX_CONSUMERS,
    DEFAULT_MIN_CONSUMERS,
    EVENT_SERVICE_DATA_WINDOW_SIZE,
    METRICS_COLLECTOR_WINDOW_SIZE,
    METRICS_WARMUP_INTERVAL,
    MONITOR_INTERVAL,
    REPORT_INTERVAL,
    WIP_MARGIN,
    InitializedQueue,
    Load,
    Metrics,
    MonotonicTime,
    ReportedMetrics,
    ShutDownQueue,
)

METRICS_FIELDS = [
    "timestamp",
    "qsize",
    "busy",
    "consumers",
    "load",
    "avg_load",
    "service_time",
    "wait_time",
    "arrival_rate",
    "departure_rate",
    "wip",
    "event_count",
]

PARAMETERS = [
    "collectors",
    "router",
    "autoscale",
    "min_consumers",
    "max_consumers",
    "wip_margin",
    "monitor_interval",
    "report_interval",
    "avg_load_interval",
    "metrics_collector_window_size",
    "event_service_data_window_size",
    "metrics_warmup_interval",
    "queue_type",
    "default_priority",
    "consumer_shutdown_timeout",
    "logging",
]


async def echo(payload: Payload[Any], ctx: Context) -> Any:
    return payload.value


# -- the names of the page ---------------------------------------------------


def test_constants_have_the_documented_defaults() -> None:
    assert MONITOR_INTERVAL == 0.01
    assert REPORT_INTERVAL == 0
    assert WIP_MARGIN == 0.15
    assert AVG_LOAD_INTERVAL == 60
    assert METRICS_COLLECTOR_WINDOW_SIZE == 60
    assert EVENT_SERVICE_DATA_WINDOW_SIZE == 500
    assert METRICS_WARMUP_INTERVAL == 3
    assert CONSUMER_SHUTDOWN_TIMEOUT == 10
    assert isinstance(DEFAULT_MIN_CONSUMERS, int)
    assert isinstance(DEFAULT_MAX_CONSUMERS, int)
    assert 1 <= DEFAULT_MIN_CONSUMERS <= DEFAULT_MAX_CONSUMERS
    assert isinstance(EVENT_SERVICE_DATA_WINDOW_SIZE, int)


def test_every_name_of_the_page_is_exported() -> None:
    names = {
        "MonotonicTime",
        "DEFAULT_MIN_CONSUMERS",
        "DEFAULT_MAX_CONSUMERS",
        "CONSUMER_SHUTDOWN_TIMEOUT",
        "WIP_MARGIN",
        "MONITOR_INTERVAL",
        "REPORT_INTERVAL",
        "AVG_LOAD_INTERVAL",
        "METRICS_COLLECTOR_WINDOW_SIZE",
        "EVENT_SERVICE_DATA_WINDOW_SIZE",
        "METRICS_WARMUP_INTERVAL",
        "Metrics",
        "CollectorQueue",
        "ReportedMetrics",
        "InitializedQueue",
        "ShutDownQueue",
    }
    assert names <= set(queue_module.__all__)
    for name in queue_module.__all__:
        assert hasattr(queue_module, name), name


def test_monotonic_time_is_a_type_alias_object() -> None:
    if sys.version_info < (3, 12):
        assert isinstance(MonotonicTime, typing_extensions.TypeAliasType)
    else:
        import typing

        assert isinstance(MonotonicTime, typing.TypeAliasType)
    assert MonotonicTime.__name__ == "MonotonicTime"
    assert MonotonicTime.__value__ is float


def test_metrics_has_its_twelve_fields_in_order() -> None:
    assert [f.name for f in dataclasses.fields(Metrics)] == METRICS_FIELDS


def test_bus_messages_carry_their_documented_attribute() -> None:
    assert issubclass(ReportedMetrics, Message)
    assert issubclass(InitializedQueue, Message)
    assert issubclass(ShutDownQueue, Message)
    assert [f.name for f in dataclasses.fields(ReportedMetrics)] == ["metrics"]
    assert [f.name for f in dataclasses.fields(InitializedQueue)] == ["collector_queue"]
    assert [f.name for f in dataclasses.fields(ShutDownQueue)] == ["collector_queue"]


def test_constructor_parameters_and_defaults() -> None:
    params = inspect.signature(CollectorQueue).parameters
    assert list(params)[: len(PARAMETERS)] == PARAMETERS
    defaults = {name: p.default for name, p in params.items()}
    assert defaults["router"] is SimpleRouter
    assert defaults["autoscale"] is True
    assert defaults["min_consumers"] == DEFAULT_MIN_CONSUMERS
    assert defaults["max_consumers"] == DEFAULT_MAX_CONSUMERS
    assert defaults["wip_margin"] == WIP_MARGIN
    assert defaults["monitor_interval"] == MONITOR_INTERVAL
    assert defaults["report_interval"] == REPORT_INTERVAL
    assert defaults["avg_load_interval"] == AVG_LOAD_INTERVAL
    assert defaults["metrics_collector_window_size"] == METRICS_COLLECTOR_WINDOW_SIZE
    assert defaults["event_service_data_window_size"] == EVENT_SERVICE_DATA_WINDOW_SIZE
    assert defaults["metrics_warmup_interval"] == METRICS_WARMUP_INTERVAL
    assert defaults["queue_type"] is QueueType.FIFO
    assert defaults["default_priority"] == 100
    assert defaults["consumer_shutdown_timeout"] == CONSUMER_SHUTDOWN_TIMEOUT
    assert defaults["logging"] is True
    # The extras are keyword-only, after the page's parameters.
    assert params["maxsize"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["clock"].kind is inspect.Parameter.KEYWORD_ONLY


def test_defaults_are_kept_as_attributes() -> None:
    queue = CollectorQueue([Collector("c", echo)])
    assert queue.router is SimpleRouter
    assert queue.autoscale is True
    assert queue.min_consumers == DEFAULT_MIN_CONSUMERS
    assert queue.max_consumers == DEFAULT_MAX_CONSUMERS
    assert queue.wip_margin == WIP_MARGIN
    assert queue.monitor_interval == MONITOR_INTERVAL
    assert queue.report_interval == REPORT_INTERVAL
    assert queue.avg_load_interval == AVG_LOAD_INTERVAL
    assert queue.metrics_collector_window_size == METRICS_COLLECTOR_WINDOW_SIZE
    assert queue.event_service_data_window_size == EVENT_SERVICE_DATA_WINDOW_SIZE
    assert queue.metrics_warmup_interval == METRICS_WARMUP_INTERVAL
    assert queue.queue_type is QueueType.FIFO
    assert queue.default_priority == 100
    assert queue.consumer_shutdown_timeout == CONSUMER_SHUTDOWN_TIMEOUT
    assert queue.logging is True


class Custom(SimpleRouter):
    pass


def test_every_parameter_is_kept_as_an_attribute_of_the_same_name() -> None:
    given: dict[str, Any] = {
        "router": Custom,
        "autoscale": False,
        "min_consumers": 2,
        "max_consumers": 7,
        "wip_margin": 0.5,
        "monitor_interval": 0.02,
        "report_interval": 1.5,
        "avg_load_interval": 30.0,
        "metrics_collector_window_size": 10.0,
        "event_service_data_window_size": 50,
        "metrics_warmup_interval": 1.0,
        "queue_type": QueueType.LIFO,
        "default_priority": 7,
        "consumer_shutdown_timeout": 2.5,
        "logging": False,
    }
    collector = Collector("c", echo)
    queue = CollectorQueue([collector], **given)
    assert queue.collectors == [collector]
    for name, value in given.items():
        assert getattr(queue, name) == value, name


def test_every_parameter_attribute_has_a_docstring_for_autodoc() -> None:
    pycode = pytest.importorskip("sphinx.pycode")
    analyzer = pycode.ModuleAnalyzer
    docs = analyzer.for_module("event_collector.queue").find_attr_docs()
    # Metrics is defined in a leaf module and re-exported by the queue's.
    docs.update(analyzer.for_module(Metrics.__module__).find_attr_docs())
    for name in PARAMETERS:
        lines = docs.get(("CollectorQueue", name))
        assert lines, f"CollectorQueue.{name} has no attribute docstring"
        assert "".join(lines).strip()
    for name in METRICS_FIELDS:
        assert docs.get(("Metrics", name)), f"Metrics.{name} has no docstring"


def test_public_methods_exist() -> None:
    for name in (
        "init_queue",
        "shut_down_queue",
        "get_publisher",
        "get_metrics",
        "consumer_count",
        "current_load",
        "get_message_bus",
    ):
        method = getattr(CollectorQueue, name)
        assert callable(method), name
        assert method.__doc__, name
    assert inspect.iscoroutinefunction(CollectorQueue.init_queue)
    assert inspect.iscoroutinefunction(CollectorQueue.shut_down_queue)
    assert inspect.iscoroutinefunction(CollectorQueue.__aenter__)
    assert inspect.iscoroutinefunction(CollectorQueue.__aexit__)


# -- life cycle ----------------------------------------------------------------


async def test_async_with_starts_and_stops_the_queue() -> None:
    queue = CollectorQueue([Collector("c", echo)], logging=False)
    assert queue.state == "created"
    assert not queue.is_running
    assert queue.consumer_count() == 0
    async with queue as entered:
        assert entered is queue
        assert queue.is_running
        assert queue.state == "running"
        event = await queue.get_publisher().send(1)
        assert await event.wait() == [Ok(1)]
    assert queue.state == "closed"
    assert queue.consumer_count() == 0
    with pytest.raises(QueueClosed):
        await queue.get_publisher().send(2)


async def test_init_and_shut_down_by_hand() -> None:
    queue = CollectorQueue([Collector("c", echo)], logging=False)
    await queue.init_queue()
    try:
        with pytest.raises(RuntimeError, match="init_queue"):
            await queue.init_queue()
        event = await queue.get_publisher().send("x")
        assert await event.wait() == [Ok("x")]
    finally:
        await queue.shut_down_queue()
    await queue.shut_down_queue()  # twice is fine
    assert queue.state == "closed"


async def test_async_with_shuts_down_when_the_body_raises() -> None:
    queue = CollectorQueue([Collector("c", echo)], logging=False)
    with pytest.raises(KeyError, match="body"):
        async with queue:
            raise KeyError("body")
    assert queue.state == "closed"
    assert queue.consumer_count() == 0


async def test_shut_down_before_start_closes_the_queue_for_good() -> None:
    queue = CollectorQueue([Collector("c", echo)], logging=False)
    await queue.shut_down_queue()
    assert queue.state == "closed"
    with pytest.raises(RuntimeError, match="closed"):
        await queue.init_queue()
    with pytest.raises(QueueClosed):
        await queue.get_publisher().send(1)


async def test_request_shutdown_before_start_closes_the_queue_for_good() -> None:
    queue = CollectorQueue([Collector("c", echo)], logging=False)
    await queue.request_shutdown()
    try:
        # A queue shut down before it started stays shut down.
        with pytest.raises(RuntimeError, match="closed"):
            await queue.init_queue()
        await queue.shut_down_queue()
        assert queue.state == "closed"
        assert queue.consumer_count() == 0
        with pytest.raises(QueueClosed):
            await queue.get_publisher().send(1)
    finally:
        # Stop what a queue that failed to shut down leaves running.
        await queue._pool.stop()
        background = queue._life._background
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)


async def test_repr() -> None:
    queue = CollectorQueue([Collector("c", echo)], logging=False)
    assert repr(queue) == "<CollectorQueue created consumers=0 qsize=0>"
    gate = Gate()
    held = CollectorQueue(
        [Collector("g", gate)], autoscale=False, max_consumers=3, logging=False
    )
    async with held:
        pub = held.get_publisher()
        for i in range(5):
            await pub.send(i)
        await gate.until_running(3)
        assert repr(held) == "<CollectorQueue running consumers=3 qsize=2>"
        gate.open()
        await pub.wait()
    assert repr(held) == "<CollectorQueue closed consumers=0 qsize=0>"


# -- collectors ----------------------------------------------------------------


def recording_collectors(log: list[str]) -> list[Collector | type[Collector]]:
    class Recording(Collector):
        async def setup(self) -> None:
            log.append(f"setup {self.key}")

        async def teardown(self) -> None:
            log.append(f"teardown {self.key}")

        async def process(self, payload: Payload[Any]) -> Any:
            log.append(f"process {self.key}")
            return self.key

    class First(Recording):
        key = "first"

    class Third(Recording):
        key = "third"

    return [First, Recording("second"), Third]


async def test_collectors_as_classes_and_instances_with_setup_and_teardown() -> None:
    log: list[str] = []
    given = recording_collectors(log)
    queue = CollectorQueue(given, logging=False)
    assert [c.key for c in queue.collectors] == ["first", "second", "third"]
    assert all(isinstance(c, Collector) for c in queue.collectors)
    assert queue.collectors[1] is given[1], "an instance is used as it is"

    async def on_init(msg: InitializedQueue, q: BusEventQueue) -> None:
        log.append("InitializedQueue")

    async def on_shutdown(msg: ShutDownQueue, q: BusEventQueue) -> None:
        log.append("ShutDownQueue")

    bus = queue.get_message_bus()
    bus.add_msg_handler(InitializedQueue, on_init)
    bus.add_msg_handler(ShutDownQueue, on_shutdown)
    async with queue:
        event = await queue.get_publisher().send(Payload(0))
        results = await event.wait()
    assert [r.unwrap() for r in results] == ["first", "second", "third"]
    assert log[:4] == [
        "setup first",
        "setup second",
        "setup third",
        "InitializedQueue",
    ]
    assert sorted(log[4:7]) == ["process first", "process second", "process third"]
    assert log[7:] == [
        "teardown third",
        "teardown second",
        "teardown first",
        "ShutDownQueue",
    ]


async def test_lifecycle_and_context_around_the_queue() -> None:
    steps: list[str] = []

    @asynccontextmanager
    async def lifecycle(ctx: Context) -> AsyncIterator[None]:
        steps.append(f"enter {ctx.name}")
        ctx["db"] = {"answer": 42}
        yield
        steps.append(f"exit {ctx.name}")

    async def handler(payload: Payload[Any], ctx: Context) -> Any:
        return ctx.db[payload.value]

    collector = Collector(
        "c", handler, ctx=Context({"name": "svc"}), lifecycle=lifecycle
    )
    async with CollectorQueue([collector], logging=False) as queue:
        assert steps == ["enter svc"]
        event = await queue.get_publisher().send("answer")
        assert await event.wait() == [Ok(42)]
    assert steps == ["enter svc", "exit svc"]


# -- queue types ---------------------------------------------------------------


async def run_in_one_consumer(
    queue_type: QueueType,
    sends: list[tuple[Any, int | None]],
    **kwargs: Any,
) -> list[Any]:
    """Hold the only consumer on a first event, send ``sends``, release it,
    and return the order in which the handler saw the values."""
    gate = Gate()
    queue = CollectorQueue(
        [Collector("g", gate)],
        autoscale=False,
        max_consumers=1,
        queue_type=queue_type,
        logging=False,
        **kwargs,
    )
    async with queue:
        pub = queue.get_publisher()
        await pub.send("blocker", priority=0)
        await gate.until_running(1)
        for value, priority in sends:
            await pub.send(value, priority=priority)
        assert queue.current_load().qsize == len(sends)
        gate.open()
        await pub.wait()
    assert gate.order[0] == "blocker"
    return gate.order[1:]


async def test_fifo_is_the_default_order() -> None:
    sends: list[tuple[Any, int | None]] = [(i, None) for i in range(5)]
    assert await run_in_one_consumer(QueueType.FIFO, sends) == [0, 1, 2, 3, 4]


async def test_lifo_order() -> None:
    sends: list[tuple[Any, int | None]] = [(i, None) for i in range(5)]
    assert await run_in_one_consumer(QueueType.LIFO, sends) == [4, 3, 2, 1, 0]


async def test_priority_order_lowest_first_ties_in_send_order() -> None:
    sends: list[tuple[Any, int | None]] = [
        ("a", 5),
        ("b", 1),
        ("c", 5),
        ("default", None),
        ("d", 1),
        (Payload("payload-3", priority=3), None),
        (Payload("overridden-2", priority=500), 2),
        ("e", 5),
    ]
    order = await run_in_one_consumer(QueueType.PRIORITY, sends)
    values = [v.value if isinstance(v, Payload) else v for v in order]
    assert values == ["b", "d", "overridden-2", "payload-3", "a", "c", "e", "default"]


async def test_priority_default_priority_parameter() -> None:
    sends: list[tuple[Any, int | None]] = [("high", 1), ("default", None), ("low", 9)]
    order = await run_in_one_consumer(QueueType.PRIORITY, sends, default_priority=4)
    assert order == ["high", "default", "low"]


# -- load and consumers ----------------------------------------------------------


async def test_current_load_and_consumer_count() -> None:
    gate = Gate()
    queue = CollectorQueue(
        [Collector("g", gate)], autoscale=False, max_consumers=2, logging=False
    )
    assert queue.current_load() == Load(qsize=0, busy=0, consumers=0, ratio=0.0)
    async with queue:
        assert queue.consumer_count() == 2
        assert queue.current_load() == Load(0, 0, 2, 0.0)
        pub = queue.get_publisher()
        for i in range(5):
            await pub.send(i)
        await gate.until_running(2)
        load = queue.current_load()
        assert load == Load(qsize=3, busy=2, consumers=2, ratio=2.5)
        metrics = queue.get_metrics()
        assert (metrics.qsize, metrics.busy, metrics.consumers) == (3, 2, 2)
        assert metrics.load == 2.5
        gate.open()
        await pub.wait()
        assert queue.current_load() == Load(0, 0, 2, 0.0)


@pytest.mark.parametrize(("autoscale", "expected"), [(True, 3), (False, 8)])
async def test_start_size(autoscale: bool, expected: int) -> None:
    queue = CollectorQueue(
        [Collector("c", echo)],
        autoscale=autoscale,
        min_consumers=3,
        max_consumers=8,
        logging=False,
    )
    seen: list[int] = []

    async def on_init(msg: InitializedQueue, q: BusEventQueue) -> None:
        seen.append(msg.collector_queue.consumer_count())

    queue.get_message_bus().add_msg_handler(InitializedQueue, on_init)
    async with queue:
        assert seen == [expected]
        assert queue.consumer_count() == expected


async def test_fixed_pool_does_not_grow() -> None:
    gate = Gate()
    clock = FakeClock()
    queue = CollectorQueue(
        [Collector("g", gate)],
        autoscale=False,
        max_consumers=2,
        clock=clock,
        logging=False,
    )
    async with queue:
        for i in range(20):
            await queue.get_publisher().send(i)
        await gate.until_running(2)
        await wait_reads(clock, 10)  # ten monitor ticks at full load
        assert queue.consumer_count() == 2
        gate.open()
        await queue.get_publisher().wait()


async def test_pool_grows_towards_demand_plus_margin() -> None:
    gate = Gate()
    queue = CollectorQueue(
        [Collector("g", gate)], min_consumers=1, max_consumers=100, logging=False
    )
    async with queue:
        pub = queue.get_publisher()
        for i in range(20):
            await pub.send(i)
        await gate.until_running(20)
        # demand 20 + ceil(20 * 0.15) = 23
        await wait_for(lambda: queue.consumer_count() == 23)
        assert queue.current_load().busy == 20
        gate.open()
        await pub.wait()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks arrived in 3.12")
async def test_monitor_sleeps_at_once_when_its_new_consumers_empty_the_queue() -> None:
    queue = CollectorQueue([Collector("e", echo)], logging=False)
    async with queue:
        await asyncio.sleep(0)  # the first consumer and the monitor wait
        # With no consumer left, only the monitor sees the next events.
        (consumer,) = [
            t for t in asyncio.all_tasks() if t.get_name() == "event-collector-consumer"
        ]
        consumer.cancel()
        await wait_for(lambda: queue.consumer_count() == 0)
        pub = queue.get_publisher()
        events = [await pub.send(i) for i in range(2)]
        assert [await e.wait() for e in events] == [[Ok(0)], [Ok(1)]]
        # Its eager consumers answered both inside its tick; having looked
        # at the queue again, it went straight back to waiting for a put
        # instead of polling again in monitor_interval.
        assert queue._inbox.put_waiter is not None
        await asyncio.sleep(0)  # the spare consumer starts after the others
        assert queue.consumer_count() == 3  # demand 2 plus its margin


async def test_spare_consumers_start_after_the_ones_that_take_events() -> None:
    """A growth starts the consumers the queued events need first; its
    margin joins once their handlers have started, so it never delays them."""
    release = asyncio.Event()
    counts: list[int] = []

    async def handler(payload: Payload[int], ctx: Context) -> None:
        counts.append(queue.consumer_count())
        await release.wait()

    queue = CollectorQueue(
        [Collector("h", handler)], wip_margin=0.2, max_consumers=100, logging=False
    )
    async with queue:
        await asyncio.sleep(0)  # the first consumer waits for an event
        pub = queue.get_publisher()
        for i in range(10):
            await pub.send(i)
        await wait_for(lambda: len(counts) == 10)
        # One consumer took the first event; the monitor then saw 9 queued
        # and 1 busy: 9 consumers at once, then the margin of ceil(10 * 0.2).
        # (Eager consumers, from 3.12, run their handlers as they are
        # created, and see fewer than 10.)
        assert max(counts) <= 10
        await wait_for(lambda: queue.consumer_count() == 12)
        release.set()
        await pub.wait()


async def test_pool_never_grows_above_max_consumers() -> None:
    gate = Gate()
    clock = FakeClock()
    peak = 0

    def observe(event: CollectorEvent[Any]) -> None:
        nonlocal peak
        peak = max(peak, queue.consumer_count())

    queue = CollectorQueue(
        [Collector("g", gate)],
        min_consumers=1,
        max_consumers=10,
        clock=clock,
        logging=False,
    )
    queue.add_event_observer(observe)
    async with queue:
        pub = queue.get_publisher()
        for i in range(50):
            await pub.send(i)
        await gate.until_running(10)
        await wait_reads(clock, 20)  # more ticks at full load
        assert queue.consumer_count() == 10
        assert queue.current_load() == Load(qsize=40, busy=10, consumers=10, ratio=5.0)
        gate.open()
        await pub.wait()
    assert peak == 10


async def test_pool_shrinks_to_min_consumers_when_the_load_is_gone(
    clock: FakeClock,
) -> None:
    gate = Gate()
    queue = CollectorQueue(
        [Collector("g", gate)],
        min_consumers=3,
        max_consumers=100,
        avg_load_interval=0.2,
        clock=clock,
        logging=False,
    )
    async with queue:
        pub = queue.get_publisher()
        for i in range(40):
            await pub.send(i)  # at t = 0
        await gate.until_running(40)
        await wait_for(lambda: queue.consumer_count() == 46)
        gate.open()
        await pub.wait()  # all answered at t = 0
        # Idle for 1 s, five times the average's window: its load is 0. The
        # metrics are still warming up (3 s), so no work in progress holds
        # the pool up either, however long this took in real time.
        clock.now = 1.0
        await wait_for(lambda: queue.consumer_count() == 3)
        # Idle at the minimum: the monitor leaves the pool alone. It sleeps,
        # with no timeout, until the next send; the private put_waiter is the
        # only sign of that.
        await wait_for(lambda: queue._inbox.put_waiter is not None)
        assert queue.consumer_count() == 3


async def test_shrinking_keeps_the_littles_law_work_in_progress(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """wip = arrival rate x service time, plus the margin, bounds the shrink."""
    # Idle above its minimum, the monitor looks at the pool every
    # IDLE_SHRINK_INTERVAL of real time: 1 s would make this test take 12 s.
    monkeypatch.setattr(monitor_module, "IDLE_SHRINK_INTERVAL", 0.01)
    gate = Gate()
    queue = CollectorQueue(
        [Collector("g", gate)],
        min_consumers=1,
        max_consumers=100,
        metrics_warmup_interval=0,
        metrics_collector_window_size=5,
        avg_load_interval=60,
        clock=clock,
        logging=False,
    )
    async with queue:
        pub = queue.get_publisher()
        events = [await pub.send(i) for i in range(20)]  # at t = 0
        await gate.until_running(20)  # all started at t = 0
        await wait_for(lambda: queue.consumer_count() == 23)
        clock.now = 1.0
        gate.open()
        for event in events:
            await event.wait()  # all finished at t = 1: service time 1 s
        await wait_reads(clock, 10)
        assert queue.consumer_count() == 23, "the average load is not low yet"

        clock.now = 2.0
        # avg load <= 0.87 / 2 < 0.75; arrival rate 20 / 2 s = 10/s, service
        # time 1 s: wip 10, plus 15 %: ceil(11.5) = 12 consumers.
        await wait_for(lambda: queue.consumer_count() == 12)
        metrics = queue.get_metrics()
        assert metrics.arrival_rate == pytest.approx(10.0)
        assert metrics.service_time == pytest.approx(1.0)
        assert metrics.wip == pytest.approx(10.0)
        await wait_reads(clock, 10)
        assert queue.consumer_count() == 12

        clock.now = 10.0  # the arrivals have left the 5 s window: wip 0
        await wait_for(lambda: queue.consumer_count() == 1)
        assert queue.get_metrics().wip == 0.0


@pytest.mark.looptime
async def test_burst_runs_on_many_consumers_then_returns_to_the_minimum() -> None:
    # Loop time (looptime): it moves only when every task waits, so the
    # handlers' 100 ms and the monitor's ticks are exact and the bound on the
    # burst's duration measures the pool, not how busy the machine is.
    loop = asyncio.get_running_loop()

    async def handler(payload: Payload[Any], ctx: Context) -> Any:
        await asyncio.sleep(0.1)
        return payload.value

    peak = 0

    def observe(event: CollectorEvent[Any]) -> None:
        nonlocal peak
        peak = max(peak, queue.consumer_count())

    queue = CollectorQueue(
        [Collector("demo-collector", handler)],
        min_consumers=1,
        max_consumers=1000,
        # A burst leaves the rate window (and the wip floor) after 5 s
        # rather than 60 s, should the metrics warm up before the pool
        # shrinks.
        metrics_collector_window_size=5,
        clock=loop.time,
        logging=False,
    )
    queue.add_event_observer(observe)
    async with queue:
        pub = queue.get_publisher()
        start = loop.time()
        events = [await pub.send({"data": f"payload-{i}"}) for i in range(300)]
        results = [await e.wait() for e in events]
        elapsed = loop.time() - start
        assert [r.first().unwrap()["data"] for r in results] == [
            f"payload-{i}" for i in range(300)
        ]
        assert elapsed < 2.0, f"300 events of 100 ms took {elapsed:.2f} s"
        assert peak >= 100
        assert peak <= 1000
        assert queue.get_metrics().event_count == 300

        await wait_for(lambda: queue.consumer_count() <= 1, guard=20)
        assert queue.consumer_count() == 1


# -- metrics -----------------------------------------------------------------


def metric_values(metrics: Metrics) -> dict[str, Any]:
    values = dataclasses.asdict(metrics)
    del values["timestamp"]
    return values


async def test_metrics_read_zero_during_warm_up(clock: FakeClock) -> None:
    async def timed(payload: Payload[Any], ctx: Context) -> Any:
        clock.advance(0.25)  # every event takes 0.25 s
        return payload.value

    queue = CollectorQueue(
        [Collector("t", timed)],
        metrics_warmup_interval=3,
        clock=clock,
        logging=False,
    )
    async with queue:
        pub = queue.get_publisher()
        events = [await pub.send(i) for i in range(4)]  # sent at t = 0
        for event in events:
            await event.wait()
        # finished at 0.25, 0.5, 0.75, 1.0
        clock.now = 2.999
        cold = queue.get_metrics()
        assert metric_values(cold) == {
            "qsize": 0,
            "busy": 0,
            "consumers": queue.consumer_count(),
            "load": 0.0,
            "avg_load": 0.0,
            "service_time": 0.0,
            "wait_time": 0.0,
            "arrival_rate": 0.0,
            "departure_rate": 0.0,
            "wip": 0.0,
            "event_count": 4,
        }
        clock.now = 3.0
        warm = queue.get_metrics()
        assert warm.service_time == pytest.approx(0.25)
        assert warm.wait_time == pytest.approx((0.25 + 0.5 + 0.75 + 1.0) / 4)
        assert warm.arrival_rate == pytest.approx(4 / 3)
        assert warm.departure_rate == pytest.approx(4 / 3)
        assert warm.wip == pytest.approx(warm.arrival_rate * warm.service_time)
        assert warm.wip == pytest.approx(1 / 3)
        assert warm.event_count == 4
        assert warm.timestamp.tzinfo is not None


async def test_metrics_before_start() -> None:
    queue = CollectorQueue([Collector("c", echo)], logging=False)
    metrics = queue.get_metrics()
    assert metrics.consumers == 0
    assert metrics.event_count == 0
    assert metrics.arrival_rate == 0.0


async def test_event_count_counts_every_answered_event(clock: FakeClock) -> None:
    async def sometimes(payload: Payload[Any], ctx: Context) -> Any:
        if payload.value % 2:
            raise ValueError("odd")
        return payload.value

    queue = CollectorQueue([Collector("s", sometimes)], clock=clock, logging=False)
    async with queue:
        pub = queue.get_publisher()
        for i in range(7):
            await pub.send(i)
        await pub.wait()
        assert queue.get_metrics().event_count == 7


async def test_rates_match_a_steady_load(clock: FakeClock) -> None:
    per_step, step, steps = 5, 0.1, 100  # 50 events/s for 10 s
    service = 0.001

    async def timed(payload: Payload[Any], ctx: Context) -> Any:
        clock.advance(service)
        return payload.value

    queue = CollectorQueue(
        [Collector("t", timed)],
        metrics_collector_window_size=5,
        metrics_warmup_interval=1,
        clock=clock,
        logging=False,
    )
    async with queue:
        pub = queue.get_publisher()
        for i in range(steps):
            clock.now = i * step
            events = [await pub.send(j) for j in range(per_step)]
            for event in events:
                await event.wait()
        clock.now = steps * step
        metrics = queue.get_metrics()
    offered = per_step / step
    assert metrics.arrival_rate == pytest.approx(offered, rel=0.05)
    assert metrics.departure_rate == pytest.approx(offered, rel=0.05)
    assert metrics.service_time == pytest.approx(service)
    assert metrics.wip == pytest.approx(offered * service, rel=0.05)
    assert metrics.wip == pytest.approx(metrics.arrival_rate * metrics.service_time)
    assert metrics.event_count == per_step * steps


async def test_service_window_keeps_the_last_events(clock: FakeClock) -> None:
    durations = iter([10.0, 10.0, 1.0, 1.0, 1.0])

    async def timed(payload: Payload[Any], ctx: Context) -> Any:
        clock.advance(next(durations))
        return None

    queue = CollectorQueue(
        [Collector("t", timed)],
        event_service_data_window_size=3,
        metrics_warmup_interval=0,
        clock=clock,
        logging=False,
    )
    async with queue:
        pub = queue.get_publisher()
        for i in range(5):
            await (await pub.send(i)).wait()
        assert queue.get_metrics().service_time == pytest.approx(1.0)


async def test_average_load_is_time_weighted(clock: FakeClock) -> None:
    gates = {"a": asyncio.Event(), "b": asyncio.Event()}
    b_running = asyncio.Event()

    async def held(payload: Payload[Any], ctx: Context) -> Any:
        if payload.value == "b":
            b_running.set()
        await gates[payload.value].wait()
        return payload.value

    queue = CollectorQueue(
        [Collector("h", held)],
        autoscale=False,
        max_consumers=2,
        metrics_warmup_interval=0,
        avg_load_interval=60,
        clock=clock,
        logging=False,
    )
    async with queue:
        pub = queue.get_publisher()
        for value in ("a", "a", "b"):
            await pub.send(value)
        await wait_for(lambda: queue.current_load().busy == 2)
        clock.now = 1.0  # (1 queued + 2 busy) / 2 = 1.5 for 1 s
        await wait_reads(clock, 3)
        gates["a"].set()
        await b_running.wait()
        assert queue.current_load().ratio == 0.5
        clock.now = 3.0  # then 1 busy / 2 = 0.5 for 2 s
        await wait_reads(clock, 3)
        assert queue.get_metrics().avg_load == pytest.approx((1.5 + 0.5 * 2) / 3)
        gates["b"].set()
        await pub.wait()


async def test_average_load_falls_while_the_queue_is_idle(clock: FakeClock) -> None:
    gate = Gate()
    queue = CollectorQueue(
        [Collector("g", gate)],
        min_consumers=2,
        max_consumers=2,
        metrics_warmup_interval=0,
        avg_load_interval=60,
        clock=clock,
        logging=False,
    )
    async with queue:
        pub = queue.get_publisher()
        for i in range(4):
            await pub.send(i)
        await gate.until_running(2)
        clock.now = 1.0  # load 2 for 1 s
        await wait_reads(clock, 3)
        gate.open()
        await pub.wait()
        # Idle at its minimum, the monitor sleeps until the next send; the
        # private put_waiter is the only sign of that.
        await wait_for(lambda: queue._inbox.put_waiter is not None)
        clock.now = 3.0  # idle for 2 s: the mean over (0, 3] is 2/3
        assert queue.get_metrics().avg_load == pytest.approx(2 / 3)


# -- reporter and logging ----------------------------------------------------------


async def test_reporter_logs_metrics_and_dispatches_reported_metrics() -> None:
    queue = CollectorQueue([Collector("c", echo)], report_interval=0.01)
    reported: asyncio.Future[Metrics] = asyncio.get_running_loop().create_future()

    async def on_report(msg: ReportedMetrics, q: BusEventQueue) -> None:
        if not reported.done():
            reported.set_result(msg.metrics)

    queue.get_message_bus().add_msg_handler(ReportedMetrics, on_report)
    with capture_logs() as logs:
        async with queue:
            await (await queue.get_publisher().send(1)).wait()
            metrics = await asyncio.wait_for(reported, 10)
    assert isinstance(metrics, Metrics)
    entries = [e for e in logs if e["event"] == "collector queue metrics"]
    assert entries
    entry = entries[0]
    assert entry["log_level"] == "info"
    for name in METRICS_FIELDS[1:]:
        assert name in entry, name
    assert "metrics_timestamp" in entry
    # The first report: logged, then dispatched as ``metrics``; taken before
    # or after the one event was answered.
    assert entry["event_count"] == metrics.event_count
    assert entry["event_count"] in (0, 1)


async def test_no_reporter_when_report_interval_is_zero() -> None:
    queue = CollectorQueue([Collector("c", echo)], report_interval=0)
    async with queue:
        names = {t.get_name() for t in asyncio.all_tasks()}
        assert "event-collector-monitor" in names
        assert "event-collector-reporter" not in names


async def test_queue_logs_its_life_cycle_with_the_event_collector_logger() -> None:
    with capture_logs() as logs:
        async with CollectorQueue([Collector("c", echo)]):
            pass
    events = [e["event"] for e in logs]
    assert "collector queue started" in events
    assert "collector queue shut down" in events


async def noisy_life(logging: bool) -> None:
    """Run a queue through everything that logs: a clamped argument, start,
    a report, a failing bus handler, a failing observer, a cancelled handler,
    a failing teardown, shutdown."""

    class BrokenTeardown(Collector):
        key = "broken"

        async def teardown(self) -> None:
            raise RuntimeError("teardown broke")

        async def process(self, payload: Payload[Any]) -> Any:
            if payload.value == "hang":
                await asyncio.Event().wait()
            return payload.value

    queue = CollectorQueue(
        [BrokenTeardown],
        report_interval=0.01,
        metrics_collector_window_size=1,
        consumer_shutdown_timeout=0.01,
        logging=logging,
    )
    reported = asyncio.Event()

    async def on_report(msg: ReportedMetrics, q: BusEventQueue) -> None:
        reported.set()
        raise RuntimeError("bus handler broke")

    def observer(event: CollectorEvent[Any]) -> None:
        raise RuntimeError("observer broke")

    queue.get_message_bus().add_msg_handler(ReportedMetrics, on_report)
    queue.add_event_observer(observer)
    async with queue:
        await (await queue.get_publisher().send(1)).wait()
        await asyncio.wait_for(reported.wait(), 10)
        await queue.get_publisher().send("hang")


async def test_logging_false_writes_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    with capture_logs() as logs:
        await noisy_life(logging=False)
    assert logs == []
    await noisy_life(logging=False)  # structlog's default config: stdout
    assert capfd.readouterr() == ("", "")


async def test_logging_true_writes_with_structlog_defaults(
    capfd: pytest.CaptureFixture[str],
) -> None:
    await noisy_life(logging=True)
    out = capfd.readouterr().out
    for text in (
        "metrics_collector_window_size raised to its minimum",
        "collector queue started",
        "collector queue metrics",
        "message bus handler failed",
        "event observer failed",
        "shutdown cancels unfinished events",
        "collector teardown failed",
        "collector queue shut down",
    ):
        assert text in out, text


# -- message bus ---------------------------------------------------------------


async def test_get_message_bus_returns_the_queues_bus() -> None:
    queue = CollectorQueue([Collector("c", echo)], logging=False)
    bus = queue.get_message_bus()
    assert isinstance(bus, MessageBus)
    assert queue.get_message_bus() is bus


async def test_initialized_and_shut_down_messages() -> None:
    queue = CollectorQueue([Collector("c", echo)], logging=False)
    seen: list[tuple[str, str, bool]] = []
    sent: list[CollectorEvent[Any]] = []

    async def on_init(msg: InitializedQueue, q: BusEventQueue) -> None:
        assert msg.collector_queue is queue
        seen.append(("init", queue.state, queue.is_running))
        # The queue accepts events from the moment it announces itself.
        sent.append(await queue.get_publisher().send("from init"))

    async def on_shutdown(msg: ShutDownQueue, q: BusEventQueue) -> None:
        assert msg.collector_queue is queue
        seen.append(("shutdown", queue.state, all(e.is_done() for e in sent)))

    bus = queue.get_message_bus()
    bus.add_msg_handler(InitializedQueue, on_init)
    bus.add_msg_handler(ShutDownQueue, on_shutdown)
    await queue.init_queue()
    assert seen == [("init", "running", True)]
    await queue.shut_down_queue()
    assert seen == [("init", "running", True), ("shutdown", "closed", True)]
    assert await sent[0].wait() == [Ok("from init")]


@dataclasses.dataclass
class Announce(Message):
    text: str


@dataclasses.dataclass
class Restart(Command):
    reason: str


async def test_bus_handlers_queue_messages_commands_and_can_be_removed() -> None:
    queue = CollectorQueue([Collector("c", echo)])
    seen: list[str] = []

    async def on_init(msg: InitializedQueue, q: BusEventQueue) -> None:
        q.append(Announce("ready"))
        q.append(Restart("test"))

    async def on_announce(msg: Announce, q: BusEventQueue) -> None:
        seen.append(f"announce {msg.text}")

    async def on_restart(cmd: Restart, q: BusEventQueue) -> None:
        seen.append(f"restart {cmd.reason}")

    async def broken(msg: InitializedQueue, q: BusEventQueue) -> None:
        raise RuntimeError("handler broke")

    async def removed(msg: ShutDownQueue, q: BusEventQueue) -> None:
        seen.append("removed handler ran")

    bus = queue.get_message_bus()
    bus.add_msg_handler(InitializedQueue, broken)
    bus.add_msg_handler(InitializedQueue, on_init)
    bus.add_msg_handler(Announce, on_announce)
    bus.add_cmd_handler(Restart, on_restart)
    bus.add_msg_handler(ShutDownQueue, removed)
    bus.del_msg_handler(ShutDownQueue, removed)
    with capture_logs() as logs:
        async with queue:
            assert seen == ["announce ready", "restart test"]
            await bus.dispatch(Restart("by hand"))
            event = await queue.get_publisher().send(1)
            assert await event.wait() == [Ok(1)]
    assert seen == ["announce ready", "restart test", "restart by hand"]
    failures = [e for e in logs if e["event"] == "message bus handler failed"]
    assert len(failures) == 1
    assert failures[0]["bus_message"] == "InitializedQueue"


async def test_get_metrics_from_another_thread_is_measured_on_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The loop is free to answer at once; a reader that gave up on it (after
    # 1 s by default, which a busy machine can take) would measure in its own
    # thread. Waiting that long here means a hang.
    monkeypatch.setattr(queue_module, "_CROSS_THREAD_METRICS_TIMEOUT", 30.0)
    queue = CollectorQueue([Collector("c", echo)], logging=False)
    measured_in: list[int] = []
    measure = queue._measurement.snapshot

    def recording_measure(*, update: bool) -> Metrics:
        measured_in.append(threading.get_ident())
        return measure(update=update)

    monkeypatch.setattr(queue._measurement, "snapshot", recording_measure)
    async with queue:
        await (await queue.get_publisher().send(1)).wait()
        metrics = await asyncio.to_thread(queue.get_metrics)
    assert metrics.consumers == 1
    assert metrics.event_count == 1
    assert measured_in == [threading.get_ident()]  # the loop's thread


async def test_get_metrics_from_another_thread_while_the_loop_is_blocked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(queue_module, "_CROSS_THREAD_METRICS_TIMEOUT", 0.05)
    queue = CollectorQueue([Collector("c", echo)], logging=False)
    calls: list[tuple[int, bool]] = []
    measure = queue._measurement.snapshot

    def recording_measure(*, update: bool) -> Metrics:
        calls.append((threading.get_ident(), update))
        return measure(update=update)

    monkeypatch.setattr(queue._measurement, "snapshot", recording_measure)
    async with queue:
        outcome: list[Metrics] = []
        reader = threading.Thread(target=lambda: outcome.append(queue.get_metrics()))
        reader.start()
        # Block the loop (a misbehaving handler would) longer than the
        # reader is willing to wait: it must answer without the loop.
        reader.join(timeout=10.0)
        assert not reader.is_alive()
        await asyncio.sleep(0)  # the loop now runs the abandoned request
    assert len(outcome) == 1
    assert outcome[0].consumers == 1
    # Measured once, in the reader's thread, without updating any state.
    assert len(calls) == 1
    assert calls[0][0] != threading.get_ident()
    assert calls[0][1] is False
