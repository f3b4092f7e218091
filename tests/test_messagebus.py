"""The message bus: handlers by message type, commands, follow-up messages,
failing handlers."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from structlog.testing import capture_logs

from event_collector._compat import TypeAliasType
from event_collector.messagebus import (
    BusEvent,
    BusEventQueue,
    Command,
    Message,
    MessageBus,
)


@dataclasses.dataclass
class Ping(Message):
    n: int = 0


@dataclasses.dataclass
class Pong(Message):
    n: int = 0


class Unrelated(Message):
    pass


@dataclasses.dataclass
class Reset(Command):
    reason: str = ""


class Recorder:
    """Collects ``(handler name, message)`` in call order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def handler(self, name: str) -> Any:
        async def handle(msg: Any, queue: BusEventQueue) -> None:
            self.calls.append((name, msg))

        handle.__qualname__ = name
        return handle


async def test_message_reaches_every_handler_of_its_type_in_order() -> None:
    bus = MessageBus()
    rec = Recorder()
    bus.add_msg_handler(Ping, rec.handler("first"))
    bus.add_msg_handler(Ping, rec.handler("second"))
    bus.add_msg_handler(Pong, rec.handler("pong"))
    msg = Ping(1)
    await bus.dispatch(msg)
    assert rec.calls == [("first", msg), ("second", msg)]


async def test_dispatch_without_handlers_does_nothing() -> None:
    bus = MessageBus()
    rec = Recorder()
    bus.add_msg_handler(Ping, rec.handler("ping"))
    await bus.dispatch(Unrelated())
    assert rec.calls == []


async def test_handlers_can_queue_further_messages_in_order() -> None:
    bus = MessageBus()
    seen: list[str] = []

    async def on_ping(msg: Ping, queue: BusEventQueue) -> None:
        seen.append(f"ping{msg.n}")
        if msg.n < 2:
            queue.append(Ping(msg.n + 1))
        queue.append(Pong(msg.n))

    async def on_pong(msg: Pong, queue: BusEventQueue) -> None:
        seen.append(f"pong{msg.n}")

    bus.add_msg_handler(Ping, on_ping)
    bus.add_msg_handler(Pong, on_pong)
    await bus.dispatch(Ping(0))
    # Breadth first: what a handler queues runs after what was queued before.
    assert seen == ["ping0", "ping1", "pong0", "ping2", "pong1", "pong2"]


async def test_del_msg_handler_removes_one_or_all() -> None:
    bus = MessageBus()
    rec = Recorder()
    first, second = rec.handler("first"), rec.handler("second")
    bus.add_msg_handler(Ping, first)
    bus.add_msg_handler(Ping, second)
    bus.del_msg_handler(Ping, first)
    await bus.dispatch(Ping())
    assert [name for name, _ in rec.calls] == ["second"]
    assert bus.has_handlers(Ping)

    bus.del_msg_handler(Ping)
    assert not bus.has_handlers(Ping)
    await bus.dispatch(Ping())
    assert len(rec.calls) == 1
    # Removing what is not there is not an error.
    bus.del_msg_handler(Ping, first)
    bus.del_msg_handler(Pong)


async def test_removing_the_last_handler_forgets_the_type() -> None:
    bus = MessageBus()
    rec = Recorder()
    only = rec.handler("only")
    bus.add_msg_handler(Ping, only)
    bus.del_msg_handler(Ping, only)
    assert not bus.has_handlers(Ping)
    assert repr(bus) == "<MessageBus messages=0 commands=0>"


async def test_command_goes_to_its_one_handler() -> None:
    bus = MessageBus()
    rec = Recorder()
    bus.add_cmd_handler(Reset, rec.handler("old"))
    bus.add_cmd_handler(Reset, rec.handler("new"))  # replaces
    cmd = Reset("why")
    await bus.dispatch(cmd)
    assert rec.calls == [("new", cmd)]
    assert bus.has_handlers(Reset)
    bus.del_cmd_handler(Reset)
    assert not bus.has_handlers(Reset)
    await bus.dispatch(Reset())
    assert len(rec.calls) == 1


async def test_handler_may_queue_a_command() -> None:
    bus = MessageBus()
    rec = Recorder()

    async def on_ping(msg: Ping, queue: BusEventQueue) -> None:
        queue.append(Reset("from ping"))

    bus.add_msg_handler(Ping, on_ping)
    bus.add_cmd_handler(Reset, rec.handler("reset"))
    await bus.dispatch(Ping())
    assert rec.calls == [("reset", Reset("from ping"))]


async def test_failing_handler_is_logged_and_the_others_still_run() -> None:
    bus = MessageBus()
    rec = Recorder()

    async def broken(msg: Ping, queue: BusEventQueue) -> None:
        raise RuntimeError("handler broke")

    bus.add_msg_handler(Ping, rec.handler("before"))
    bus.add_msg_handler(Ping, broken)
    bus.add_msg_handler(Ping, rec.handler("after"))
    with capture_logs() as logs:
        await bus.dispatch(Ping())
    assert [name for name, _ in rec.calls] == ["before", "after"]
    errors = [e for e in logs if e["event"] == "message bus handler failed"]
    assert len(errors) == 1
    entry = errors[0]
    assert entry["log_level"] == "error"
    assert isinstance(entry["exc_info"], RuntimeError)
    assert entry["bus_message"] == "Ping"
    assert "broken" in entry["handler"]


async def test_failing_handler_with_logging_off_writes_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bus = MessageBus(logging=False)

    async def broken(msg: Ping, queue: BusEventQueue) -> None:
        raise RuntimeError("handler broke")

    bus.add_msg_handler(Ping, broken)
    with capture_logs() as logs:
        await bus.dispatch(Ping())
    assert logs == []
    assert capsys.readouterr() == ("", "")


async def test_objects_that_are_not_bus_events_are_dropped_and_logged() -> None:
    bus = MessageBus()
    rec = Recorder()

    async def on_ping(msg: Ping, queue: BusEventQueue) -> None:
        queue.append("not a message")  # type: ignore[arg-type]
        queue.append(Pong())

    bus.add_msg_handler(Ping, on_ping)
    bus.add_msg_handler(Pong, rec.handler("pong"))
    with capture_logs() as logs:
        await bus.dispatch(Ping())
    assert [name for name, _ in rec.calls] == ["pong"]
    assert any("not a Message or Command" in e["event"] for e in logs)


async def test_cancellation_is_not_swallowed() -> None:
    bus = MessageBus()
    started = asyncio.Event()

    async def slow(msg: Ping, queue: BusEventQueue) -> None:
        started.set()
        await asyncio.Event().wait()

    bus.add_msg_handler(Ping, slow)
    task = asyncio.create_task(bus.dispatch(Ping()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_registration_checks_types() -> None:
    bus = MessageBus()

    async def handler(msg: Any, queue: BusEventQueue) -> None:
        pass

    with pytest.raises(TypeError, match="Message subclass"):
        bus.add_msg_handler(Reset, handler)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Message subclass"):
        bus.add_msg_handler(Ping(), handler)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        bus.add_msg_handler(Ping, "nope")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Command subclass"):
        bus.add_cmd_handler(Ping, handler)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        bus.add_cmd_handler(Reset, 3)  # type: ignore[arg-type]


async def test_constructor_takes_initial_handlers() -> None:
    rec = Recorder()
    bus = MessageBus(
        msg_handlers={Ping: [rec.handler("a"), rec.handler("b")]},
        cmd_handlers={Reset: rec.handler("c")},
    )
    assert repr(bus) == "<MessageBus messages=1 commands=1>"
    await bus.dispatch(Ping())
    await bus.dispatch(Reset())
    assert [name for name, _ in rec.calls] == ["a", "b", "c"]


def test_bus_event_aliases() -> None:
    assert isinstance(BusEvent, TypeAliasType)
    assert isinstance(BusEventQueue, TypeAliasType)
    assert Message.__slots__ == ()
    assert Command.__slots__ == ()
