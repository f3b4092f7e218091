"""Exceptions raised by event-collector."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "EventCancelled",
    "EventCollectorException",
    "QueueClosed",
    "QueueFull",
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
