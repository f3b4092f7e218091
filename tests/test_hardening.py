"""The delivery contract against what an adversarial user does.

Handlers raising ``BaseException`` subclasses, payloads with a bad priority,
a log destination that raises, cancellation while the queue starts or while
the body of ``async with queue`` runs, shutdowns asked for from inside the
shutdown (or the start), teardowns that raise ``CancelledError``, bus
handlers and observers that misbehave, configuration that is out of range,
custom routers answering oddly and a loop that ends without a shutdown.

Every test is bounded by :data:`GUARD`: a hang fails instead of stalling,
and runs once per transport (see ``transports.py``), like the contract
suite.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import structlog

from conftest import Gate, LoopErrors, is_cancelled
from event_collector import (
    Collector,
    CollectorEvent,
    CollectorQueue,
    ConfigError,
    Context,
    Error,
    InitializedQueue,
    Ok,
    Payload,
    QueueClosed,
    QueueType,
    ReportedMetrics,
    ResultList,
    Router,
    ShutDownQueue,
    SimpleRouter,
)
from event_collector.messagebus import BusEventQueue

# The hook and the fixture run every test here once per transport.
from transports import _on_transport, make_queue, pytest_generate_tests  # noqa: F401

GUARD = 10.0
"""Seconds any one step may take before the test counts it as hung."""

LONG_DRAIN = 60.0
"""A ``consumer_shutdown_timeout`` no passing test waits out."""


class Stop(BaseException):
    """A ``BaseException`` of the user's own, neither Exception nor exit."""


async def _echo(payload: Payload[Any], ctx: Context) -> Any:
    return payload.value


def _raiser(exc: Callable[[], BaseException]) -> Any:
    async def handler(payload: Payload[Any], ctx: Context) -> Any:
        if payload.value == "raise":
            raise exc()
        return payload.value

    return handler


def _failed() -> BaseException:
    """What ``pytest.fail`` raises: an ``OutcomeException`` (a BaseException)."""
    try:
        pytest.fail("a test helper failed inside a handler")
    except BaseException as exc:
        return exc
    raise AssertionError("pytest.fail returned")


BASE_EXCEPTIONS: dict[str, Callable[[], BaseException]] = {
    "custom": lambda: Stop("stop"),
    "GeneratorExit": GeneratorExit,
    "pytest.fail": _failed,
    "own CancelledError": asyncio.CancelledError,
}


class TwoWayRouter(Router):
    """A custom router: every payload goes through ``handle_event``."""

    def __init__(self, collectors: Any) -> None:
        super().__init__(collectors)
        self._collector = next(iter(collectors.values()))

    async def handle_event(self, payload: Payload[Any]) -> ResultList:
        value = await self._collector.process(payload)
        return ResultList([Ok(value)])


def _collectors(path: str, handler: Any) -> dict[str, Any]:
    """Queue arguments that send each payload down ``path``: the consumers'
    direct call, the SimpleRouter's runners (two collectors, or one with a
    timeout), or a custom router."""
    if path == "direct":
        return {"collectors": [Collector("c", handler)]}
    if path == "router":
        return {"collectors": [Collector("c", handler), Collector("d", _echo)]}
    if path == "timeout":
        return {"collectors": [Collector("c", handler, timeout=GUARD)]}
    return {"collectors": [Collector("c", handler)], "router": TwoWayRouter}


# -- handlers raising a BaseException -------------------------------------------


@pytest.mark.parametrize("path", ["direct", "router", "timeout", "custom-router"])
@pytest.mark.parametrize("kind", list(BASE_EXCEPTIONS))
async def test_a_handler_raising_a_base_exception_is_answered_with_it(
    path: str, kind: str, loop_guard: LoopErrors
) -> None:
    make = BASE_EXCEPTIONS[kind]
    queue = make_queue(
        **_collectors(path, _raiser(make)),
        consumer_shutdown_timeout=LONG_DRAIN,
        logging=False,
    )
    async with asyncio.timeout(GUARD):
        async with queue:
            publisher = queue.get_publisher()
            failing = await publisher.send("raise")
            results = await failing
            error = results.first()
            assert isinstance(error, Error)
            assert type(error.err) is type(make())
            await publisher.wait()  # hung while busy stayed up
            assert queue.current_load().busy == 0
            # The consumer lives on and handles the next event.
            assert (await (await publisher.send("after"))).first() == Ok("after")
            assert queue.consumer_count() >= 1
        assert queue.state == "closed"


async def test_a_base_exception_in_a_handler_does_not_stall_the_shutdown(
    loop_guard: LoopErrors,
) -> None:
    queue = make_queue(
        [Collector("c", _raiser(lambda: Stop()))],
        consumer_shutdown_timeout=LONG_DRAIN,
        logging=False,
    )
    started = time.monotonic()
    async with asyncio.timeout(GUARD):
        async with queue:
            events = [await queue.get_publisher().send("raise") for _ in range(20)]
        results = [await event for event in events]
    errors = [r.first() for r in results]
    assert all(isinstance(e, Error) and isinstance(e.err, Stop) for e in errors)
    assert time.monotonic() - started < LONG_DRAIN / 2


# -- a bad Payload.priority ---------------------------------------------------------


@pytest.mark.parametrize("priority", ["high", 1.5, True, [1]])
@pytest.mark.parametrize("queue_type", [QueueType.PRIORITY, QueueType.FIFO])
async def test_a_payload_with_a_bad_priority_is_refused_before_it_is_accepted(
    priority: Any, queue_type: QueueType, loop_guard: LoopErrors
) -> None:
    queue = make_queue([Collector("c", _echo)], queue_type=queue_type, logging=False)
    async with asyncio.timeout(GUARD):
        async with queue:
            publisher = queue.get_publisher()
            good = await publisher.send(Payload("good", priority=5))
            with pytest.raises(TypeError, match=r"Payload\.priority"):
                await publisher.send(Payload("bad", priority=priority))
            with pytest.raises(TypeError, match=r"Payload\.priority"):
                publisher.send_nowait(Payload("bad", priority=priority))
            later = await publisher.send(Payload("later"))
            assert (await good).first() == Ok("good")
            assert (await later).first() == Ok("later")
        assert queue.state == "closed"


async def test_a_priority_queue_with_queued_events_shuts_down_cleanly(
    loop_guard: LoopErrors,
) -> None:
    gate = Gate()
    queue = make_queue(
        [Collector("c", gate)],
        queue_type=QueueType.PRIORITY,
        autoscale=False,
        max_consumers=1,
        consumer_shutdown_timeout=0.01,
        logging=False,
    )
    async with asyncio.timeout(GUARD):
        async with queue:
            publisher = queue.get_publisher()
            running = await publisher.send(Payload(0, priority=1))
            await gate.until_running(1)
            with pytest.raises(TypeError):
                await publisher.send(Payload(1, priority="urgent"))  # type: ignore[arg-type]
            queued = [await publisher.send(Payload(n, priority=n)) for n in range(5)]
        assert queue.state == "closed"
        assert is_cancelled(await running)
        assert all([is_cancelled(await event) for event in queued])


# -- a broken log destination -----------------------------------------------------


class BrokenPipeLogger:
    """A structlog logger writing to a pipe whose reader went away."""

    calls = 0

    def msg(self, *args: Any, **kwargs: Any) -> None:
        BrokenPipeLogger.calls += 1
        raise BrokenPipeError(32, "Broken pipe")

    debug = info = warning = warn = error = critical = exception = msg


@pytest.fixture
def broken_log() -> None:
    BrokenPipeLogger.calls = 0
    structlog.configure(
        logger_factory=lambda *args: BrokenPipeLogger(),
        wrapper_class=structlog.make_filtering_bound_logger(0),  # debug too
    )


@pytest.mark.usefixtures("broken_log")
async def test_a_broken_log_destination_does_not_break_the_life_cycle(
    loop_guard: LoopErrors,
) -> None:
    gate = Gate()
    queue = make_queue(
        [Collector("c", gate)],
        consumer_shutdown_timeout=0.01,
        metrics_collector_window_size=1.0,  # logs a warning when built
        report_interval=0.001,
    )
    async with asyncio.timeout(GUARD):
        async with queue:
            publisher = queue.get_publisher()
            # A burst makes the monitor grow the pool (a debug line).
            events = [await publisher.send(n) for n in range(50)]
            await gate.until_running(2)
        # The shutdown logged its warning about cancelled events, and more.
        assert queue.state == "closed"
        assert all([is_cancelled(await event) for event in events])
    assert BrokenPipeLogger.calls >= 4


@pytest.mark.usefixtures("broken_log")
async def test_a_broken_log_destination_and_a_failed_start_leave_nothing(
    loop_guard: LoopErrors,
) -> None:
    class Fails(Collector):
        key = "fails"

        async def process(self, payload: Payload[Any]) -> Any:
            return None

        async def setup(self) -> None:
            raise RuntimeError("no database")

        async def teardown(self) -> None:
            raise RuntimeError("nothing to close")

    queue = make_queue([Collector("ok", _echo), Fails])
    async with asyncio.timeout(GUARD):
        with pytest.raises(RuntimeError, match="no database"):
            await queue.init_queue()
    assert queue.state == "closed"
    # loop_guard checks that no task was left running.


@pytest.mark.usefixtures("broken_log")
async def test_a_broken_log_destination_and_a_raising_handler(
    loop_guard: LoopErrors,
) -> None:
    queue = make_queue(
        [Collector("c", _raiser(lambda: Stop()))], consumer_shutdown_timeout=LONG_DRAIN
    )
    async with asyncio.timeout(GUARD):
        async with queue:
            event = await queue.get_publisher().send("raise")
            error = (await event).first()
            assert isinstance(error, Error)
            assert isinstance(error.err, Stop)
        assert queue.state == "closed"


# -- cancelled while entering ---------------------------------------------------------


def _slow_start(queue: CollectorQueue) -> asyncio.Event:
    """Make ``queue``'s InitializedQueue handler wait forever; return an event
    set once it runs."""
    entered = asyncio.Event()

    async def forever(message: InitializedQueue, pending: BusEventQueue) -> None:
        entered.set()
        await asyncio.Event().wait()

    queue.get_message_bus().add_msg_handler(InitializedQueue, forever)
    return entered


async def test_a_timeout_while_async_with_enters_shuts_the_queue_down(
    loop_guard: LoopErrors,
) -> None:
    queue = make_queue([Collector("c", _echo)], logging=False)
    entered = _slow_start(queue)
    shut: list[ShutDownQueue] = []

    async def note(message: ShutDownQueue, pending: BusEventQueue) -> None:
        shut.append(message)

    queue.get_message_bus().add_msg_handler(ShutDownQueue, note)
    async with asyncio.timeout(GUARD):
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05), queue:
                pytest.fail("the body must not run")
    assert entered.is_set()
    assert queue.state == "closed"
    assert len(shut) == 1
    with pytest.raises(QueueClosed):
        await queue.get_publisher().send(1)
    # loop_guard: no consumer, monitor or reporter is left running.


async def test_cancelling_init_queue_while_a_handler_runs_shuts_down(
    loop_guard: LoopErrors,
) -> None:
    gate = Gate()
    queue = make_queue(
        [Collector("c", gate)],
        report_interval=5.0,
        consumer_shutdown_timeout=LONG_DRAIN,
        logging=False,
    )
    entered = _slow_start(queue)
    task = asyncio.create_task(queue.init_queue())
    async with asyncio.timeout(GUARD):
        await entered.wait()
        event = queue.get_publisher().send_nowait("sent while starting")
        await gate.until_running(1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert queue.state == "closed"
        # Answered at once by the immediate shutdown, not drained nor lost.
        assert is_cancelled(await event)


# -- shut_down_queue() from inside the shutdown, or the start -------------------


async def test_shut_down_queue_from_a_shut_down_queue_handler(
    loop_guard: LoopErrors,
) -> None:
    queue = make_queue([Collector("c", _echo)], logging=False)
    calls: list[str] = []

    async def again(message: ShutDownQueue, pending: BusEventQueue) -> None:
        await message.collector_queue.shut_down_queue()
        calls.append("returned")

    queue.get_message_bus().add_msg_handler(ShutDownQueue, again)
    async with asyncio.timeout(GUARD):
        async with queue:
            pass
    assert calls == ["returned"]
    assert queue.state == "closed"


async def test_two_queues_whose_handlers_shut_each_other_down(
    loop_guard: LoopErrors,
) -> None:
    first = make_queue([Collector("a", _echo)], logging=False)
    second = make_queue([Collector("b", _echo)], logging=False)

    def shut(other: CollectorQueue) -> Any:
        async def handler(message: ShutDownQueue, pending: BusEventQueue) -> None:
            await other.shut_down_queue()

        return handler

    first.get_message_bus().add_msg_handler(ShutDownQueue, shut(second))
    second.get_message_bus().add_msg_handler(ShutDownQueue, shut(first))
    async with asyncio.timeout(GUARD):
        await first.init_queue()
        await second.init_queue()
        await first.shut_down_queue()
        await second.shut_down_queue()
    assert first.state == second.state == "closed"


class _Calls(Collector):
    """A collector whose setup or teardown calls its queue's shutdown."""

    key = "calls"
    queue: CollectorQueue | None = None
    where = ""

    async def process(self, payload: Payload[Any]) -> Any:
        return payload.value

    async def setup(self) -> None:
        if self.where == "setup":
            assert self.queue is not None
            await self.queue.shut_down_queue()

    async def teardown(self) -> None:
        if self.where == "teardown":
            assert self.queue is not None
            await self.queue.shut_down_queue()


@pytest.mark.parametrize("where", ["setup", "teardown"])
async def test_shut_down_queue_from_a_collectors_setup_or_teardown(
    where: str, loop_guard: LoopErrors
) -> None:
    collector = _Calls()
    collector.where = where
    queue = make_queue([collector], logging=False)
    collector.queue = queue
    async with asyncio.timeout(GUARD):
        await queue.init_queue()
        await queue.shut_down_queue()
    assert queue.state == "closed"


async def test_shut_down_queue_from_an_initialized_queue_handler(
    loop_guard: LoopErrors,
) -> None:
    queue = make_queue([Collector("c", _echo)], logging=False)

    async def stop(message: InitializedQueue, pending: BusEventQueue) -> None:
        await message.collector_queue.shut_down_queue()

    queue.get_message_bus().add_msg_handler(InitializedQueue, stop)
    async with asyncio.timeout(GUARD):
        await queue.init_queue()
        await queue.shut_down_queue()
    assert queue.state == "closed"


# -- teardowns raising CancelledError or another BaseException -----------------


class _Worker(Collector):
    """A collector with a background task, torn down the common way."""

    torn_down: list[str]

    def __init__(self, key: str, torn_down: list[str], fail: str = "") -> None:
        super().__init__(key, _echo)
        self.torn_down = torn_down
        self.fail = fail
        self.task: asyncio.Task[bool] | None = None

    async def setup(self) -> None:
        self.task = asyncio.create_task(asyncio.Event().wait())

    async def teardown(self) -> None:
        self.torn_down.append(self.key)
        assert self.task is not None
        self.task.cancel()
        if self.fail == "await":
            await self.task  # raises the task's CancelledError here
        elif self.fail == "base":
            raise Stop("teardown")
        else:
            await asyncio.gather(self.task, return_exceptions=True)


@pytest.mark.parametrize("fail", ["await", "base"])
async def test_a_raising_teardown_does_not_stop_the_shutdown(
    fail: str, loop_guard: LoopErrors
) -> None:
    torn_down: list[str] = []
    collectors = [
        _Worker("first", torn_down),
        _Worker("second", torn_down, fail=fail),
        _Worker("third", torn_down),
    ]
    queue = make_queue(collectors, logging=False)
    shut: list[ShutDownQueue] = []

    async def note(message: ShutDownQueue, pending: BusEventQueue) -> None:
        shut.append(message)

    queue.get_message_bus().add_msg_handler(ShutDownQueue, note)
    async with asyncio.timeout(GUARD):
        await queue.init_queue()
        await queue.shut_down_queue()  # not cancelled: must not raise
        for collector in collectors:
            assert collector.task is not None
            await asyncio.gather(collector.task, return_exceptions=True)
    assert torn_down == ["third", "second", "first"]
    assert len(shut) == 1
    assert queue.state == "closed"


# -- bus handlers and observers -------------------------------------------------


@pytest.mark.parametrize("kind", ["own CancelledError", "custom", "GeneratorExit"])
async def test_a_reported_metrics_handler_failing_once_does_not_end_the_reports(
    kind: str, loop_guard: LoopErrors
) -> None:
    queue = make_queue([Collector("c", _echo)], report_interval=0.001, logging=False)
    seen: list[ReportedMetrics] = []
    again = asyncio.Event()

    async def flaky(message: ReportedMetrics, pending: BusEventQueue) -> None:
        seen.append(message)
        if len(seen) == 1:
            raise BASE_EXCEPTIONS[kind]()
        again.set()

    queue.get_message_bus().add_msg_handler(ReportedMetrics, flaky)
    async with asyncio.timeout(GUARD):
        async with queue:
            await again.wait()
    assert len(seen) >= 2


async def test_an_observer_that_removes_itself_does_not_hide_the_event(
    loop_guard: LoopErrors,
) -> None:
    queue = make_queue([Collector("c", _echo)], logging=False)
    first: list[int] = []
    second: list[int] = []

    def once(event: CollectorEvent[Any]) -> None:
        first.append(event.payload.value)
        queue.remove_event_observer(once)

    queue.add_event_observer(once)
    queue.add_event_observer(lambda event: second.append(event.payload.value))
    async with asyncio.timeout(GUARD):
        async with queue:
            publisher = queue.get_publisher()
            await (await publisher.send(1))
            await (await publisher.send(2))
    assert first == [1]
    assert second == [1, 2]


async def test_an_observer_raising_a_base_exception_is_logged_not_fatal(
    loop_guard: LoopErrors,
) -> None:
    queue = make_queue([Collector("c", _echo)], logging=False)
    seen: list[int] = []

    def bad(event: CollectorEvent[Any]) -> None:
        seen.append(event.payload.value)
        raise Stop("observer")

    queue.add_event_observer(bad)
    async with asyncio.timeout(GUARD):
        async with queue:
            publisher = queue.get_publisher()
            assert (await (await publisher.send(1))).first() == Ok(1)
            assert (await (await publisher.send(2))).first() == Ok(2)
    assert seen == [1, 2]


# -- a timeout in the body of async with -----------------------------------------------


async def test_a_timeout_in_the_body_shuts_down_at_once(loop_guard: LoopErrors) -> None:
    gate = Gate()
    queue = make_queue(
        [Collector("c", gate)],
        autoscale=False,
        max_consumers=2,
        consumer_shutdown_timeout=LONG_DRAIN,
        logging=False,
    )
    events: list[CollectorEvent[Any]] = []
    started = time.monotonic()
    async with asyncio.timeout(GUARD):
        with pytest.raises(TimeoutError):  # noqa: PT012 - the body is the point
            async with asyncio.timeout(None) as body, queue:
                publisher = queue.get_publisher()
                events.extend([await publisher.send(n) for n in range(5)])
                await gate.until_running(2)
                # Two handlers run and three events wait: expire the body now.
                body.reschedule(asyncio.get_running_loop().time())
                await asyncio.Event().wait()
    assert time.monotonic() - started < GUARD
    assert queue.state == "closed"
    assert len(events) == 5
    results = [event.get_result() for event in events]
    assert all(r is not None and is_cancelled(r) for r in results)


async def test_an_exception_in_the_body_still_drains(loop_guard: LoopErrors) -> None:
    gate = Gate()
    queue = make_queue(
        [Collector("c", gate)], consumer_shutdown_timeout=LONG_DRAIN, logging=False
    )

    class BodyFailed(Exception):
        pass

    async with asyncio.timeout(GUARD):
        with pytest.raises(BodyFailed):  # noqa: PT012 - the body is the point
            async with queue:
                event = await queue.get_publisher().send("drained")
                await gate.until_running(1)
                gate.open()
                raise BodyFailed
    assert (await event).first() == Ok("drained")


# -- configuration --------------------------------------------------------------------


class MissingHandleEvent(Router):
    pass


def test_the_abstract_router_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"router.*handle_event"):
        make_queue([Collector("c", _echo)], router=Router)
    with pytest.raises(ConfigError, match=r"router.*MissingHandleEvent"):
        make_queue([Collector("c", _echo)], router=MissingHandleEvent)


def test_a_router_whose_constructor_fails_is_a_config_error() -> None:
    class Picky(SimpleRouter):
        def __init__(self, collectors: Any) -> None:
            raise KeyError("needs a mailer")

    with pytest.raises(ConfigError, match=r"router.*needs a mailer"):
        make_queue([Collector("c", _echo)], router=Picky)


def test_a_collector_class_needing_arguments_is_a_config_error() -> None:
    class NeedsDsn(Collector):
        key = "db"

        def __init__(self, dsn: str) -> None:
            super().__init__(processor=_echo)

    with pytest.raises(ConfigError, match=r"collectors.*NeedsDsn.*no arguments"):
        make_queue([NeedsDsn])


NUMBERS = [
    "wip_margin",
    "monitor_interval",
    "report_interval",
    "avg_load_interval",
    "metrics_collector_window_size",
    "metrics_warmup_interval",
    "consumer_shutdown_timeout",
    "event_service_data_window_size",
]


@pytest.mark.parametrize("name", NUMBERS)
@pytest.mark.parametrize("value", [10**400, -(10**400)])
def test_huge_numbers_are_config_errors_naming_the_parameter(
    name: str, value: int
) -> None:
    with pytest.raises(ConfigError, match=name):
        make_queue([Collector("c", _echo)], **{name: value})


def test_a_huge_collector_timeout_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="timeout"):
        Collector("c", _echo, timeout=10**400)


# -- custom routers answering oddly ---------------------------------------------------


class Answers(Router):
    """A custom router answering with whatever ``answer`` holds."""

    answer: Any = None

    async def handle_event(self, payload: Payload[Any]) -> ResultList:
        return type(self).answer  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (ResultList([1, "two"]), [Ok(1), Ok("two")]),  # type: ignore[list-item]
        (ResultList([Ok(1), 2]), [Ok(1), Ok(2)]),  # type: ignore[list-item]
        ([1, Ok(2)], [Ok(1), Ok(2)]),
        ((3,), [Ok(3)]),
        (7, [Ok(7)]),
        (ResultList([Ok(1)]), [Ok(1)]),
    ],
)
async def test_a_custom_routers_answer_is_made_results(
    answer: Any, expected: list[Any], loop_guard: LoopErrors
) -> None:
    class Router1(Answers):
        pass

    Router1.answer = answer
    queue = make_queue([Collector("c", _echo)], router=Router1, logging=False)
    async with asyncio.timeout(GUARD):
        async with queue:
            results = await (await queue.get_publisher().send(None))
    assert isinstance(results, ResultList)
    assert list(results) == expected


# -- a loop that ended without a shutdown ----------------------------------------------


# The queue's own loop ends under it: a broker's transport adds its own
# connections to what must be released.
@pytest.mark.transports("memory")
def test_a_queue_whose_loop_ended_refuses_sends_from_a_new_loop() -> None:
    gate = Gate()
    queue = make_queue([Collector("c", gate)], logging=False)
    held: list[CollectorEvent[Any]] = []

    async def first_life() -> None:
        await queue.init_queue()
        publisher = queue.get_publisher()
        held.append(await publisher.send("running"))
        await gate.until_running(1)
        held.append(await publisher.send("queued"))
        # asyncio.run ends here without a shutdown.

    asyncio.run(first_life())
    assert queue.state == "closed"
    assert not queue.is_running
    assert all(event.is_done() for event in held)
    assert all(is_cancelled(event.get_result() or ResultList()) for event in held)

    async def second_life() -> None:
        with pytest.raises(QueueClosed, match="event loop"):
            await queue.get_publisher().send("from a new loop")
        await queue.shut_down_queue()  # nothing left to do, and no hang

    asyncio.run(asyncio.wait_for(second_life(), GUARD))


# The queue's own loop ends under it: a broker's transport adds its own
# connections to what must be released.
@pytest.mark.transports("memory")
def test_a_queue_whose_loop_was_closed_without_cancelling_refuses_sends() -> None:
    queue = make_queue([Collector("c", _echo)], logging=False)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(queue.init_queue())
    loop.run_until_complete(asyncio.sleep(0.01))  # consumers and monitor idle
    # Closed by hand, its tasks still pending (asyncio.run would cancel them).
    loop.close()

    async def later() -> None:
        with pytest.raises(QueueClosed, match="event loop"):
            await queue.get_publisher().send("lost?")
        assert queue.state == "closed"

    asyncio.run(asyncio.wait_for(later(), GUARD))


# -- things a new user gets wrong at construction -------------------------------------


def test_a_plain_def_handler_is_refused_with_a_way_out() -> None:
    def sync_handler(payload: Payload[Any], ctx: Context) -> int:
        return 1

    with pytest.raises(ConfigError, match=r"async def.*asyncio\.to_thread"):
        Collector("c", sync_handler)  # type: ignore[arg-type]


def test_a_sync_process_override_is_refused() -> None:
    class Sync(Collector):
        key = "sync"

        def process(self, payload: Payload[Any]) -> Any:
            return 1

    with pytest.raises(ConfigError, match=r"Sync\.process.*async"):
        Sync()


def test_callables_that_return_awaitables_are_accepted() -> None:
    import functools

    async def with_extra(payload: Payload[Any], ctx: Context, extra: int) -> int:
        return extra

    def returns_coroutine(payload: Payload[Any], ctx: Context) -> Awaitable[int]:
        return with_extra(payload, ctx, 1)

    class Callable_:
        async def __call__(self, payload: Payload[Any], ctx: Context) -> int:
            return 1

    for processor in (
        functools.partial(with_extra, extra=2),
        lambda payload, ctx: with_extra(payload, ctx, 3),
        returns_coroutine,
        Callable_(),
    ):
        assert Collector("c", processor).processor is processor


@pytest.mark.parametrize(
    ("kwargs", "delivery", "keys", "topics"),
    [
        ({"topics": ["payment"]}, "TOPIC", (), ("payment",)),
        ({"topics": "payment"}, "TOPIC", (), ("payment",)),
        ({"keys": ["mailer"]}, "KEY", ("mailer",), ()),
        ({}, "BROADCAST", (), ()),
    ],
)
def test_names_without_a_delivery_mode_mean_that_mode(
    kwargs: dict[str, Any],
    delivery: str,
    keys: tuple[str, ...],
    topics: tuple[str, ...],
) -> None:
    payload = Payload("v", **kwargs)
    assert payload.delivery.name == delivery
    assert payload.keys == keys
    assert payload.topics == topics


@pytest.mark.parametrize(
    "kwargs",
    [
        {"delivery": "BROADCAST", "topics": ["payment"]},
        {"delivery": "BROADCAST", "keys": ["mailer"]},
        {"keys": ["mailer"], "topics": ["payment"]},
        {"delivery": "KEY", "topics": ["payment"]},
        {"delivery": "TOPIC", "keys": ["mailer"]},
    ],
)
def test_contradicting_routing_arguments_raise(kwargs: dict[str, Any]) -> None:
    from event_collector import Delivery

    kwargs = dict(kwargs)  # the parameters are shared by every transport's run
    if "delivery" in kwargs:
        kwargs["delivery"] = Delivery[kwargs["delivery"]]
    with pytest.raises(ValueError, match="Payload"):
        Payload("v", **kwargs)


def test_a_delivery_that_is_not_a_delivery_raises() -> None:
    with pytest.raises(TypeError, match="delivery"):
        Payload("v", "topic")  # type: ignore[arg-type]


async def test_topics_without_a_delivery_reach_only_their_collectors(
    loop_guard: LoopErrors,
) -> None:
    queue = make_queue(
        [
            Collector("payments", _echo, topics=["payment"]),
            Collector("mail", _echo, topics=["mail"]),
        ],
        logging=False,
    )
    async with asyncio.timeout(GUARD):
        async with queue:
            results = await (
                await queue.get_publisher().send(Payload("p", topics=["payment"]))
            )
    assert list(results) == [Ok("p")]


async def test_the_shutdown_log_counts_cancelled_events(loop_guard: LoopErrors) -> None:
    from structlog.testing import capture_logs

    gate = Gate()
    queue = make_queue(
        [Collector("c", gate)],
        autoscale=False,
        max_consumers=1,
        consumer_shutdown_timeout=0.01,
    )
    async with asyncio.timeout(GUARD):
        with capture_logs() as logs:
            async with queue:
                publisher = queue.get_publisher()
                await publisher.send(1)
                await gate.until_running(1)
                await publisher.send(2)
    closing = [entry for entry in logs if entry["event"] == "collector queue shut down"]
    assert len(closing) == 1
    assert closing[0]["cancelled"] == 2


ENDS_WITHOUT_SHUTDOWN = """
import asyncio
from event_collector import Collector, CollectorQueue

async def handler(payload, ctx):
    await asyncio.sleep(0.01)
    return payload.value

async def main():
    queue = CollectorQueue([Collector("c", handler)], logging=False)
    await queue.init_queue()
    publisher = queue.get_publisher()
    for n in range({count}):
        await publisher.send(n)
    # main returns with the queue running: asyncio.run cancels its tasks.

asyncio.run(main())
print("exited")
"""


@pytest.mark.parametrize("count", [1, 50])
# The queue's own loop ends under it: a broker's transport adds its own
# connections to what must be released.
@pytest.mark.transports("memory")
def test_asyncio_run_ending_on_a_running_queue_leaves_no_task(count: int) -> None:
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-c", ENDS_WITHOUT_SHUTDOWN.format(count=count)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == "exited\n"
    # No "Task was destroyed but it is pending!", no "Event loop is closed":
    # a spare consumer the monitor scheduled must not start as the loop ends.
    assert run.stderr == ""


@pytest.mark.parametrize(
    ("delivery", "kwargs"),
    [
        ("BROADCAST", {"topics": ["payment"]}),
        ("KEY", {"topics": ["payment"]}),
        ("TOPIC", {"keys": ["mailer"]}),
    ],
)
def test_set_delivery_refuses_what_the_constructor_refuses(
    delivery: str, kwargs: dict[str, Any]
) -> None:
    from event_collector import Delivery

    payload = Payload("v")
    with pytest.raises(ValueError, match="Payload"):
        payload.set_delivery(Delivery[delivery], **kwargs)
    assert payload.delivery is Delivery.BROADCAST  # unchanged


# -- found in review: the shutdown task cancelled, a start cancelled under a
# raising teardown, a transport whose settle raises ----------------------------


@pytest.mark.parametrize("when", ["before it runs", "during the drain"])
async def test_a_cancelled_shutdown_task_does_not_break_the_next_shutdown(
    when: str, loop_guard: LoopErrors
) -> None:
    gate = Gate()
    queue = make_queue(
        [Collector("c", gate)], consumer_shutdown_timeout=0.05, logging=False
    )
    async with asyncio.timeout(GUARD):
        await queue.init_queue()
        event = await queue.get_publisher().send("held")
        await gate.until_running(1)
        task = queue.request_shutdown()
        if when == "during the drain":
            await wait_for_state(queue, "closing")
        task.cancel()
        await queue.shut_down_queue()  # nobody cancelled this caller
    assert queue.state == "closed"
    assert is_cancelled(await event)


async def wait_for_state(queue: CollectorQueue, state: str) -> None:
    """Yield to the loop until ``queue`` reaches ``state`` (one or two turns
    here; the test's guard bounds it)."""
    while queue.state != state:  # noqa: ASYNC110 - no event to wait on
        await asyncio.sleep(0)


async def test_a_start_cancelled_under_a_raising_teardown_still_closes(
    loop_guard: LoopErrors,
) -> None:
    torn_down: list[str] = []
    setting_up = asyncio.Event()

    class Slow(Collector):
        async def setup(self) -> None:
            setting_up.set()
            await asyncio.Event().wait()

    first = _Worker("first", torn_down, fail="await")
    queue = make_queue([first, Slow("slow", _echo)], logging=False)
    async with asyncio.timeout(GUARD):
        starting = asyncio.create_task(queue.init_queue())
        await setting_up.wait()
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting
        assert queue.state == "closed"
        await queue.shut_down_queue()  # returns: the queue is closed
        assert first.task is not None
        await asyncio.gather(first.task, return_exceptions=True)
    assert torn_down == ["first"]


@pytest.mark.transports("memory")
async def test_a_transport_whose_settle_raises_is_logged_not_fatal(
    loop_guard: LoopErrors,
) -> None:
    from structlog.testing import capture_logs

    from event_collector.transport import MemoryTransport

    settled: list[int] = []

    def settle(event: CollectorEvent[Any]) -> None:
        settled.append(event.id)
        raise RuntimeError("ack failed")

    transport = MemoryTransport()
    transport.settle = settle
    gate = Gate()
    queue = CollectorQueue(
        [Collector("c", gate)],
        transport=transport,
        autoscale=False,
        max_consumers=1,
        consumer_shutdown_timeout=0.01,
    )
    with capture_logs() as logs:
        async with asyncio.timeout(GUARD):
            async with queue:
                publisher = queue.get_publisher()
                gate.open()
                first = await publisher.send(1)
                assert (await first).first() == Ok(1)
                second = await publisher.send(2)  # the consumer lives on
                assert (await second).first() == Ok(2)
    assert queue.state == "closed"
    assert settled == [first.id, second.id]
    failures = [e for e in logs if e["event"] == "transport settle failed"]
    assert len(failures) == 2
