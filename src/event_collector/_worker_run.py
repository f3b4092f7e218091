"""The run of ``event-collector worker``: a collector queue on a Redis
transport, from the first signal to a graceful shutdown, from the second to
an immediate one."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from ._cli_common import CannotRun, Refused
from ._log import Logger, get_logger
from ._models import QueueType
from .collector import Collector
from .exceptions import ConfigError
from .queue import CollectorQueue, ShutDownQueue

if TYPE_CHECKING:
    from .redis import RedisTransport

__all__ = ["PoolOptions", "serve"]


@dataclasses.dataclass(frozen=True, slots=True)
class PoolOptions:
    """The worker's queue settings, from the command line."""

    min_consumers: int
    max_consumers: int
    consumer_shutdown_timeout: float
    queue_type: QueueType
    prometheus_port: int | None


class _Signals:
    """SIGTERM and SIGINT, counted: the first asks for a graceful shutdown,
    the second hurries it."""

    def __init__(self, log: Logger) -> None:
        self.stop = asyncio.Event()
        self.hurry = asyncio.Event()
        self._log = log
        self._count = 0

    def __enter__(self) -> _Signals:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._received, signum)
        return self

    def __exit__(self, *exc_info: object) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)

    def _received(self, signum: int) -> None:
        self._count += 1
        name = signal.Signals(signum).name
        if self._count == 1:
            self._log.info("worker shutting down", signal=name)
            self.stop.set()
        elif self._count == 2:
            self._log.warning(
                "worker shutting down now: running handlers are cancelled and "
                "their events left for another worker",
                signal=name,
            )
            self.hurry.set()


async def _first(*aws: asyncio.Future[Any]) -> None:
    await asyncio.wait(aws, return_when=asyncio.FIRST_COMPLETED)


async def serve(
    collectors: Callable[[], Awaitable[list[Collector]]],
    transport: RedisTransport,
    options: PoolOptions,
) -> int:
    """Run a worker until a signal stops it; return the exit status (0).

    :param collectors: makes the collectors; awaited once the loop runs, so
        that an application's factory may make what needs it (a client, a
        lock).
    :raises Refused: the collectors or the options are refused.
    """
    log = get_logger()
    with _Signals(log) as signals:
        made = await collectors()
        try:
            queue = CollectorQueue(
                made,
                min_consumers=options.min_consumers,
                max_consumers=options.max_consumers,
                consumer_shutdown_timeout=options.consumer_shutdown_timeout,
                queue_type=options.queue_type,
                transport=transport,
            )
        except ConfigError as exc:
            raise Refused(str(exc)) from None
        ended = asyncio.Event()

        async def on_shut_down(message: Any, pending: Any) -> None:
            ended.set()

        queue.get_message_bus().add_msg_handler(ShutDownQueue, on_shut_down)
        with _metrics_server(queue, transport.stream, options.prometheus_port) as port:
            stop = asyncio.ensure_future(signals.stop.wait())
            gone = asyncio.ensure_future(ended.wait())
            hurry = asyncio.ensure_future(signals.hurry.wait())
            start = asyncio.ensure_future(queue.init_queue())
            try:
                await _first(start, stop)
                if not start.done():
                    # A signal before the worker was ready (Redis away, say):
                    # a cancelled start shuts the queue down at once.
                    start.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await start
                    log.info("worker stopped before it was ready")
                    return 0
                start.result()
                served = {} if port is None else {"metrics_port": port}
                log.info(
                    "worker ready",
                    stream=transport.stream,
                    group=transport.group,
                    consumer=transport.consumer,
                    queue_type=options.queue_type.name.lower(),
                    min_consumers=options.min_consumers,
                    max_consumers=options.max_consumers,
                    **served,
                )
                await _first(stop, gone)
                if not stop.done():
                    # The application shut the queue down (a handler called
                    # shut_down_queue()): nothing is left to run.
                    log.info(
                        "worker stopped: its queue shut down",
                        consumer=transport.consumer,
                    )
                    return 0
                shutdown = asyncio.ensure_future(queue.shut_down_queue())
                await _first(shutdown, hurry)
                if not shutdown.done():
                    # Cancelling a caller of shut_down_queue() turns the rest
                    # of the shutdown into an immediate one; calling it again
                    # waits for that same shutdown to end.
                    shutdown.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await shutdown
                    await queue.shut_down_queue()
                else:
                    shutdown.result()
            finally:
                for task in (stop, gone, hurry, start):
                    task.cancel()
    log.info("worker stopped", consumer=transport.consumer)
    return 0


@contextlib.contextmanager
def _metrics_server(
    queue: CollectorQueue, name: str, port: int | None
) -> Iterator[int | None]:
    """Serve ``queue``'s metrics on ``port`` while the block runs; yield the
    port served (the one picked, for 0), or ``None`` for no ``port``."""
    if port is None:
        yield None
        return
    from prometheus_client import start_http_server

    from .prometheus import instrument

    exporter = instrument(queue, name=name)
    try:
        try:
            server, thread = start_http_server(port)
        except OSError as exc:
            raise CannotRun(
                f"event-collector worker: cannot serve metrics on port {port}: "
                f"{exc.strerror or exc}"
            ) from None
        try:
            yield server.server_address[1]
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
    finally:
        exporter.unregister()
