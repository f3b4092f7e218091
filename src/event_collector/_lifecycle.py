"""The collector queue's life cycle: start, shutdown, and a loop that ends
without one.

:class:`Lifecycle` holds the queue's state (a
:class:`~event_collector.queue.QueueState`) and runs its steps; the queue's
public methods (``init_queue``, ``shut_down_queue``, ``request_shutdown``)
call it. It announces what happens through the two callbacks it is given,
so that it knows nothing of the bus messages.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from ._consumers import current_owner
from ._log import Logger, report_exception
from ._models import QueueState
from ._outcome import propagates

if TYPE_CHECKING:
    from ._consumers import ConsumerPool
    from .collector import Collector
    from .transport import Transport

__all__ = ["Lifecycle"]


class _Scope:
    """A start or a shutdown while it runs; ``active`` is cleared when it
    ends, so that a task it started does not count as part of it later."""

    __slots__ = ("active", "life")

    def __init__(self, life: Lifecycle) -> None:
        self.life = life
        self.active = True


_inside: contextvars.ContextVar[tuple[_Scope, ...]] = contextvars.ContextVar(
    "event_collector_inside", default=()
)
"""The starts and shutdowns the running code is part of."""


def _within(life: Lifecycle) -> bool:
    return any(scope.active and scope.life is life for scope in _inside.get())


CREATED, STARTING, RUNNING, CLOSING, CLOSED = QueueState


class Lifecycle:
    """Starts and stops one queue.

    :param collectors: set up in order at the start, torn down in reverse.
    :param transport: opened at the start, closed at the shutdown.
    :param pool: the consumers, started and stopped here.
    :param initial_consumers: how many consumers to start.
    :param background: factories of the background tasks' coroutines (the
        monitor, the reporter), each started with the name it is given.
    :param started: awaited once the queue runs (dispatches
        ``InitializedQueue``).
    :param shut_down: awaited once the queue is closed (dispatches
        ``ShutDownQueue``).
    :param on_start: called as the queue starts, before the first consumer
        (the measurement's clock starts).
    :param drain_timeout: seconds the shutdown lets the consumers drain; 0 or
        less waits as long as it takes.
    :param log: where the steps are logged.
    """

    def __init__(
        self,
        *,
        collectors: Sequence[Collector],
        transport: Transport,
        pool: ConsumerPool,
        initial_consumers: int,
        background: Sequence[tuple[str, Callable[[], Coroutine[Any, Any, None]]]],
        started: Callable[[], Awaitable[None]],
        shut_down: Callable[[], Awaitable[None]],
        on_start: Callable[[], None],
        drain_timeout: float,
        log: Logger,
    ) -> None:
        self._collectors = collectors
        self._transport = transport
        self._pool = pool
        self._initial = initial_consumers
        self._background_factories = background
        self._started = started
        self._announce_shut_down = shut_down
        self._on_start = on_start
        self._drain_timeout = drain_timeout
        self._log = log
        self.state: QueueState = CREATED
        """Where the queue is in its life."""
        self.loop: asyncio.AbstractEventLoop | None = None
        """The loop the queue was started on."""
        self._background: list[asyncio.Task[None]] = []
        self._shutdown_task: asyncio.Task[None] | None = None
        self._hurry: asyncio.Event | None = None
        self._init_done = asyncio.Event()

    # -- start -------------------------------------------------------------

    async def start(self) -> None:
        """Set up, start the transport, the consumers and the background
        tasks, then announce. See ``CollectorQueue.init_queue``."""
        if self.state != CREATED:
            raise RuntimeError(
                f"init_queue() needs a new CollectorQueue; this one is {self.state}"
            )
        self.state = STARTING
        # The start's own code (setups, InitializedQueue handlers) and the
        # tasks it starts must not wait on a shutdown it would hold up.
        scope = _Scope(self)
        token = _inside.set((*_inside.get(), scope))
        try:
            await self._start()
        finally:
            scope.active = False
            _inside.reset(token)

    async def _start(self) -> None:
        ready: list[Collector] = []
        try:
            for collector in self._collectors:
                await collector.setup()
                ready.append(collector)
            await self._transport.start()
        except BaseException:
            try:
                await self._teardown(ready)
            finally:
                self._close_unstarted("the collector queue failed to start")
            raise
        loop = self.loop = asyncio.get_running_loop()
        self._on_start()
        self._hurry = asyncio.Event()
        self._pool.grow(self._initial, eager=False)
        for name, factory in self._background_factories:
            task = loop.create_task(factory(), name=name)
            task.add_done_callback(self._background_done)
            self._background.append(task)
        self.state = RUNNING
        self._init_done.set()
        try:
            await self._started()
        except BaseException:
            # Only a cancellation (or KeyboardInterrupt, SystemExit) gets out
            # of a dispatch: shut down at once rather than leave the queue
            # running for a caller that never got it.
            self._hurry.set()
            await self._await(self.request())
            raise

    def _close_unstarted(
        self, reason: str = "the collector queue was shut down before it started"
    ) -> None:
        self.state = CLOSED
        self._transport.close(reason)
        self._init_done.set()

    # -- shutdown ------------------------------------------------------------

    def request(self) -> asyncio.Task[None]:
        """Start the shutdown without waiting; return its task (the same one
        on every call)."""
        if self.state == CREATED:
            self._close_unstarted()
        task = self._shutdown_task
        if task is None or (task.cancelled() and self.state in (STARTING, RUNNING)):
            # None yet, or one cancelled (by whoever held the task) before it
            # began: start it again.
            loop = self.loop or asyncio.get_running_loop()
            task = self._shutdown_task = loop.create_task(
                self._shut_down(), name="event-collector-shutdown"
            )
            task.add_done_callback(self._background_done)
        return task

    async def shut_down(self) -> None:
        """Shut down and wait; see ``CollectorQueue.shut_down_queue``."""
        if self.state == CREATED:
            self._close_unstarted()
            return
        if self.state == CLOSED and self._shutdown_task is None:
            return
        if current_owner.get() is self or _within(self):
            self.request()
            return
        while True:
            task = self.request()
            await self._await(task)
            # A shutdown task cancelled before it began leaves the queue as
            # it was: start another.
            if not task.cancelled() or self.state not in (STARTING, RUNNING):
                return

    def hurry(self) -> None:
        """Make the shutdown an immediate one: no drain (or no more of it)."""
        if self._hurry is not None:
            self._hurry.set()

    async def _await(self, task: asyncio.Task[None]) -> None:
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                self.hurry()
            me = asyncio.current_task()
            if task.cancelled() and (me is None or not me.cancelling()):
                # The shutdown task was cancelled, not this caller; its
                # finally clauses closed the queue all the same.
                return
            raise

    async def _shut_down(self) -> None:
        # This task's own context: what it runs (teardowns, ShutDownQueue
        # handlers, and the shutdowns of other queues they ask for) must not
        # wait on it.
        _inside.set((*_inside.get(), _Scope(self)))
        if self.state == STARTING:  # init_queue is still setting up
            await self._init_done.wait()
        if self.state != RUNNING:
            return
        self.state = CLOSING
        transport, pool = self._transport, self._pool
        transport.close("the collector queue is shut down")
        self._log.info(
            "collector queue shutting down", qsize=transport.backlog(), busy=pool.busy
        )
        leftovers: list[Any] = []
        try:
            try:
                await self._drain()
            finally:
                for task in self._background:
                    task.cancel()
                await asyncio.gather(*self._background, return_exceptions=True)
                await pool.stop()
        finally:
            # Whatever happened above, every event is answered, the
            # collectors are torn down and the transport released.
            reason = "the queue shut down before the event was handled"
            try:
                # First what flow control holds back: it releases nothing
                # into the queue from then on.
                pool.cancel_held(reason)
            finally:
                leftovers = transport.hand_back()
                pool.answer_unhandled(leftovers, reason)
            try:
                await self._teardown(self._collectors)
            finally:
                try:
                    await transport.stop()
                finally:
                    self.state = CLOSED
        self._log.info(
            "collector queue shut down",
            events=pool.finished,
            cancelled=pool.cancelled + len(leftovers),
        )
        await self._announce_shut_down()

    async def _drain(self) -> None:
        hurry, pool = self._hurry, self._pool
        assert hurry is not None
        if pool.is_idle() or hurry.is_set():
            return
        timeout = self._drain_timeout
        idle = asyncio.ensure_future(pool.wait_idle())
        hurried = asyncio.ensure_future(hurry.wait())
        try:
            await asyncio.wait(
                (idle, hurried),
                timeout=timeout if timeout > 0 else None,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            idle.cancel()
            hurried.cancel()
            await asyncio.gather(idle, hurried, return_exceptions=True)
        if not pool.is_idle():
            self._log.warning(
                "shutdown cancels unfinished events",
                qsize=self._transport.backlog(),
                busy=pool.busy,
                timeout=timeout,
            )

    async def _teardown(self, collectors: Sequence[Collector]) -> None:
        """Tear ``collectors`` down in reverse order; a teardown's failure,
        whatever it raises, is logged and the next one still runs (only
        KeyboardInterrupt, SystemExit and this task's own cancellation
        propagate, after the rest are torn down)."""
        stop: BaseException | None = None
        for collector in reversed(collectors):
            try:
                await collector.teardown()
            except BaseException as exc:
                if propagates(exc):
                    stop = stop or exc
                    continue
                report_exception(
                    self._log, "collector teardown failed", exc, collector=collector.key
                )
        if stop is not None:
            raise stop

    # -- a loop that ends without a shutdown -------------------------------

    def check_loop(self) -> None:
        """Close the queue if its loop was closed while it ran."""
        loop = self.loop
        if self.state == RUNNING and loop is not None and loop.is_closed():
            self._orphan()

    def _background_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            if self.state == RUNNING and task is not self._shutdown_task:
                # Cancelled by someone else than the shutdown: the loop is
                # ending (asyncio.run cancels every task left).
                self._orphan()
            return
        if (exc := task.exception()) is not None:
            report_exception(
                self._log, "background task failed", exc, task=task.get_name()
            )

    def _orphan(self) -> None:
        """Close a queue whose event loop ended (or is ending) without a
        shutdown: refuse every send, answer what is queued."""
        reason = "the collector queue's event loop ended before it was shut down"
        self.state = CLOSED
        self._transport.close(reason)
        try:
            self._pool.cancel_held(reason)
        finally:
            leftovers = self._transport.hand_back()
            self._pool.answer_unhandled(leftovers, reason)
        self._log.warning(
            "collector queue abandoned without a shutdown; its collectors are "
            "not torn down",
            cancelled=len(leftovers),
        )
