"""Exceptions raised by event-collector."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DeliveryExhausted",
    "EventCancelled",
    "EventCollectorException",
    "EventLost",
    "QueueClosed",
    "QueueFull",
    "RemoteError",
    "RetryAfter",
    "Superseded",
]


class EventCollectorException(Exception):
    """Base class of every exception this library raises on its own."""


class ConfigError(EventCollectorException, ValueError):
    """A constructor argument is of the wrong type or out of range.

    The message names the parameter, the value given and what is allowed.
    """


class QueueClosed(EventCollectorException):
    """The collector queue does not accept events: not started, or shut down."""


class QueueFull(EventCollectorException):
    """``send_nowait`` found a bounded queue (``maxsize``) full."""


class EventCancelled(EventCollectorException):
    """An event was answered without a result from its collectors.

    The queue shut down before the event was handled, or while its handler
    was still running; the message says which.
    """


class Superseded(EventCancelled):
    """An event was answered without being handled because a newer event
    of the same ordering key was sent with ``supersede=True``."""


class RetryAfter(EventCollectorException):
    """Raised by a handler to ask for another attempt after ``seconds``.

    It counts as an attempt of the collector's ``retry``; a collector
    without ``retry=`` answers the event with it like any other error.
    """

    def __init__(self, seconds: float, message: str | None = None) -> None:
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not seconds >= 0
            or seconds == float("inf")
        ):
            raise ValueError(
                f"RetryAfter: seconds must be a finite number >= 0 (got {seconds!r})"
            )
        self.seconds: float = float(seconds)
        """How long to wait before the next attempt."""
        super().__init__(message or f"retry after {self.seconds:g} s")

    def __reduce__(self) -> tuple[type[RetryAfter], tuple[float, str]]:
        return type(self), (self.seconds, str(self))


class DeliveryExhausted(EventCollectorException):
    """A broker's transport gave up on an event: it was delivered
    ``attempts`` times (``max_deliveries``) and never answered, because
    the workers handling it died or lost their lease each time. The event
    was moved to the dead-letter stream."""

    def __init__(self, attempts: int, message: str | None = None) -> None:
        self.attempts: int = attempts
        """How many times the event was delivered."""
        super().__init__(
            message
            or f"the event was delivered {attempts} times without an answer; "
            "it was moved to the dead-letter stream"
        )

    def __reduce__(self) -> tuple[type[DeliveryExhausted], tuple[int, str]]:
        return type(self), (self.attempts, str(self))


class RemoteError(EventCollectorException):
    """An exception raised by a handler in another process, as its
    publisher sees it: :attr:`type` names the exception's class,
    ``str()`` is its message."""

    def __init__(self, type: str, message: str) -> None:
        self.type: str = type
        """The class of the original exception: its qualified name,
        prefixed by its module unless it is a builtin (``"ValueError"``,
        ``"myapp.errors.Declined"``)."""
        self.message: str = message
        """The original exception's message."""
        super().__init__(message)

    def __reduce__(self) -> tuple[type[RemoteError], tuple[str, str]]:
        return type(self), (self.type, self.message)

    def __repr__(self) -> str:
        return f"RemoteError({self.type!r}, {self.message!r})"


class EventLost(EventCollectorException):
    """A broker lost an event it had accepted: it restarted without the
    data (no persistence, or a failover to an empty replica). The event
    may or may not have been handled; send it again if it must be."""
