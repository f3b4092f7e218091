"""The JSON codec on its own (no server): what it writes, what it reads
back, and what it refuses, on its fast path and on the standard library's
full encoder and decoder."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from event_collector.redis import JsonCodec

VALUES: list[Any] = [
    {"v": {"n": 1}},
    [["ok", {"n": 12345}, "noop"]],
    {"v": 'é, "quoted", a\nnew line, \u2028 and \x00', "k": ["a", "b"]},
    {"v": [1, -2.5, 1e300, None, True, False, [], {}]},
    {"v": {1: "int key", 2.5: "float key", False: "bool key", None: "none key"}},
    "a bare string",
    17,
    None,
]


def _codecs() -> list[JsonCodec]:
    fast = JsonCodec()
    plain = JsonCodec()
    plain._one_shot = None  # the standard library's JSONEncoder.encode
    return [fast, plain]


def test_the_fast_encoder_is_in_use_on_cpython() -> None:
    assert JsonCodec()._one_shot is not None


@pytest.mark.parametrize("value", VALUES)
def test_both_paths_write_the_same_compact_utf8_json(value: Any) -> None:
    expected = json.dumps(
        value, ensure_ascii=False, separators=(",", ":"), allow_nan=False
    ).encode()
    fast, plain = _codecs()
    assert fast.encode(value) == expected
    assert plain.encode(value) == expected


@pytest.mark.parametrize("value", VALUES)
def test_what_is_written_reads_back(value: Any) -> None:
    codec = JsonCodec()
    assert codec.decode(codec.encode(value)) == json.loads(json.dumps(value))


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ({1, 2}, TypeError),
        ({"v": object()}, TypeError),
        ({(1, 2): "tuple key"}, TypeError),
        (float("nan"), ValueError),
        ({"v": [math.inf]}, ValueError),
    ],
)
def test_what_json_cannot_carry_is_refused_alike(bad: Any, error: type) -> None:
    for codec in _codecs():
        with pytest.raises(error):
            codec.encode(bad)


def test_a_value_that_contains_itself_is_a_value_error() -> None:
    looped: list[Any] = []
    looped.append(looped)
    codec = JsonCodec()
    with pytest.raises(ValueError, match="contains itself"):
        codec.encode({"v": looped})
    # Nothing of the failed call is kept: the next value encodes.
    assert codec.encode({"v": [1]}) == b'{"v":[1]}'


def test_whitespace_written_by_another_program_is_read() -> None:
    codec = JsonCodec()
    assert codec.decode(b' {"v" : [1, 2] }\n') == {"v": [1, 2]}
    assert codec.decode(b"\t[1]") == [1]


@pytest.mark.parametrize(
    "bad", [b"", b"   ", b'{"v":', b"[1] [2]", b'{"v": 1} x', b"nope"]
)
def test_what_is_not_json_is_a_value_error(bad: bytes) -> None:
    with pytest.raises(json.JSONDecodeError):  # a ValueError
        JsonCodec().decode(bad)


def test_bytes_that_are_not_utf8_are_a_value_error() -> None:
    with pytest.raises(UnicodeDecodeError):  # a ValueError
        JsonCodec().decode(b"\xff\xfe")
