"""A small in-process message bus for life-cycle announcements.

Handlers are coroutines ``handler(message, queue)``; ``queue`` is the
dispatch's :data:`BusEventQueue`, to which a handler may append further
messages or commands for the same dispatch to deliver. A handler that raises
is logged and the dispatch goes on: a broken handler never breaks the
collector queue that announces through the bus.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from ._compat import TypeAliasType
from ._log import Logger, get_logger, report_exception
from ._outcome import propagates

__all__ = [
    "BusEvent",
    "BusEventQueue",
    "BusHandler",
    "Command",
    "Message",
    "MessageBus",
]


class Message:
    """An announcement: every handler registered for its type receives it."""

    __slots__ = ()


class Command:
    """A request: the one handler registered for its type receives it."""

    __slots__ = ()


BusEvent = TypeAliasType("BusEvent", Message | Command)
"""Anything the bus carries."""

BusEventQueue = TypeAliasType("BusEventQueue", deque[Message | Command])
"""The pending messages of one dispatch; handlers may append to it."""

BusHandler = TypeAliasType(
    "BusHandler", Callable[[Any, deque[Message | Command]], Awaitable[None]]
)
"""``async def handler(message, queue) -> None``."""


class MessageBus:
    """Routes messages to their handlers by the message's type.

    :param msg_handlers: initial message handlers, by message type.
    :param cmd_handlers: initial command handlers, by command type.
    :param logging: ``False`` to log nothing about failing handlers.
    """

    __slots__ = ("_cmd_handlers", "_log", "_msg_handlers")

    def __init__(
        self,
        msg_handlers: Mapping[type[Message], Sequence[BusHandler]] | None = None,
        cmd_handlers: Mapping[type[Command], BusHandler] | None = None,
        *,
        logging: bool = True,
        log: Logger | None = None,
    ) -> None:
        self._msg_handlers: dict[type[Message], list[BusHandler]] = {}
        self._cmd_handlers: dict[type[Command], BusHandler] = {}
        self._log: Logger = log if log is not None else get_logger(logging)
        for msg_type, handlers in (msg_handlers or {}).items():
            for handler in handlers:
                self.add_msg_handler(msg_type, handler)
        for cmd_type, handler in (cmd_handlers or {}).items():
            self.add_cmd_handler(cmd_type, handler)

    def add_msg_handler(self, msg: type[Message], handler: BusHandler) -> None:
        """Call ``handler`` for every message of type ``msg``."""
        if not (isinstance(msg, type) and issubclass(msg, Message)):
            raise TypeError(f"msg must be a Message subclass, got {msg!r}")
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {handler!r}")
        self._msg_handlers.setdefault(msg, []).append(handler)

    def del_msg_handler(
        self, msg: type[Message], handler: BusHandler | None = None
    ) -> None:
        """Remove ``handler`` for ``msg``, or all of its handlers when
        ``handler`` is ``None``. Removing what is not there does nothing."""
        if handler is None:
            self._msg_handlers.pop(msg, None)
            return
        handlers = self._msg_handlers.get(msg, [])
        if handler in handlers:
            handlers.remove(handler)
        if not handlers:
            self._msg_handlers.pop(msg, None)

    def add_cmd_handler(self, cmd: type[Command], handler: BusHandler) -> None:
        """Make ``handler`` the handler of commands of type ``cmd``."""
        if not (isinstance(cmd, type) and issubclass(cmd, Command)):
            raise TypeError(f"cmd must be a Command subclass, got {cmd!r}")
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {handler!r}")
        self._cmd_handlers[cmd] = handler

    def del_cmd_handler(self, cmd: type[Command]) -> None:
        """Remove the handler of ``cmd``, if any."""
        self._cmd_handlers.pop(cmd, None)

    def has_handlers(self, event_type: type[Message] | type[Command]) -> bool:
        """Whether a dispatch of ``event_type`` would reach any handler."""
        if issubclass(event_type, Message):
            return bool(self._msg_handlers.get(event_type))
        return event_type in self._cmd_handlers

    async def dispatch(self, event: Message | Command) -> None:
        """Deliver ``event``, then whatever its handlers queue, in order.

        What a handler raises is logged, not raised, whatever it is: a
        ``CancelledError`` the handler raised on its own, or any other
        ``BaseException``, included. Only the dispatching task's own
        cancellation, ``KeyboardInterrupt`` and ``SystemExit`` propagate.
        """
        pending: deque[Message | Command] = deque((event,))
        while pending:
            item = pending.popleft()
            if isinstance(item, Message):
                handlers: Sequence[BusHandler] = tuple(
                    self._msg_handlers.get(type(item), ())
                )
            elif isinstance(item, Command):
                cmd_handler = self._cmd_handlers.get(type(item))
                handlers = () if cmd_handler is None else (cmd_handler,)
            else:
                report_exception(
                    self._log,
                    "message bus dropped an object that is not a Message or Command",
                    TypeError(repr(item)),
                )
                continue
            for handler in handlers:
                try:
                    await handler(item, pending)
                except BaseException as exc:
                    if propagates(exc):
                        raise
                    report_exception(
                        self._log,
                        "message bus handler failed",
                        exc,
                        bus_message=type(item).__name__,
                        handler=getattr(handler, "__qualname__", repr(handler)),
                    )

    def __repr__(self) -> str:
        return (
            f"<MessageBus messages={len(self._msg_handlers)} "
            f"commands={len(self._cmd_handlers)}>"
        )
