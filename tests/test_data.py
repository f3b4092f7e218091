"""Results, payloads, delivery modes and the collector context."""

from __future__ import annotations

import copy
import pickle
import typing
from collections.abc import Callable
from typing import Any

import pytest

from event_collector._compat import TypeAliasType
from event_collector.data import (
    Context,
    Delivery,
    Error,
    Ok,
    Payload,
    Record,
    Result,
    ResultList,
    abind,
    as_result,
)


def describe(result: Ok[Any] | Error) -> str:
    match result:
        case Ok(value):
            return f"ok:{value}"
        case Error(err):
            return f"error:{err}"
    return "unreachable"


# -- Ok / Error --------------------------------------------------------------


def test_ok_reports_success_and_unwraps() -> None:
    result = Ok(42)
    assert result.ok() is True
    assert result.error() is False
    assert result.is_error is False
    assert result.unwrap() == 42
    assert result.value == 42
    assert repr(result) == "Ok(42)"


def test_ok_equality_and_unhashable() -> None:
    assert Ok(1) == Ok(1)
    assert Ok(1) != Ok(2)
    assert Ok(1) != 1
    with pytest.raises(TypeError):
        hash(Ok(1))


def test_error_reports_failure_and_unwrap_raises_the_exception() -> None:
    exc = KeyError("missing")
    result = Error(exc, details={"where": "db"})
    assert result.ok() is False
    assert result.error() is True
    assert result.is_error is True
    assert result.value is None
    assert result.details == {"where": "db"}
    with pytest.raises(KeyError) as info:
        result.unwrap()
    assert info.value is exc


def test_error_with_a_string_unwraps_to_runtime_error() -> None:
    result = Error("it broke")
    with pytest.raises(RuntimeError, match="it broke"):
        result.unwrap()
    assert result.traceback == ""
    assert repr(result) == "Error('it broke')"


def test_error_traceback_is_formatted_on_demand() -> None:
    def fail() -> None:
        raise ValueError("bad value")

    try:
        fail()
    except ValueError as exc:
        result = Error(exc)
    text = result.traceback
    assert "ValueError: bad value" in text
    assert "in fail" in text


def test_results_work_with_match() -> None:
    assert describe(Ok("x")) == "ok:x"
    assert describe(Error("boom")) == "error:boom"


def test_as_result_wraps_plain_values_only() -> None:
    ok, err = Ok(1), Error("e")
    assert as_result(ok) is ok
    assert as_result(err) is err
    assert as_result(3) == Ok(3)


# -- ResultList --------------------------------------------------------------


def test_result_list_accessors() -> None:
    results = ResultList([Ok(1), Error("e"), Ok(3)])
    assert results.size() == 3
    assert len(results) == 3
    assert results.first() == Ok(1)
    assert list(results.iter()) == list(results)
    plain = results.results
    assert type(plain) is list
    assert plain[0] == Ok(1)
    plain.clear()
    assert results.size() == 3, "results must be a copy"
    assert repr(ResultList([Ok(1)])) == "ResultList([Ok(1)])"


def test_empty_result_list_first_is_an_error() -> None:
    first = ResultList().first()
    assert isinstance(first, Error)
    assert "empty" in str(first.err)
    with pytest.raises(RuntimeError):
        first.unwrap()


# -- abind -------------------------------------------------------------------


async def test_abind_wraps_return_values_in_ok() -> None:
    async def add(a: int, b: int = 0) -> int:
        return a + b

    assert await abind(add, 1, b=2) == Ok(3)


async def test_abind_keeps_results_as_they_are() -> None:
    err = Error("already an error")

    async def give() -> Error:
        return err

    assert await abind(give) is err


async def test_abind_turns_exceptions_into_errors_with_a_trace() -> None:
    async def fail() -> None:
        raise ZeroDivisionError("nope")

    result = await abind(fail)
    assert isinstance(result, Error)
    assert isinstance(result.err, ZeroDivisionError)
    assert result.details is not None
    assert "ZeroDivisionError: nope" in result.details["trace"]


# -- Payload / Delivery ------------------------------------------------------


def test_payload_defaults_to_broadcast() -> None:
    payload = Payload({"a": 1})
    assert payload.value == {"a": 1}
    assert payload.delivery is Delivery.BROADCAST
    assert payload.keys == ()
    assert payload.topics == ()
    assert payload.priority is None
    assert repr(payload) == "<Payload BROADCAST value={'a': 1}>"


def test_payload_keyword_and_positional_arguments() -> None:
    payload = Payload("v", Delivery.KEY, ["a", "b"], None, 5)
    assert payload.delivery is Delivery.KEY
    assert payload.keys == ("a", "b")
    assert payload.priority == 5
    topical = Payload("v", delivery=Delivery.TOPIC, topics=iter(["t"]))
    assert topical.topics == ("t",)
    assert "TOPIC" in repr(topical)
    assert "topics=('t',)" in repr(topical)


def test_payload_setters() -> None:
    payload = Payload(1)
    payload.set_delivery(Delivery.KEY, keys=["k"])
    assert payload.delivery is Delivery.KEY
    assert payload.keys == ("k",)
    payload.set_delivery(Delivery.TOPIC, topics=["t"])
    assert payload.topics == ("t",)
    assert payload.keys == ("k",), "keys not given are left alone"
    payload.set_priority(7)
    assert payload.priority == 7
    assert "priority=7" in repr(payload)


def test_delivery_members() -> None:
    assert {d.name for d in Delivery} == {"BROADCAST", "KEY", "TOPIC"}


def test_payload_uses_slots() -> None:
    payload = Payload(1)
    with pytest.raises(AttributeError):
        payload.other = 2  # type: ignore[attr-defined]


# -- Context -----------------------------------------------------------------


def test_context_attribute_and_item_access_share_values() -> None:
    ctx = Context({"db": "conn"})
    assert ctx.db == "conn"
    assert ctx["db"] == "conn"
    ctx.cache = {}
    assert ctx["cache"] == {}
    ctx["n"] = 1
    assert ctx.n == 1
    assert "n" in ctx
    assert sorted(ctx) == ["cache", "db", "n"]
    assert len(ctx) == 3
    assert ctx.get("missing", "dflt") == "dflt"
    assert repr(Context({"a": 1})) == "Context({'a': 1})"


def test_context_deletion_and_missing_names() -> None:
    ctx = Context()
    ctx.a = 1
    ctx["b"] = 2
    del ctx.a
    del ctx["b"]
    assert len(ctx) == 0
    with pytest.raises(AttributeError, match="missing"):
        _ = ctx.missing
    with pytest.raises(AttributeError):
        del ctx.missing
    with pytest.raises(KeyError):
        _ = ctx["missing"]


# -- type aliases ------------------------------------------------------------


def test_record_and_result_are_type_alias_objects() -> None:
    assert isinstance(Record, TypeAliasType)
    assert isinstance(Result, TypeAliasType)
    assert Record.__value__ == dict[str, Any]
    assert set(typing.get_args(Result.__value__)) == {Ok[Any], Error}


@pytest.mark.parametrize(
    "duplicate",
    [copy.copy, copy.deepcopy, lambda ctx: pickle.loads(pickle.dumps(ctx))],
    ids=["copy", "deepcopy", "pickle"],
)
def test_context_can_be_copied_and_pickled(duplicate: Callable[[Context], Any]) -> None:
    ctx = Context({"db": "conn", "n": [1]})
    clone = duplicate(ctx)
    assert isinstance(clone, Context)
    assert clone.db == "conn"
    assert clone["n"] == [1]
    clone.extra = True
    assert "extra" not in ctx


@pytest.mark.parametrize("field", ["keys", "topics"])
def test_a_single_string_is_not_split_into_characters(field: str) -> None:
    names: Any = "store"
    if field == "keys":
        payload = Payload(1, delivery=Delivery.KEY, keys=names)
    else:
        payload = Payload(1, delivery=Delivery.TOPIC, topics=names)
    assert getattr(payload, field) == ("store",)
