"""The seam instrumentation works through (``_probes``, installed by
``_instrument.install``): what a probe sees around sends and collector
calls, the order probes wrap in, installing on a running queue, and that
removing a probe leaves nothing behind.

Most tests run once per transport (see ``transports.py``); a Redis
publisher's probes are tested against a server started for this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import pytest
from structlog.testing import capture_logs

from conftest import Gate, LoopErrors
from event_collector import (
    BatchCollector,
    Collector,
    CollectorQueue,
    Context,
    Delivery,
    Error,
    Ok,
    Payload,
    QueueFull,
)
from event_collector._instrument import install
from event_collector._probes import BatchCall, Call, Probe
from event_collector.redis import RedisPublisher, RedisTransport
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

# Flow control (concurrency, batches) holds in one process only: a broker's
# transport refuses it at construction.
IN_MEMORY_FLOW = pytest.mark.transports("memory")

_streams = itertools.count(1)

Log = list[tuple[Any, ...]]


class Boom(Exception):
    """A handler's failure."""


def _said(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class Recorder(Probe):
    """A probe that writes down what it sees in ``log`` and adds the header
    ``probe-<name>`` to every send."""

    def __init__(self, name: str, log: Log, *, outer: bool = False) -> None:
        self.name = name
        self.log = log
        self.outer = outer
        self.sent: list[Payload[Any]] = []

    @contextlib.contextmanager
    def _around(self, payload: Payload[Any]) -> Iterator[None]:
        self.sent.append(payload)
        payload.headers[f"probe-{self.name}"] = "1"
        self.log.append((self.name, "send", payload.value))
        try:
            yield
        except BaseException as exc:
            self.log.append((self.name, "send raised", _said(exc)))
            raise
        self.log.append((self.name, "sent", payload.value))

    def sending(self, payload: Payload[Any]) -> contextlib.AbstractContextManager[Any]:
        return self._around(payload)

    def wrap(self, collector: Collector, call: Call) -> Call:
        name, log, key = self.name, self.log, collector.key

        async def wrapped(payload: Payload[Any]) -> Any:
            log.append((name, "call", key, payload.value))
            try:
                value = await call(payload)
            except BaseException as exc:
                log.append((name, "raised", key, _said(exc)))
                raise
            log.append((name, "returned", key, value))
            return value

        return wrapped

    def wrap_batch(self, collector: BatchCollector, call: BatchCall) -> BatchCall:
        name, log, key = self.name, self.log, collector.key

        async def wrapped(payloads: list[Payload[Any]]) -> Sequence[Any]:
            log.append((name, "batch", key, [p.value for p in payloads]))
            try:
                values = await call(payloads)
            except BaseException as exc:
                log.append((name, "batch raised", key, _said(exc)))
                raise
            log.append((name, "batch returned", key, list(values)))
            return values

        return wrapped

    def __repr__(self) -> str:
        return f"<Recorder {self.name}>"


_SEND_STEPS = ("send", "sent", "send raised")


def _sends(log: Log) -> Log:
    """What ``sending`` saw."""
    return [entry for entry in log if entry[1] in _SEND_STEPS]


def _calls(log: Log) -> Log:
    """What ``wrap`` and ``wrap_batch`` saw."""
    return [entry for entry in log if entry[1] not in _SEND_STEPS]


def _steps(log: Log) -> tuple[list[str], list[str]]:
    """The steps ``sending`` saw and those ``wrap`` saw, apart: on a broker
    a call may start before the send has returned."""
    return [e[1] for e in _sends(log)], [e[1] for e in _calls(log)]


async def _seen(payload: Payload[Any], ctx: Context) -> dict[str, Any]:
    """What the handler sees, in a form every transport carries back."""
    return {"value": payload.value, "headers": dict(payload.headers)}


async def _answer(payload: Payload[Any], ctx: Context) -> Any:
    if payload.value == "raise":
        raise Boom("no")
    return f"{payload.value}!"


async def _hang(payload: Payload[Any], ctx: Context) -> Any:
    await asyncio.Event().wait()


async def _hang_batch(payloads: list[Payload[Any]], ctx: Context) -> list[Any]:
    await asyncio.Event().wait()
    raise AssertionError("never set")


async def _double(payloads: list[Payload[Any]], ctx: Context) -> list[Any]:
    if any(p.value == "raise" for p in payloads):
        raise Boom("the batch failed")
    return [p.value * 2 for p in payloads]


# -- around a send ---------------------------------------------------------------


async def test_sending_runs_around_every_send_and_its_headers_reach_the_handler(
    loop_guard: LoopErrors,
) -> None:
    log: Log = []
    probe = Recorder("a", log)
    queue = queue_of(Collector("c", _seen))
    install(queue, probe)
    async with queue:
        publisher = queue.get_publisher()
        plain = await publisher.send("plain")
        # Entered and left before send returned.
        assert _sends(log) == [("a", "send", "plain"), ("a", "sent", "plain")]
        own = await publisher.send(Payload("own", headers={"own": "x"}))
        nowait = publisher.send_nowait("nowait", headers={"given": "y"})

        def from_a_thread() -> Any:
            return publisher.send_threadsafe("thread").result(GUARD)

        thread = await asyncio.to_thread(from_a_thread)
        seen = [value_of(await results_of(e)) for e in (plain, own, nowait)]
        seen.append(value_of(thread))
    assert _sends(log) == [
        ("a", step, value)
        for value in ("plain", "own", "nowait", "thread")
        for step in ("send", "sent")
    ]
    assert [s["headers"] for s in seen] == [
        {"probe-a": "1"},
        {"own": "x", "probe-a": "1"},
        {"given": "y", "probe-a": "1"},
        {"probe-a": "1"},
    ]
    # The probe was handed the payload that was sent.
    for payload, event in zip(probe.sent, (plain, own, nowait), strict=False):
        assert payload is event.payload


# A bound on a queue's room is a promise of one process: on a broker it is
# the fleet's backlog, counted from time to time.
@pytest.mark.transports("memory")
async def test_sending_sees_a_send_that_is_refused(loop_guard: LoopErrors) -> None:
    log: Log = []
    gate = Gate()
    queue = queue_of(Collector("c", gate), autoscale=False, max_consumers=1, maxsize=1)
    install(queue, Recorder("a", log))
    async with queue:
        publisher = queue.get_publisher()
        running = await publisher.send("running")
        await gate.until_running(1)
        queued = await publisher.send("queued")
        with pytest.raises(QueueFull):
            publisher.send_nowait("refused")
        gate.open()
        assert [await results_of(e) for e in (running, queued)] == [
            [Ok("running")],
            [Ok("queued")],
        ]
    *_, queued_sent, refused, raised = _sends(log)
    assert queued_sent == ("a", "sent", "queued")
    assert refused == ("a", "send", "refused")
    assert raised[:2] == ("a", "send raised")
    assert raised[2].startswith("QueueFull: ")


class Unruly(Probe):
    """A probe whose ``sending`` misbehaves as ``how`` says: it fails to
    enter, fails to exit, or exits swallowing what the send raised."""

    def __init__(self, how: str) -> None:
        self.how = how

    @contextlib.contextmanager
    def _around(self) -> Iterator[None]:
        if self.how == "enter":
            raise RuntimeError("probe broke on enter")
        try:
            yield
        except Exception:
            if self.how == "swallow":
                return  # a context manager that suppresses the error
            raise
        if self.how == "exit":
            raise RuntimeError("probe broke on exit")

    def sending(self, payload: Payload[Any]) -> contextlib.AbstractContextManager[Any]:
        return self._around()

    def __repr__(self) -> str:
        return f"<Unruly {self.how}>"


@pytest.mark.parametrize("how", ["enter", "exit", "swallow"])
async def test_a_probe_cannot_change_what_a_send_does(
    how: str, loop_guard: LoopErrors
) -> None:
    log: Log = []
    queue = queue_of(Collector("c", _answer))
    # Beside a well-behaved probe, which still sees every send.
    install(queue, Unruly(how))
    install(queue, Recorder("a", log))
    with capture_logs() as logs:
        async with queue:
            publisher = queue.get_publisher()
            sent = await publisher.send("x")
            nowait = publisher.send_nowait("y")
            with pytest.raises(TypeError, match="priority must be an int"):
                await publisher.send("z", priority="high")  # type: ignore[arg-type]
            answers = [await results_of(e) for e in (sent, nowait)]
    # Each send went in once and was answered; the refused one raised.
    assert answers == [[Ok("x!")], [Ok("y!")]]
    assert [e[1:] for e in _sends(log)][:4] == [
        ("send", "x"),
        ("sent", "x"),
        ("send", "y"),
        ("sent", "y"),
    ]
    failed = [e for e in logs if e["event"].startswith("probe failed")]
    if how == "swallow":
        assert failed == []
    else:
        # Entered on all three sends; an exit breaks on the two that went.
        times = 3 if how == "enter" else 2
        assert [e["event"] for e in failed] == [f"probe failed to {how} a send"] * times
        assert all(repr(e["probe"]) == f"<Unruly {how}>" for e in failed)


# -- around a collector call --------------------------------------------------------

# A lone plain collector is called by the consumer itself; with a timeout
# it goes through a runner; beside another, with Delivery.KEY, through the
# router.
_PATHS: dict[str, Callable[[Callable[..., Any]], list[Collector]]] = {
    "direct": lambda f: [Collector("c", f)],
    "runner": lambda f: [Collector("c", f, timeout=60)],
    "routed": lambda f: [Collector("c", f), Collector("other", f)],
}


def _to_c(path: str, value: Any) -> Payload[Any]:
    """A payload for collector ``c`` only, the way ``path`` delivers it."""
    if path == "routed":
        return Payload(value, Delivery.KEY, keys=["c"])
    return Payload(value)


@pytest.mark.parametrize("path", list(_PATHS))
async def test_wrap_sees_the_payload_and_what_the_handler_returns_or_raises(
    loop_guard: LoopErrors, path: str
) -> None:
    log: Log = []
    queue = queue_of(*_PATHS[path](_answer))
    install(queue, Recorder("a", log))
    async with queue:
        publisher = queue.get_publisher()
        ok = await results_of(await publisher.send(_to_c(path, "x")))
        failed = await results_of(await publisher.send(_to_c(path, "raise")))
    assert _calls(log) == [
        ("a", "call", "c", "x"),
        ("a", "returned", "c", "x!"),
        ("a", "call", "c", "raise"),
        ("a", "raised", "c", "Boom: no"),
    ]
    assert ok == [Ok("x!")]
    assert ok[0].collector == "c"
    (error,) = failed
    assert isinstance(error, Error)
    assert error.collector == "c"
    assert "no" in str(error.err)


async def test_wrap_sees_the_collectors_timeout(loop_guard: LoopErrors) -> None:
    log: Log = []
    queue = queue_of(Collector("slow", _hang, timeout=0.05))
    install(queue, Recorder("a", log))
    async with queue:
        (result,) = await results_of(await queue.get_publisher().send(1))
    timed_out = "TimeoutError: collector 'slow' took longer than its timeout of 0.05 s"
    assert _calls(log) == [("a", "call", "slow", 1), ("a", "raised", "slow", timed_out)]
    assert isinstance(result, Error)
    assert result.collector == "slow"


@IN_MEMORY_FLOW
async def test_wrap_batch_sees_each_batch(loop_guard: LoopErrors) -> None:
    log: Log = []
    rows = BatchCollector("rows", _double, max_size=2, max_wait=GUARD)
    slow = BatchCollector("slow", _hang_batch, max_size=2, max_wait=GUARD, timeout=0.05)
    queue = queue_of(rows, slow)
    install(queue, Recorder("a", log))
    results: list[list[list[Ok[Any] | Error]]] = []
    async with queue:
        publisher = queue.get_publisher()
        # Each batch fills to max_size and is answered before the next.
        for values, key in (([1, 2], "rows"), ([3, "raise"], "rows"), ([5, 6], "slow")):
            events = [
                await publisher.send(Payload(v, Delivery.KEY, keys=[key]))
                for v in values
            ]
            results.append([await results_of(e) for e in events])
    timed_out = (
        "TimeoutError: collector 'slow' took longer than its timeout of 0.05 s "
        "for a batch of 2"
    )
    assert _calls(log) == [
        ("a", "batch", "rows", [1, 2]),
        ("a", "batch returned", "rows", [2, 4]),
        ("a", "batch", "rows", [3, "raise"]),
        ("a", "batch raised", "rows", "Boom: the batch failed"),
        ("a", "batch", "slow", [5, 6]),
        ("a", "batch raised", "slow", timed_out),
    ]
    assert results[0] == [[Ok(2)], [Ok(4)]]
    assert [[r.collector for (r,) in rs] for rs in results] == [
        ["rows", "rows"],
        ["rows", "rows"],
        ["slow", "slow"],
    ]
    assert all(isinstance(r, Error) for rs in results[1:] for (r,) in rs)


async def test_outer_probes_wrap_the_others(loop_guard: LoopErrors) -> None:
    log: Log = []
    queue = queue_of(Collector("c", _seen))
    install(queue, Recorder("inner-1", log))
    install(queue, Recorder("outer", log, outer=True))
    install(queue, Recorder("inner-2", log))
    async with queue:
        seen = value_of(await results_of(await queue.get_publisher().send("v")))
    order = ["outer", "inner-1", "inner-2"]
    assert _sends(log) == [
        *((name, "send", "v") for name in order),
        *((name, "sent", "v") for name in reversed(order)),
    ]
    assert [entry[:2] for entry in _calls(log)] == [
        *((name, "call") for name in order),
        *((name, "returned") for name in reversed(order)),
    ]
    assert seen["headers"] == {
        "probe-outer": "1",
        "probe-inner-1": "1",
        "probe-inner-2": "1",
    }


# -- installing on a running queue, and removing --------------------------------------


async def _before_during_after(
    queue: CollectorQueue, log: Log, to: Callable[[Any], Payload[Any]]
) -> list[Any]:
    """Send one event before a probe is installed on the running queue, one
    while it is, one after it is removed; return their values."""
    publisher = queue.get_publisher()
    before = value_of(await results_of(await publisher.send(to("before"))))
    remove = install(queue, Recorder("a", log))
    during = value_of(await results_of(await publisher.send(to("during"))))
    remove()
    after = value_of(await results_of(await publisher.send(to("after"))))
    return [before, during, after]


@pytest.mark.parametrize("path", list(_PATHS))
async def test_a_probe_installed_on_a_running_queue_wraps_the_next_events(
    loop_guard: LoopErrors, path: str
) -> None:
    log: Log = []
    async with queue_of(*_PATHS[path](_answer)) as queue:
        values = await _before_during_after(queue, log, lambda v: _to_c(path, v))
    assert values == ["before!", "during!", "after!"]
    # Compared apart: on a broker the call may start before send returns.
    assert _sends(log) == [("a", "send", "during"), ("a", "sent", "during")]
    assert _calls(log) == [
        ("a", "call", "c", "during"),
        ("a", "returned", "c", "during!"),
    ]


@IN_MEMORY_FLOW
async def test_a_probe_installed_on_a_running_queue_wraps_flow_controlled_calls(
    loop_guard: LoopErrors,
) -> None:
    log: Log = []
    limited = Collector("c", _answer, concurrency=1)
    async with queue_of(limited) as queue:
        values = await _before_during_after(queue, log, Payload)
    assert values == ["before!", "during!", "after!"]
    assert _calls(log) == [
        ("a", "call", "c", "during"),
        ("a", "returned", "c", "during!"),
    ]

    log.clear()
    rows = BatchCollector("rows", _double, max_size=1, max_wait=GUARD)
    async with queue_of(rows) as queue:
        values = await _before_during_after(queue, log, Payload)
    assert values == ["beforebefore", "duringduring", "afterafter"]
    assert _calls(log) == [
        ("a", "batch", "rows", ["during"]),
        ("a", "batch returned", "rows", ["duringduring"]),
    ]


class _Subclassed(Collector):
    key = "c"

    async def process(self, payload: Payload[Any]) -> Any:
        return f"{payload.value}!"


_KINDS: dict[str, Callable[[], Collector]] = {
    "plain": lambda: Collector("c", _answer),
    "timeout": lambda: Collector("c", _answer, timeout=60),
    "subclass": _Subclassed,
}


@pytest.mark.parametrize("kind", list(_KINDS))
async def test_removing_probes_undoes_them_exactly(
    loop_guard: LoopErrors, kind: str
) -> None:
    log: Log = []
    collector = _KINDS[kind]()
    untouched = dict(vars(collector))
    queue = queue_of(collector)
    async with queue:
        publisher = queue.get_publisher()
        remove_a = install(queue, Recorder("a", log))
        remove_b = install(queue, Recorder("b", log))
        both = value_of(await results_of(await publisher.send("both")))
        remove_a()
        only_b = value_of(await results_of(await publisher.send("only-b")))
        remove_b()
        assert vars(collector) == untouched
        neither = value_of(await results_of(await publisher.send("neither")))
    assert [both, only_b, neither] == ["both!", "only-b!", "neither!"]
    assert [(entry[0], entry[-1]) for entry in log if entry[1] in ("send", "call")] == [
        ("a", "both"),
        ("b", "both"),
        ("a", "both"),
        ("b", "both"),
        ("b", "only-b"),
        ("b", "only-b"),
    ]
    assert vars(collector) == untouched


@IN_MEMORY_FLOW
def test_removing_probes_from_a_batch_collector_undoes_them_exactly() -> None:
    rows = BatchCollector("rows", _double, max_size=1, max_wait=GUARD)
    untouched = dict(vars(rows))
    queue = queue_of(rows)
    remove_a = install(queue, Recorder("a", []))
    remove_b = install(queue, Recorder("b", []))
    assert vars(rows) != untouched
    remove_b()
    remove_a()
    assert vars(rows) == untouched
    assert rows._probed is None
    assert rows._probed_batch is None


async def test_the_same_probe_twice_is_refused(loop_guard: LoopErrors) -> None:
    log: Log = []
    probe = Recorder("a", log)
    queue = queue_of(Collector("c", _answer))
    remove = install(queue, probe)
    with pytest.raises(ValueError, match=r"<Recorder a> is installed on this target"):
        install(queue, probe)
    async with queue:
        value = value_of(await results_of(await queue.get_publisher().send("x")))
        # The first installation is as it was: once around each.
        assert value == "x!"
        assert _steps(log) == (["send", "sent"], ["call", "returned"])
        remove()
        install(queue, probe)  # once removed, it may come back
        log.clear()
        assert value_of(await results_of(await queue.get_publisher().send("y"))) == "y!"
    assert _steps(log) == (["send", "sent"], ["call", "returned"])


@pytest.mark.transports("memory")  # no event is sent
def test_a_wrong_target_is_a_type_error() -> None:
    queue = queue_of(Collector("c", _answer))
    for target, name in [
        (object(), "object"),
        (queue.collectors[0], "Collector"),
        (queue.get_publisher(), "EventPublisher"),
        (queue.transport, "MemoryTransport"),
    ]:
        with pytest.raises(
            TypeError,
            match=rf"instrument a CollectorQueue or a RedisPublisher \(got {name}\)",
        ):
            install(target, Recorder("a", []))  # type: ignore[arg-type]
    # Nothing was installed by the refused calls.
    remove = install(queue, Recorder("a", []))
    remove()


# The queue's own publisher is not where a send is instrumented: a send
# through it on the memory transport goes by the fast path.
@pytest.mark.transports("memory")
async def test_an_unprobed_send_makes_no_payload(loop_guard: LoopErrors) -> None:
    handed: list[Payload[Any]] = []

    async def keep(payload: Payload[Any], ctx: Context) -> Any:
        handed.append(payload)
        return payload.value

    queue = queue_of(Collector("c", keep))
    async with queue:
        publisher = queue.get_publisher()
        events = [
            await publisher.send("before"),
            await publisher.send("none", headers=None),
        ]
        for event in events:
            await results_of(event)
        remove = install(queue, Recorder("a", []))
        probed = await publisher.send("probed")
        await results_of(probed)
        remove()
        after = await publisher.send("after")
        await results_of(after)
    # A plain value sent without probes or headers is kept as it is: the
    # handler gets a payload made for it, not one the send made (see
    # CollectorEvent.payload).
    assert handed[0] is not events[0].payload
    assert handed[1] is not events[1].payload
    assert handed[2] is probed.payload
    assert handed[3] is not after.payload
    assert [p.headers for p in handed] == [{}, {}, {"probe-a": "1"}, {}]


# -- a Redis publisher ---------------------------------------------------------------


@pytest.fixture
def url(redis_server_module: RedisServer) -> str:  # noqa: F811
    return redis_server_module.url


@pytest.fixture
def stream() -> str:
    return f"probes-{next(_streams)}"


@pytest.fixture
async def publisher(url: str, stream: str) -> AsyncIterator[RedisPublisher]:
    async with RedisTransport(url, stream=stream).publisher() as publisher:
        yield publisher


@pytest.mark.transports("redis")
async def test_a_redis_publisher_gets_sending_only(
    url: str, stream: str, publisher: RedisPublisher
) -> None:
    log: Log = []
    probe = Recorder("a", log)
    collector = Collector("c", _seen)
    untouched = dict(vars(collector))
    worker = CollectorQueue(
        [collector], transport=RedisTransport(url, stream=stream), logging=False
    )
    remove = install(publisher, probe)
    with pytest.raises(ValueError, match="installed on this target already"):
        install(publisher, probe)
    async with worker:
        sent = await publisher.send("send")
        nowait = publisher.send_nowait("nowait", headers={"given": "y"})
        many = await publisher.send_many(["one", Payload("two", headers={"own": "z"})])
        probed = [value_of(await results_of(e)) for e in (sent, nowait, *many)]
        assert vars(collector) == untouched
        remove()
        after = value_of(await results_of(await publisher.send("after")))
    assert log == [
        ("a", step, value) for value in ("send", "nowait") for step in ("send", "sent")
    ] + [
        ("a", "send", "one"),
        ("a", "send", "two"),
        ("a", "sent", "two"),
        ("a", "sent", "one"),
    ]
    assert [s["headers"] for s in probed] == [
        {"probe-a": "1"},
        {"given": "y", "probe-a": "1"},
        {"probe-a": "1"},
        {"own": "z", "probe-a": "1"},
    ]
    assert after == {"value": "after", "headers": {}}
