"""The one rule for what an exception raised by user code becomes.

A handler, a bus handler, an observer or a teardown may raise anything. The
queue turns what they raise into an outcome (an ``Error`` answer, or a
logged failure) unless it must stop the code that called them:

- an :class:`Exception` is an outcome;
- a :class:`~asyncio.CancelledError` the code raised on its own (a
  ``task.cancel(); await task`` inside it, say) is an outcome too;
- any other :class:`BaseException` (a custom subclass, ``GeneratorExit``,
  what ``pytest.fail`` raises) is an outcome, unless it is the
  ``GeneratorExit`` that closing the coroutine throws in;
- the running task's own cancellation (the queue stopping a consumer, a
  timeout around the caller), :class:`KeyboardInterrupt` and
  :class:`SystemExit` propagate.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .data import Error, ResultList
from .exceptions import EventCancelled

__all__ = ["cancelled", "propagates"]


def propagates(exc: BaseException, task: asyncio.Task[Any] | None = None) -> bool:
    """Whether ``exc``, raised by user code running in ``task`` (the current
    task when ``None``), must propagate instead of becoming an outcome."""
    if isinstance(exc, asyncio.CancelledError):
        if task is None:
            task = asyncio.current_task()
        return task is not None and task.cancelling() > 0
    if isinstance(exc, GeneratorExit):
        # Raised by the code, it is an outcome; thrown in by close() (the
        # coroutine collected after its loop ended), the coroutine must end.
        return _closing(task)
    return isinstance(exc, KeyboardInterrupt | SystemExit)


def _closing(task: asyncio.Task[Any] | None) -> bool:
    """Whether the running code is being closed rather than run by its task:
    no loop is running, or another task (or none) is the current one."""
    try:
        current = asyncio.current_task()
    except RuntimeError:
        return True
    return current is None or (task is not None and current is not task)


def cancelled(reason: str) -> ResultList:
    """The answer of an event the queue's shutdown kept from being handled:
    one ``Error(EventCancelled(reason))``."""
    return ResultList((Error(EventCancelled(reason)),))
