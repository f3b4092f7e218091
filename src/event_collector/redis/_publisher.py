"""``RedisPublisher``: sending through Redis from a process that runs no
queue."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from .._log import Logger
from .._models import CollectorEvent
from .._probes import Probe, sending
from ..data import Payload
from ..exceptions import QueueClosed
from ..publisher import _with_headers
from ._common import Config
from ._sender import Sender, event_for

__all__ = ["RedisPublisher"]


class RedisPublisher:
    """Sends events through Redis from a process that runs no queue; get it
    from :meth:`RedisTransport.publisher` and use it with ``async with``.

    Sends from every task are written together, a batch per round trip;
    the answers come back on a reply stream of this publisher's own, read by
    one task. Closing it answers what is still waiting with
    ``Error(EventCancelled)``.
    """

    def __init__(self, config: Config, *, default_priority: int, log: Logger) -> None:
        self._config = config
        self._default_priority = default_priority
        self._log = log
        self._sender: Sender | None = None
        self._clock: Callable[[], float] = lambda: 0.0
        self._probes: tuple[Probe, ...] = ()  # instrumentation (see _probes)
        self._closed = False  # closed after a start (until started again)
        self._on_start: list[Callable[[], None]] = []  # called at each start

    async def __aenter__(self) -> RedisPublisher:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect and start the writer and the reply reader."""
        if self._sender is not None:
            raise RuntimeError("the RedisPublisher is started already")
        loop = asyncio.get_running_loop()
        self._clock = loop.time
        sender = Sender(self._config, log=self._log, clock=loop.time)
        await sender.start()
        self._sender = sender
        self._closed = False
        for hook in list(self._on_start):
            hook()

    async def close(self) -> None:
        """Stop sending; answer what still waits with
        ``Error(EventCancelled)``."""
        sender, self._sender = self._sender, None
        if sender is not None:
            self._closed = True
            await sender.stop()

    def _running(self) -> Sender:
        sender = self._sender
        if sender is None:
            raise QueueClosed("the RedisPublisher is not started: use async with")
        sender.check_open()
        return sender

    def _event(self, value: Any, priority: int | None) -> CollectorEvent[Any]:
        if priority is None:
            if isinstance(value, Payload) and value.priority is not None:
                priority = value.priority
            else:
                priority = self._default_priority
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError(f"priority must be an int (got priority={priority!r})")
        return event_for(value, priority, self._clock())

    async def send(
        self,
        value: Any,
        *,
        priority: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> CollectorEvent[Any]:
        """Write one event and return it once Redis has accepted it.

        :param headers: str names to str values that go with the event
            (``payload.headers``), added to a ``Payload``'s own.
        :raises TypeError, ValueError: the codec cannot encode the value,
            it is larger than ``max_payload_bytes``, or the headers are not
            str to str.
        :raises QueueClosed: the publisher is not running.
        """
        sender = self._running()
        if headers is None and not self._probes:
            event = self._event(value, priority)
            band, data = sender.entry(event)
            await sender.submit(event, band, data)
            return event
        payload = _with_headers(value, headers)
        with sending(self._probes, payload):
            event = self._event(payload, priority)
            band, data = sender.entry(event)
            await sender.submit(event, band, data)
            return event

    def send_nowait(
        self,
        value: Any,
        *,
        priority: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> CollectorEvent[Any]:
        """Queue one event for the next write and return it at once. If
        Redis then refuses it, the event is answered with the error.

        :raises QueueFull: the stream was found full (``maxsize``).
        """
        sender = self._running()
        if headers is None and not self._probes:
            event = self._event(value, priority)
            band, data = sender.entry(event)
            sender.submit_nowait(event, band, data)
            return event
        payload = _with_headers(value, headers)
        with sending(self._probes, payload):
            event = self._event(payload, priority)
            band, data = sender.entry(event)
            sender.submit_nowait(event, band, data)
            return event

    async def send_many(
        self,
        values: Iterable[Any],
        *,
        priority: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> list[CollectorEvent[Any]]:
        """Write many events in as few round trips as possible; every value
        is checked before any is sent.

        :param headers: added to every event's headers.
        :raises TypeError, ValueError: a value cannot be sent; the message
            names its index, and nothing was sent.
        """
        sender = self._running()
        probes = self._probes
        prepared = []
        with contextlib.ExitStack() as stack:
            for index, value in enumerate(values):
                try:
                    if headers is not None or probes:
                        value = _with_headers(value, headers)
                        stack.enter_context(sending(probes, value))
                    event = self._event(value, priority)
                    band, data = sender.entry(event)
                except (TypeError, ValueError) as exc:
                    raise type(exc)(f"send_many: value {index}: {exc}") from exc
                prepared.append((event, band, data))
            await sender.submit_many(prepared)
        return [event for event, _, _ in prepared]

    async def wait(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until every event sent so far is answered.

        :raises TimeoutError: ``timeout`` seconds passed first.
        """
        sender = self._sender
        if sender is not None:
            await sender.wait_idle(timeout)

    @property
    def waiting(self) -> int:
        """Events sent and not answered yet."""
        sender = self._sender
        return 0 if sender is None else len(sender.waiting)

    def __repr__(self) -> str:
        state = "running" if self._sender is not None else "closed"
        return f"<RedisPublisher {state} stream={self._config.keys.stream!r}>"
