"""Results: ``Ok`` and ``Error``, the ``ResultList`` of an event, and the
helpers that make them.

Defined here and shown as ``event_collector.data``'s, where they are
documented and imported from.
"""

from __future__ import annotations

import traceback
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Generic, NoReturn, TypeVar

__all__ = ["Error", "Ok", "ResultList", "abind", "as_result"]

T = TypeVar("T")


class Ok(Generic[T]):
    """A successful result holding the value a collector returned.

    :param value: the value.
    :param collector: the key of the collector that produced it (the queue
        sets it); two results are equal when their values are, whichever
        collector made them.
    """

    __slots__ = ("collector", "value")
    __match_args__ = ("value",)

    def __init__(self, value: T, collector: str | None = None) -> None:
        self.value: T = value
        self.collector: str | None = collector
        """The key of the collector that produced it; ``None`` for a
        result no collector made."""

    @property
    def is_error(self) -> bool:
        """Always ``False``."""
        return False

    def ok(self) -> bool:
        """Return ``True``: this is a success."""
        return True

    def error(self) -> bool:
        """Return ``False``: this is not an error."""
        return False

    def unwrap(self) -> T:
        """Return the value."""
        return self.value

    def __eq__(self, other: object) -> bool:
        # By value only: which collector made a result is where it came
        # from, not what it is.
        return type(other) is Ok and bool(other.value == self.value)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        if self.collector is None:
            return f"Ok({self.value!r})"
        return f"Ok({self.value!r}, collector={self.collector!r})"


class Error:
    """A failed result: the exception (or a message) and optional details.

    :param err: the exception, or a message.
    :param details: extra facts about the failure, or ``None``.
    :param collector: the key of the collector that failed (the queue sets
        it); ``None`` for an error no collector made (the event was
        cancelled before any ran, say).
    """

    __slots__ = ("collector", "details", "err")
    __match_args__ = ("err",)

    def __init__(
        self,
        err: BaseException | str,
        details: dict[str, Any] | None = None,
        collector: str | None = None,
    ) -> None:
        self.err: BaseException | str = err
        """The exception a collector raised, with its ``__traceback__``, or a
        string for an error that has no exception behind it."""
        self.details: dict[str, Any] | None = details
        """Extra facts about the failure (``abind`` puts the formatted
        traceback under ``"trace"``), or ``None``."""
        self.collector: str | None = collector
        """The key of the collector that failed, or ``None``."""

    @property
    def is_error(self) -> bool:
        """Always ``True``."""
        return True

    @property
    def value(self) -> None:
        """Always ``None``: an error has no value."""
        return None

    def ok(self) -> bool:
        """Return ``False``: this is not a success."""
        return False

    def error(self) -> bool:
        """Return ``True``: this is an error."""
        return True

    @property
    def traceback(self) -> str:
        """The formatted traceback of ``err`` ("" for a string error).

        Formatted on demand, so that results nobody inspects cost nothing.
        """
        if isinstance(self.err, BaseException):
            return "".join(traceback.format_exception(self.err)).rstrip()
        return ""

    def unwrap(self) -> NoReturn:
        """Raise ``err``, or :class:`RuntimeError` if it is a string."""
        if isinstance(self.err, BaseException):
            raise self.err
        raise RuntimeError(self.err)

    def __repr__(self) -> str:
        if self.collector is None:
            return f"Error({self.err!r})"
        return f"Error({self.err!r}, collector={self.collector!r})"


class ResultList(list[Ok[Any] | Error]):
    """The results of one event: one per collector that received it."""

    __slots__ = ()

    @property
    def results(self) -> list[Ok[Any] | Error]:
        """The results as a plain list."""
        return list(self)

    def first(self) -> Ok[Any] | Error:
        """The first result, or an :class:`Error` if there is none (no
        collector matched the payload's delivery)."""
        if self:
            return self[0]
        return Error("result list is empty: no collector received the payload")

    def iter(self) -> Iterator[Ok[Any] | Error]:
        """Iterate over the results."""
        return iter(self)

    def size(self) -> int:
        """The number of results."""
        return len(self)

    def __repr__(self) -> str:
        return f"ResultList({list.__repr__(self)})"


# The result classes as a tuple: isinstance checks a tuple faster than a
# union, and as_result runs once per read of a lone handler's answer.
_RESULT_TYPES: tuple[type[Ok[Any]], type[Error]] = (Ok, Error)


def as_result(value: object, collector: str | None = None) -> Ok[Any] | Error:
    """Return ``value`` if it is a result, else ``Ok(value)``.

    :param collector: the key of the collector that returned ``value``,
        which the result then names. A result that names no collector yet
        is given this one; one that names another collector is copied, not
        changed, so a result returned by two collectors names each in turn.
        Without ``collector``, a result is returned as it is.
    """
    if isinstance(value, _RESULT_TYPES):
        named = value.collector
        if named is None:
            value.collector = collector
        elif collector is not None and named != collector:
            if type(value) is Ok:
                return Ok(value.value, collector)
            assert isinstance(value, Error)
            return Error(value.err, value.details, collector)
        return value
    return Ok(value, collector)


async def abind(
    func: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
) -> Ok[Any] | Error:
    """Await ``func(*args, **kwargs)`` and return its outcome as a result.

    A plain return value is wrapped in :class:`Ok`; an exception becomes an
    :class:`Error` whose details hold the formatted traceback.
    """
    try:
        value = await func(*args, **kwargs)
    except Exception as exc:
        return Error(exc, details={"trace": "".join(traceback.format_exception(exc))})
    return as_result(value)


# Shown (in reprs, pickles and the docs) as the module's they are imported from.
for _cls in (Ok, Error, ResultList):
    _cls.__module__ = "event_collector.data"
del _cls
