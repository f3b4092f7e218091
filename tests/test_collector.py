"""Collectors: construction checks, processors, subclasses, lifecycle."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from event_collector import ConfigError
from event_collector.collector import Collector
from event_collector.data import Context, Payload


async def echo(payload: Payload[Any], ctx: Context) -> Any:
    return payload.value


class Doubler(Collector):
    key = "doubler"
    topics = ("numbers",)
    timeout = 2.0

    async def process(self, payload: Payload[Any]) -> Any:
        return payload.value * 2


async def test_processor_receives_payload_and_context() -> None:
    seen: list[tuple[Any, Any]] = []

    async def handler(payload: Payload[Any], ctx: Context) -> str:
        seen.append((payload.value, ctx.tag))
        return "done"

    collector = Collector("c", handler, ctx=Context({"tag": "T"}))
    assert await collector.process(Payload(5)) == "done"
    assert seen == [(5, "T")]


def test_defaults() -> None:
    collector = Collector("c", echo)
    assert collector.key == "c"
    assert collector.processor is echo
    assert collector.topics == ()
    assert isinstance(collector.ctx, Context)
    assert len(collector.ctx) == 0
    assert collector.lifecycle is None
    assert collector.timeout is None
    assert repr(collector) == "<Collector key='c'>"


def test_each_collector_gets_its_own_context() -> None:
    a, b = Collector("a", echo), Collector("b", echo)
    a.ctx.x = 1
    assert "x" not in b.ctx


async def test_subclass_takes_its_class_attributes() -> None:
    collector = Doubler()
    assert collector.key == "doubler"
    assert collector.topics == ("numbers",)
    assert collector.timeout == 2.0
    assert await collector.process(Payload(21)) == 42
    assert repr(collector) == "<Doubler key='doubler' topics=['numbers']>"


def test_arguments_override_class_attributes() -> None:
    collector = Doubler("other", topics=["t1", "t2"], timeout=0.5)
    assert collector.key == "other"
    assert list(collector.topics) == ["t1", "t2"]
    assert collector.timeout == 0.5


@pytest.mark.parametrize("key", ["", None, 3])
def test_key_must_be_a_non_empty_string(key: Any) -> None:
    with pytest.raises(ConfigError, match="key must be a non-empty str") as info:
        Collector(key, echo)
    assert repr(key if key is not None else "") in str(info.value)


def test_processor_is_required_without_a_process_override() -> None:
    with pytest.raises(ConfigError, match="needs a processor"):
        Collector("c")


def test_processor_must_be_callable() -> None:
    with pytest.raises(ConfigError, match="processor must be an async callable"):
        Collector("c", "not callable")  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), True, "1"])
def test_bad_timeouts_are_refused(timeout: Any) -> None:
    with pytest.raises(ConfigError, match="timeout must be a positive number"):
        Collector("c", echo, timeout=timeout)


@pytest.mark.parametrize("topics", ["orders", [1, 2]])
def test_topics_must_be_a_list_of_strings(topics: Any) -> None:
    with pytest.raises(ConfigError, match="topics must be a list of str"):
        Collector("c", echo, topics=topics)


def test_a_subclass_topics_attribute_must_not_be_a_single_string() -> None:
    """``topics = "orders"`` on a subclass is refused like the argument is,
    not taken as the topics "o", "r", "d", "e", "r", "s"."""

    class Orders(Collector):
        key = "orders"
        topics = "orders"

        async def process(self, payload: Payload[Any]) -> None:
            return None

    with pytest.raises(ConfigError, match="topics must be a list of str"):
        Orders()


async def test_lifecycle_is_entered_at_setup_and_exited_at_teardown() -> None:
    steps: list[str] = []

    @contextlib.asynccontextmanager
    async def lifecycle(ctx: Context) -> AsyncIterator[None]:
        steps.append("enter")
        ctx.db = "connection"
        yield
        steps.append("exit")
        del ctx.db

    async def handler(payload: Payload[Any], ctx: Context) -> Any:
        return ctx.db

    collector = Collector("c", handler, lifecycle=lifecycle)
    await collector.setup()
    assert steps == ["enter"]
    assert await collector.process(Payload(None)) == "connection"
    await collector.teardown()
    assert steps == ["enter", "exit"]
    assert "db" not in collector.ctx
    await collector.teardown()  # a second teardown does nothing
    assert steps == ["enter", "exit"]


async def test_setup_and_teardown_without_lifecycle_do_nothing() -> None:
    collector = Collector("c", echo)
    await collector.setup()
    await collector.teardown()
    assert await collector.process(Payload(1)) == 1
