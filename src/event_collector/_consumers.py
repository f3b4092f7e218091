"""The consumer pool: tasks that take events off the queue and route them."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import itertools
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from ._log import Logger, report_exception
from ._outcome import cancelled, propagates
from .data import Delivery, Error, Ok, Payload, ResultList
from .data import _plain_payload as plain_payload
from .router import _coerce

if TYPE_CHECKING:
    from ._eventqueue import EventQueue
    from ._gate import KeyGate
    from ._measure import Meters
    from ._models import CollectorEvent
    from .collector import Collector
    from .types import EventObserver

__all__ = ["ConsumerPool", "current_owner"]

current_owner: contextvars.ContextVar[object | None] = contextvars.ContextVar(
    "event_collector_consumer_owner", default=None
)
"""Inside a consumer (and the tasks its handlers start), the queue that owns
it; lets ``shut_down_queue`` see that it is called from a handler."""

Route = Callable[[Payload[Any]], Awaitable[ResultList]]

#: How long ``stop`` waits for cancelled consumers before it logs that a
#: handler is ignoring cancellation and cancels again (seconds).
STOP_NAG_INTERVAL = 5.0

#: The name of every consumer task.
CONSUMER_NAME = "event-collector-consumer"


class _ConsumerLocals(NamedTuple):
    """What a consumer reads into locals as it starts (see ``ConsumerPool``)."""

    queue: EventQueue
    route: Route
    clock: Callable[[], float]
    settle: Callable[[CollectorEvent[Any], object], bool]
    idle: dict[asyncio.Task[None], None]
    items: Any
    take: Callable[[], CollectorEvent[Any]]
    direct: Collector | None
    checked: bool


class ConsumerPool:
    """A set of consumer tasks sharing one event queue.

    It keeps the counts the metrics and the autoscaler need (``busy``,
    ``finished``) and the service and wait time windows, updated in O(1) per
    event. Consumers retire without sentinels: the pool cancels idle ones,
    which are waiting for a put and hold no event.

    :param direct: the router's lone plain collector, which consumers call
        themselves for a broadcast payload (see ``Router._direct``).
    :param checked: whether ``route`` is known to answer a ``ResultList`` of
        results (the ``SimpleRouter``'s own ``handle_event``); a custom
        router's answers are checked and wrapped.
    """

    def __init__(
        self,
        queue: EventQueue,
        route: Route,
        *,
        clock: Callable[[], float],
        meters: Meters,
        log: Logger,
        owner: object,
        observers: list[EventObserver],
        direct: Collector | None = None,
        checked: bool = False,
        settled: Callable[[CollectorEvent[Any]], None] | None = None,
    ) -> None:
        self._queue = queue
        self._clock = clock
        self._add_service_time = meters.service_times.add
        self._add_wait_time = meters.wait_times.add
        self._settled = settled
        self._log = log
        self._owner = owner
        self._observers = observers
        self._active: set[asyncio.Task[None]] = set()
        self._idle: dict[asyncio.Task[None], None] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._idle_waiters: list[asyncio.Future[None]] = []
        # What every consumer reads into locals as it starts, in one tuple:
        # a burst starts a thousand consumers at once (benchmark: scaleup).
        self._locals = _ConsumerLocals(
            queue=queue,
            route=route,
            clock=clock,
            settle=self.settle,
            idle=self._idle,
            items=queue.items,
            take=queue.taker(),
            direct=direct,
            checked=checked,
        )
        self._stopping = False
        self.busy = 0
        """Consumers running a handler right now."""
        self.finished = 0
        """Events answered by consumers so far."""
        self.cancelled = 0
        """Events whose handler was cancelled while it ran."""
        self.gate: KeyGate | None = None  # ordering keys (in memory only)

    def set_owner(self, owner: object) -> None:
        """What ``current_owner`` holds inside the consumers started from now
        on (the queue's life cycle, for ``shut_down_queue``)."""
        self._owner = owner

    # -- size --------------------------------------------------------------

    @property
    def size(self) -> int:
        """Consumers in the pool (retiring ones excluded)."""
        return len(self._active)

    def grow(self, count: int, *, eager: bool = True) -> None:
        """Start ``count`` more consumers.

        With ``eager`` (the monitor's growth), on Python 3.12 and later, each
        consumer takes its first step, and so its first event, right here,
        as an eager task, unless the loop has a task factory of its own: a
        burst gets its consumers without waiting for another trip through
        the loop's ready queue. The queue's first consumers are started
        without it, after whatever the starting code does next.
        """
        if self._stopping:
            return
        # Each consumer gets a context of its own (a copy is O(1)): a value a
        # handler sets in a context variable must never show in a handler
        # another consumer is running at the same time.
        base = contextvars.copy_context()
        base.run(current_owner.set, self._owner)
        copy = base.copy
        loop = asyncio.get_running_loop()
        make: Callable[..., asyncio.Task[None]]
        if loop.get_task_factory() is not None:
            make = functools.partial(loop.create_task, name=CONSUMER_NAME)
        elif eager and sys.version_info >= (3, 12):
            make = functools.partial(
                asyncio.Task, loop=loop, name=CONSUMER_NAME, eager_start=True
            )
        elif type(loop).create_task is asyncio.BaseEventLoop.create_task:
            # The Task itself: asyncio's create_task would only add a Python
            # call per consumer. A loop with a create_task of its own keeps it.
            make = functools.partial(asyncio.Task, loop=loop, name=CONSUMER_NAME)
        else:
            make = functools.partial(loop.create_task, name=CONSUMER_NAME)
        active = self._active
        done = self._consumer_done
        consume = self._consume
        for _ in range(count):
            task = make(consume(), context=copy())
            active.add(task)
            task.add_done_callback(done)

    def shrink(self, count: int) -> int:
        """Retire up to ``count`` idle consumers; return how many."""
        victims = list(itertools.islice(self._idle, count))
        for task in victims:
            del self._idle[task]
            self._active.discard(task)
            self._retiring.add(task)
            task.cancel()
        return len(victims)

    def _consumer_done(self, task: asyncio.Task[None]) -> None:
        self._active.discard(task)
        self._retiring.discard(task)
        self._idle.pop(task, None)
        if not task.cancelled() and (exc := task.exception()) is not None:
            report_exception(self._log, "consumer failed", exc, task=task.get_name())

    # -- idle ----------------------------------------------------------------

    def is_idle(self) -> bool:
        """No event queued, held back or running."""
        return self.busy == 0 and self._queue.qsize() == 0 and not self.held()

    def held(self) -> int:
        """Events flow control holds back (behind their ordering key)."""
        return 0 if self.gate is None else self.gate.held

    def cancel_held(self, reason: str) -> None:
        """Answer what flow control holds back; release nothing more."""
        if self.gate is not None:
            self.gate.cancel(reason)

    async def wait_idle(self) -> None:
        """Wait until no event is queued and no handler runs."""
        while not self.is_idle() and not self._stopping:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._idle_waiters.append(fut)
            try:
                await fut
            finally:
                if fut in self._idle_waiters:
                    self._idle_waiters.remove(fut)

    def _notify_idle(self) -> None:
        waiters, self._idle_waiters = self._idle_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    # -- the consumer ----------------------------------------------------------

    async def _consume(self) -> None:
        (
            queue,
            route,
            clock,
            settle,
            idle,
            items,
            take,
            direct,
            checked,
        ) = self._locals
        new_getter = queue.getter
        broadcast = Delivery.BROADCAST
        lone = None if direct is None else direct.key
        task = asyncio.current_task()
        assert task is not None
        while True:
            if items:
                event = take()
            else:
                if self.busy == 0 and self._idle_waiters:
                    self._notify_idle()
                idle[task] = None
                try:
                    # queue.get(), inlined: no coroutine per idle spell
                    # (benchmarks: io, scaleup).
                    while not items:
                        getter = new_getter()
                        try:
                            await getter
                        except BaseException:
                            queue.forget_getter(getter)
                            raise
                    event = take()
                finally:
                    idle.pop(task, None)
            self.busy += 1
            event.started_at = clock()
            # The event's own fields, read directly on this hot path: a
            # plain value's Payload is made here, for the handler only.
            payload = event._payload
            if payload is None:
                payload = plain_payload(event._value, event.id)
                if event.ordering_key is not None:  # not kept (benchmark: flow)
                    payload.ordering_key = event.ordering_key
            answer: object
            try:
                if direct is not None and payload.delivery is broadcast:
                    # The router's lone plain collector, called here: one
                    # coroutine less per event (see Router._direct; benchmarks:
                    # throughput, latency). What it returns is the event's
                    # answer as it is: the event makes the ResultList, naming
                    # the collector, when it is read (benchmark: io).
                    event._by = lone
                    probed = direct._probed
                    if probed is None:
                        answer = await direct.processor(payload, direct.ctx)  # type: ignore[misc]
                    else:
                        answer = await probed(payload)
                    if isinstance(answer, ResultList):
                        # A ResultList returned is one Ok value, not the
                        # event's results.
                        answer = ResultList((Ok(answer, lone),))
                else:
                    answer = await route(payload)
                    if not checked:
                        answer = _coerce(answer)
            except Exception as exc:
                # A handler's exception on the direct path; a custom router's
                # own failure otherwise (collectors' errors are results).
                answer = ResultList((Error(exc, None, getattr(event, "_by", None)),))
            except BaseException as exc:
                # The rule of _outcome: only this consumer's own cancellation,
                # KeyboardInterrupt and SystemExit end it, and even then its
                # event is answered on the way out.
                if propagates(exc, task):
                    self._answer_stopped(event, exc)
                    raise
                answer = ResultList((Error(exc, None, getattr(event, "_by", None)),))
            self.busy -= 1
            settle(event, answer)
            # An idle consumer must not keep the last event (and through it
            # the results and any exception) alive.
            del event, payload, answer
            if self._stopping:
                return

    # -- settling: every answer of an event goes through here -----------------

    def settle(
        self,
        event: CollectorEvent[Any],
        answer: object,
        ran: bool = True,
        measured: bool = True,
    ) -> bool:
        """Answer ``event``, once; return ``False`` if it was answered already.

        The one place an event is answered, whatever answers it: a
        consumer's result (``ran`` and ``measured``: the service and wait
        time windows and the departure count take it), a consumer cancelled
        inside the handler (``ran``, not ``measured``), the shutdown
        answering what was still queued (neither), a transport settling an
        event later (a dead letter). It stamps ``finished_at``, sets the
        answer (a ``ResultList``, or the value a lone collector returned),
        lets the transport settle the event (acknowledge, reply) and shows
        it to the observers, in that order.
        """
        end = self._clock()
        if not event._set_answer(answer):
            return False
        event.finished_at = end
        if ran:
            self.finished += 1
            if measured:
                started = event.started_at
                if started is not None:
                    self._add_service_time(end - started)
                self._add_wait_time(end - event.sent_at)
        settled = self._settled
        if settled is not None:
            try:
                settled(event)
            except BaseException as exc:
                if propagates(exc):
                    raise
                report_exception(self._log, "transport settle failed", exc)
        if self._observers:
            self._observe(event)
        return True

    def _answer_stopped(self, event: CollectorEvent[Any], exc: BaseException) -> None:
        """Answer the event of a consumer stopped inside its handler: by its
        cancellation (the queue shutting down, or the loop ending), or by a
        ``KeyboardInterrupt`` / ``SystemExit`` raised in the handler."""
        self.busy -= 1
        if isinstance(exc, asyncio.CancelledError):
            self.cancelled += 1
            reason = (
                "the queue shut down while the event's handler was running"
                if self._stopping
                else "the consumer was cancelled while the event's handler was "
                "running (its event loop is ending?)"
            )
            self.settle(event, cancelled(reason), measured=False)
        else:
            self.settle(event, ResultList((Error(exc),)), measured=False)

    def answer_unhandled(self, events: list[CollectorEvent[Any]], reason: str) -> None:
        """Answer events no consumer took (left queued at shutdown) with
        ``Error(EventCancelled(reason))``."""
        answer = cancelled(reason)
        stop: BaseException | None = None
        for event in events:
            try:
                self.settle(event, answer, ran=False, measured=False)
            except BaseException as exc:  # an observer's SystemExit, say
                stop = stop or exc
        if stop is not None:
            raise stop

    def _observe(self, event: CollectorEvent[Any]) -> None:
        # A snapshot: an observer that removes itself (or another) while it
        # is called must not make the next one miss this event.
        for observer in tuple(self._observers):
            try:
                observer(event)
            except BaseException as exc:
                if propagates(exc):
                    raise
                report_exception(self._log, "event observer failed", exc)

    # -- stop --------------------------------------------------------------

    async def stop(self) -> None:
        """Cancel every consumer and wait until all have ended; one cancelled
        inside a handler answers its event with ``Error(EventCancelled)``."""
        self._stopping = True
        while True:
            tasks = self._active | self._retiring
            if not tasks:
                break
            for task in tasks:
                task.cancel()
            _, pending = await asyncio.wait(tasks, timeout=STOP_NAG_INTERVAL)
            if pending:
                self._log.warning(
                    "consumers ignore cancellation; cancelling again",
                    pending=len(pending),
                )
        self._notify_idle()

    def __repr__(self) -> str:
        return f"<ConsumerPool consumers={self.size} busy={self.busy}>"
