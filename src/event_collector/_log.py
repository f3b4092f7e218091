"""Logging through structlog, and the one place background failures go."""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

import structlog

__all__ = [
    "LOGGER_NAME",
    "GuardedLogger",
    "Logger",
    "NullLogger",
    "get_logger",
    "report_exception",
]

LOGGER_NAME = "event_collector"
"""The name every event-collector logger is created with."""


class Logger(Protocol):
    """The part of a structlog bound logger this library uses."""

    def debug(self, event: str, *args: Any, **kw: Any) -> Any: ...
    def info(self, event: str, *args: Any, **kw: Any) -> Any: ...
    def warning(self, event: str, *args: Any, **kw: Any) -> Any: ...
    def error(self, event: str, *args: Any, **kw: Any) -> Any: ...


class NullLogger:
    """A logger that writes nothing, for ``logging=False``."""

    __slots__ = ()

    def debug(self, event: str, *args: Any, **kw: Any) -> None:
        pass

    info = warning = error = debug

    def __repr__(self) -> str:
        return "<NullLogger>"


class GuardedLogger:
    """A logger whose calls never raise: what the wrapped logger raises (a
    ``BrokenPipeError`` from a closed pipe, as in ``service | head``, a
    failing processor) is dropped, since there is nowhere left to report it.
    A broken log destination never breaks the queue."""

    __slots__ = ("_logger",)

    def __init__(self, logger: Logger) -> None:
        self._logger = logger

    def debug(self, event: str, *args: Any, **kw: Any) -> None:
        with contextlib.suppress(Exception):
            self._logger.debug(event, *args, **kw)

    def info(self, event: str, *args: Any, **kw: Any) -> None:
        with contextlib.suppress(Exception):
            self._logger.info(event, *args, **kw)

    def warning(self, event: str, *args: Any, **kw: Any) -> None:
        with contextlib.suppress(Exception):
            self._logger.warning(event, *args, **kw)

    def error(self, event: str, *args: Any, **kw: Any) -> None:
        with contextlib.suppress(Exception):
            self._logger.error(event, *args, **kw)

    def __repr__(self) -> str:
        return f"<GuardedLogger {self._logger!r}>"


def get_logger(enabled: bool = True, **initial_values: Any) -> Logger:
    """Return the ``event_collector`` structlog logger, or a silent one.

    The structlog logger is created lazily, so an application that configures
    structlog after building a queue still gets its configuration. This
    module never calls :func:`structlog.configure`. The logger returned
    never raises (see :class:`GuardedLogger`).
    """
    if not enabled:
        return NullLogger()
    # get_logger(...) with the values, not .bind(): bind() would assemble the
    # logger now, with whatever configuration structlog has at this moment.
    logger: Logger = structlog.get_logger(LOGGER_NAME, **initial_values)
    return GuardedLogger(logger)


def report_exception(log: Logger, message: str, exc: BaseException, **kw: Any) -> None:
    """Log an exception raised where nobody awaits it (a background task,
    a bus handler, a teardown) so that it is never swallowed silently."""
    # A broken logger must not break the queue (a logger given by the
    # application is not necessarily guarded).
    with contextlib.suppress(Exception):
        log.error(message, exc_info=exc, **kw)
