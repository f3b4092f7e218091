"""The consumer pool of a queue with flow-controlled collectors.

Its consumers take two kinds of work from the event queue: events, which
they route (running plain collectors' calls at once and handing the calls
of flow-controlled ones to their lanes), and :class:`~._lanes.Call`\\ s the
lanes released, which they run. A queue without flow-controlled collectors
keeps the plain pool and its shorter loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._consumers import ConsumerPool
from ._gate import KeyGate
from ._lanes import Call, Join, Lane, Part
from ._outcome import cancelled, propagates
from .collector import Collector, _flow_controlled
from .data import Error, Ok, Payload, ResultList
from .exceptions import ConfigError
from .flow import DeadLettered
from .router import Router, SimpleRouter
from .transport import MemoryTransport, Transport

if TYPE_CHECKING:
    from ._eventqueue import EventQueue
    from ._models import CollectorEvent

__all__ = ["FlowPool", "make_pool"]

Result = Ok[Any] | Error
Runner = Callable[[Payload[Any]], Any]

_STOPPED = "the queue shut down while the event's handler was running"


class FlowPool(ConsumerPool):
    """A :class:`ConsumerPool` whose consumers also run lanes' calls.

    :param select: the router's choice of runners for a payload, in the
        order of its results.
    :param lanes: the lanes, by the runner each one stands for.
    """

    def __init__(
        self,
        *args: Any,
        select: Callable[[Payload[Any]], Sequence[Runner]],
        lanes: Mapping[Runner, Lane],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._select = select
        self.lanes: dict[Runner, Lane] = dict(lanes)
        """The flow-controlled collectors' lanes, by runner."""

    def held(self) -> int:
        return super().held() + sum(lane.held for lane in self.lanes.values())

    def cancel_held(self, reason: str) -> None:
        # The gate first: answering a lane's keyed part must not release the
        # next event of its key into a queue nobody takes from any more.
        stop: BaseException | None = None
        try:
            super().cancel_held(reason)
        except BaseException as exc:
            stop = exc
        for lane in self.lanes.values():
            try:
                lane.cancel(reason)
            except BaseException as exc:
                stop = stop or exc
        if stop is not None:
            raise stop

    def answer_unhandled(self, events: list[Any], reason: str) -> None:
        plain: list[CollectorEvent[Any]] = []
        for item in events:
            if type(item) is Call:
                item.lane.dropped(item)
                plain.extend(part.join.event for part in item.parts)
            else:
                plain.append(item)
        super().answer_unhandled(plain, reason)

    async def _consume(self) -> None:
        queue, clock, settle, idle, items = (
            self._queue,
            self._clock,
            self.settle,
            self._idle,
            self._queue.items,
        )
        take = self._locals.take
        task = asyncio.current_task()
        assert task is not None
        while True:
            if not items:
                if self.busy == 0 and self._idle_waiters:
                    self._notify_idle()
                idle[task] = None
                try:
                    while not items:
                        getter = queue.getter()
                        try:
                            await getter
                        except BaseException:
                            queue.forget_getter(getter)
                            raise
                finally:
                    idle.pop(task, None)
            item: Any = take()
            self.busy += 1
            if type(item) is Call:
                await self._run_call(item, task)
            else:
                item.started_at = clock()
                await self._route(item, task, settle)
            self.busy -= 1
            del item
            if self._stopping:
                return

    async def _run_call(self, call: Call, task: asyncio.Task[None]) -> None:
        lane = call.lane
        try:
            results = await lane.run(call)
        except BaseException as exc:
            if propagates(exc, task):
                self.busy -= 1
                lane.abandon(call, _STOPPED)
                raise
            results = [Error(exc, None, lane.key)] * len(call.parts)
        try:
            await lane.finish(call, results)
        except BaseException:
            # Stopped on the way (a cancelled dead-letter dispatch, an
            # observer's SystemExit): whatever of the call is still
            # unanswered is answered now.
            self.busy -= 1
            for part in call.parts:
                if not part.answered:
                    part.join.settle(
                        part.join.event, cancelled(_STOPPED), measured=False
                    )
            raise

    async def _route(
        self,
        event: CollectorEvent[Any],
        task: asyncio.Task[None],
        settle: Callable[..., bool],
    ) -> None:
        payload = event.payload
        lanes = self.lanes
        try:
            runners = self._select(payload)
        except Exception as exc:
            settle(event, ResultList((Error(exc),)))
            return
        join = Join(event, len(runners), settle)
        inline: list[tuple[int, Runner]] = []
        for index, runner in enumerate(runners):
            lane = lanes.get(runner)
            if lane is None:
                inline.append((index, runner))
            else:
                lane.submit(Part(join, index, payload))
        if not runners:
            settle(event, ResultList())
            return
        if not inline:
            return
        try:
            if len(inline) == 1:
                results: Sequence[Result] = (await inline[0][1](payload),)
            else:
                results = await asyncio.gather(*(r(payload) for _, r in inline))
        except BaseException as exc:
            if propagates(exc, task):
                self._answer_stopped(event, exc)
                raise
            results = [Error(exc)] * len(inline)
        for (index, _), result in zip(inline, results, strict=True):
            join.set(index, result)


def make_pool(
    route: Router,
    collectors: Sequence[Collector],
    *,
    transport: Transport,
    inbox: EventQueue,
    dead_lettered: Callable[[DeadLettered], Awaitable[None]] | None,
    **kwargs: Any,
) -> ConsumerPool:
    """The queue's consumer pool: a :class:`FlowPool` when a collector is
    flow-controlled, else the plain one; with the ordering-key gate when
    the events stay in this process.

    :raises ConfigError: flow control where it cannot hold: a custom
        router's ``handle_event`` (which calls collectors itself), or a
        transport that carries events to other processes.
    """
    limited = [c for c in collectors if _flow_controlled(c)]
    memory = isinstance(transport, MemoryTransport)
    pool: ConsumerPool
    if not limited:
        pool = ConsumerPool(inbox, route.handle_event, **kwargs)
    else:
        names = ", ".join(repr(c.key) for c in limited)
        if not isinstance(route, SimpleRouter) or (
            type(route).handle_event is not SimpleRouter.handle_event
        ):
            raise ConfigError(
                f"collectors: flow control (concurrency, rate_limit, retry, "
                f"BatchCollector) on {names} needs the SimpleRouter's routing; "
                f"router={type(route).__qualname__} handles events itself"
            )
        if not memory:
            raise ConfigError(
                f"collectors: flow control (concurrency, rate_limit, retry, "
                f"BatchCollector) on {names} works with the in-memory transport "
                f"only; transport={type(transport).__name__} does not support it yet"
            )

        async def no_bus(message: DeadLettered) -> None:
            return None

        dispatch = dead_lettered or no_bus
        by_key = route._by_key
        lanes = {
            by_key[c.key]: Lane(c, by_key[c.key], inbox, dispatch) for c in limited
        }
        kwargs["direct"] = None
        pool = FlowPool(
            inbox, route.handle_event, select=route._select, lanes=lanes, **kwargs
        )
    if memory:
        pool.gate = KeyGate(inbox, pool.settle)
    return pool


#: The reasons work is held back, as the Prometheus module labels them.
HELD_REASONS = ("ordering_key", "concurrency", "rate_limit", "retry", "batch")


def held_by_reason(pool: ConsumerPool) -> dict[str, int]:
    """What flow control holds back now, by reason: events behind an
    earlier one of their key, and calls of limited collectors waiting for a
    slot, a token, a retry or their batch."""
    held = dict.fromkeys(HELD_REASONS, 0)
    if pool.gate is not None:
        held["ordering_key"] = pool.gate.held
    if isinstance(pool, FlowPool):
        for lane in pool.lanes.values():
            for reason, count in lane.holding().items():
                held[reason] += count
    return held
