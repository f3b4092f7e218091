"""The one rule for what an exception raised by user code becomes.

A handler, a bus handler, an observer or a teardown may raise anything. The
queue turns what they raise into an outcome (an ``Error`` answer, or a
logged failure) unless it must stop the code that called them:

- an :class:`Exception` is an outcome;
- a :class:`~asyncio.CancelledError` the code raised on its own (a
  ``task.cancel(); await task`` inside it, say) is an outcome too;
- any other :class:`BaseException` (a custom subclass, ``GeneratorExit``,
  what ``pytest.fail`` raises) is an outcome;
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
    return isinstance(exc, KeyboardInterrupt | SystemExit)


def cancelled(reason: str) -> ResultList:
    """The answer of an event the queue's shutdown kept from being handled:
    one ``Error(EventCancelled(reason))``."""
    return ResultList((Error(EventCancelled(reason)),))
