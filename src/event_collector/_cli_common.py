"""What the ``event-collector`` commands share: argument types, the two
errors that end a command with a message, and the Redis bits of ``worker``
and ``top``."""

from __future__ import annotations

import argparse
import importlib
import math
from collections.abc import Callable
from typing import Any, TextIO

__all__ = [
    "REDIS_SCHEMES",
    "CannotRun",
    "Refused",
    "add_stream_options",
    "bands",
    "display_url",
    "is_terminal",
    "non_negative",
    "number",
    "port",
    "positive",
    "positive_int",
    "require_redis",
]

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
"""How a Redis URL may start."""


class Refused(Exception):
    """What the command line names cannot be used: the command prints the
    message and exits with status 2."""


class CannotRun(Exception):
    """What a command needs is not there (an optional package, a port to
    listen on): the command prints the message and exits with status 1."""


def number(kind: Callable[[str], float], *, minimum: float, strict: bool) -> Any:
    """An argument type: a number of ``kind`` above ``minimum`` (or at it,
    unless ``strict``), finite."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        bad = not math.isfinite(value) or (
            value <= minimum if strict else value < minimum
        )
        if bad:
            sign = ">" if strict else ">="
            raise argparse.ArgumentTypeError(f"must be {sign} {minimum:g}: {text!r}")
        return value

    return parse


positive = number(float, minimum=0.0, strict=True)
non_negative = number(float, minimum=0.0, strict=False)
positive_int = number(int, minimum=1, strict=False)


def port(text: str) -> int:
    """An argument type: a TCP port, 0 to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 0 and 65535: {text!r}")
    return value


def bands(text: str) -> tuple[int, ...]:
    """An argument type: increasing integers separated by commas."""
    try:
        bounds = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be increasing integers separated by commas, as in 50,100: {text!r}"
        ) from None
    if list(bounds) != sorted(set(bounds)):
        raise argparse.ArgumentTypeError(f"must be increasing: {text!r}")
    return bounds


def add_stream_options(parser: argparse.ArgumentParser) -> None:
    """The options that say which stream and group, shared by ``worker``
    and ``top``."""
    parser.add_argument(
        "--stream",
        required=True,
        metavar="NAME",
        help="the work stream's Redis key; the transport's other keys start "
        "with NAME: (required)",
    )
    parser.add_argument(
        "--group",
        default=None,
        help="the consumer group the workers share (default: event-collector)",
    )


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal (``False`` for a closed one)."""
    try:
        return stream.isatty()
    except ValueError:  # a closed stream
        return False


_REDIS_EXTRA = "pip install 'event-collector[redis]'"


def require_redis(command: str) -> None:
    """Raise :class:`CannotRun` unless redis-py is installed."""
    try:
        importlib.import_module("redis")
    except ImportError:
        raise CannotRun(
            f"event-collector {command} needs redis-py, which is not installed.\n"
            f"Install it with the redis extra: {_REDIS_EXTRA}"
        ) from None


def display_url(url: str) -> str:
    """``url`` without its password."""
    head, sep, tail = url.rpartition("@")
    if not sep:
        return url
    scheme, _, user = head.partition("://")
    return f"{scheme}://{user.split(':', 1)[0]}:***@{tail}"
