"""Lanes: the calls of one flow-controlled collector, held back until its
concurrency limit, its rate limit, its retry timer or its batch lets them go.

A consumer that takes an event routes it: calls of plain collectors run
at once, in that consumer; a call of a flow-controlled collector becomes a
:class:`Part` handed to the collector's :class:`Lane`, and the consumer
moves on. When the lane lets a part go, it puts a :class:`Call` into the
event queue, and a consumer runs it like an event. Held-back parts are in
no queue the autoscaler reads: they make the pool grow by nothing and hold
no consumer. The event is answered when its last part has its result.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from ._outcome import cancelled, propagates
from .collector import BatchCollector, Collector
from .data import Error, Ok, Payload, ResultList, as_result
from .exceptions import RetryAfter
from .flow import _NOISE, DeadLettered, TokenBucket

if TYPE_CHECKING:
    from ._eventqueue import EventQueue
    from ._models import CollectorEvent

__all__ = ["Call", "Join", "Lane", "Part"]

Result = Ok[Any] | Error
Runner = Callable[[Payload[Any]], Any]


class Join:
    """The results of one event's calls, answered when the last is in."""

    __slots__ = ("event", "left", "results", "settle")

    def __init__(
        self,
        event: CollectorEvent[Any],
        size: int,
        settle: Callable[..., bool],
    ) -> None:
        self.event = event
        self.results: list[Result | None] = [None] * size
        self.left = size
        self.settle = settle

    def set(self, index: int, result: Result) -> None:
        """Record the result of call ``index``; answer the event with all
        of them when it was the last."""
        self.results[index] = result
        self.left -= 1
        if self.left == 0:
            self.settle(self.event, ResultList(self.results))  # type: ignore[arg-type]


class Part:
    """One event's call of one flow-controlled collector."""

    __slots__ = ("attempt", "index", "join", "payload")

    def __init__(self, join: Join, index: int, payload: Payload[Any]) -> None:
        self.join = join
        self.index = index
        self.payload = payload
        self.attempt = 1

    @property
    def answered(self) -> bool:
        """Whether the event was answered already (cancelled, say)."""
        return self.join.event.is_done()


class Call:
    """Parts released into the event queue, run by a consumer: one part,
    or a batch's parts."""

    __slots__ = ("lane", "parts", "priority")

    def __init__(self, lane: Lane, parts: list[Part]) -> None:
        self.lane = lane
        self.parts = parts
        # The priority queue's order: the first part's event's.
        self.priority = parts[0].join.event.priority


class Lane:
    """The calls of one flow-controlled collector.

    :param collector: the collector.
    :param runner: runs it on one payload (its timeout included) and
        answers with a result; never raises but for cancellation.
    :param inbox: where released calls go.
    :param dispatch: sends a :class:`DeadLettered` message on the queue's bus.
    """

    def __init__(
        self,
        collector: Collector,
        runner: Runner,
        inbox: EventQueue,
        dispatch: Callable[[DeadLettered], Any],
    ) -> None:
        self.collector = collector
        self.key = collector.key
        self._runner = runner
        self._inbox = inbox
        self._dispatch = dispatch
        self._loop: asyncio.AbstractEventLoop | None = None
        self.concurrency = collector.concurrency
        self.retry = collector.retry
        self._bucket: TokenBucket | None = None
        self._waiting: deque[Part] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._retry_timers: dict[Part, asyncio.TimerHandle] = {}
        self._batch: list[Part] = []
        self._batch_timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._unstarted = 0
        self.running = 0
        """Calls released and not yet finished (queued or running)."""
        self.batch = collector if isinstance(collector, BatchCollector) else None

    def _later(
        self, delay: float, callback: Callable[..., None], *args: Any
    ) -> asyncio.TimerHandle:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop.call_later(delay, callback, *args)

    # -- counts ----------------------------------------------------------------

    @property
    def held(self) -> int:
        """Parts waiting here: for a slot or a token, a retry, a batch."""
        return len(self._waiting) + len(self._retry_timers) + len(self._batch)

    def holding(self) -> dict[str, int]:
        """The held parts by reason."""
        limited = len(self._waiting)
        # Waiting parts wait for a slot while every slot is taken, else for
        # a token.
        full = self.concurrency is not None and self.running >= self.concurrency
        return {
            "concurrency": limited if full else 0,
            "rate_limit": 0 if full else limited,
            "retry": len(self._retry_timers),
            "batch": len(self._batch),
        }

    # -- taking parts ------------------------------------------------------------

    def submit(self, part: Part) -> None:
        """Hold ``part`` until the collector may be called for it."""
        batch = self.batch
        if batch is not None:
            self._batch.append(part)
            if len(self._batch) >= batch.max_size:
                self._flush_batch()
            elif self._batch_timer is None:
                self._batch_timer = self._later(batch.max_wait, self._flush_batch)
            return
        self._waiting.append(part)
        self._pump()

    def _flush_batch(self) -> None:
        if self._batch_timer is not None:
            self._batch_timer.cancel()
            self._batch_timer = None
        parts = [p for p in self._batch if not p.answered]
        self._batch.clear()
        if parts and not self._closed:
            self.running += 1
            self._inbox.push(Call(self, parts))

    def _pump(self) -> None:
        """Release waiting parts while a slot and a token are free."""
        waiting, bucket, limit = self._waiting, self._bucket, self.concurrency
        if bucket is None and self.collector.rate_limit is not None:
            # Made on first use, on the queue's loop: its clock is the loop's.
            loop = self._loop = self._loop or asyncio.get_running_loop()
            bucket = self._bucket = TokenBucket(self.collector.rate_limit, loop.time)
        while waiting and not self._closed:
            if waiting[0].answered:
                waiting.popleft()
                continue
            if limit is not None and self.running >= limit:
                return
            if bucket is not None:
                # A call takes its token when it starts, and a released call
                # may wait in the queue for a consumer: each one released is
                # promised a token, so that the starts keep to the rate.
                promised = self._unstarted + 1
                if bucket.tokens < promised - _NOISE:
                    if self._timer is None:
                        self._timer = self._later(bucket.wait(promised), self._tick)
                    return
                self._unstarted = promised
            self.running += 1
            self._inbox.push(Call(self, [waiting.popleft()]))

    def _tick(self) -> None:
        self._timer = None
        self._pump()

    # -- running ------------------------------------------------------------------

    async def run(self, call: Call) -> list[Result]:
        """Call the collector for ``call``'s parts; one result per part."""
        batch = self.batch
        if batch is None:
            if self._bucket is not None:
                self._unstarted -= 1
                # Promised when the call was released (see _pump).
                self._bucket.take()
            return [await self._runner(call.parts[0].payload)]
        return await _run_batch(batch, [p.payload for p in call.parts])

    async def finish(self, call: Call, results: Sequence[Result]) -> None:
        """Answer the parts of a finished call, or hold them for a retry;
        then let the next waiting parts go."""
        self.running -= 1
        retry = self.retry
        try:
            for part, result in zip(call.parts, results, strict=True):
                if part.answered:
                    continue
                err = result.err if type(result) is Error else None
                if retry is None or not isinstance(err, BaseException):
                    part.join.set(part.index, result)
                    continue
                again = isinstance(err, RetryAfter) or retry.retries(err)
                if again and part.attempt < retry.attempts and not self._closed:
                    wait = (
                        err.seconds
                        if isinstance(err, RetryAfter)
                        else retry.delay(part.attempt)
                    )
                    part.attempt += 1
                    self._retry_timers[part] = self._later(wait, self._retry, part)
                    continue
                if again:
                    assert type(result) is Error
                    details = dict(result.details or {})
                    details["attempts"] = part.attempt
                    result = Error(err, details, result.collector)
                    try:
                        await self._dispatch(
                            DeadLettered(part.join.event, self.key, err, part.attempt)
                        )
                    finally:
                        # Even when the dispatch is cancelled (the shutdown
                        # stopping this consumer): the event has its answer.
                        part.join.set(part.index, result)
                    continue
                part.join.set(part.index, result)
        finally:
            self._pump()

    def _retry(self, part: Part) -> None:
        del self._retry_timers[part]
        self._waiting.append(part)
        self._pump()

    def dropped(self, call: Call) -> None:
        """A released call was taken back unstarted (the shutdown)."""
        self.running -= 1
        if self._bucket is not None and self.batch is None:
            self._unstarted -= 1

    def abandon(self, call: Call, reason: str) -> None:
        """Answer the parts of a call whose consumer was stopped in it."""
        self.running -= 1
        answer = cancelled(reason)
        for part in call.parts:
            part.join.settle(part.join.event, answer, measured=False)

    def cancel(self, reason: str) -> None:
        """Answer every held part's event with ``EventCancelled(reason)``
        and release nothing more (the queue is shutting down)."""
        self._closed = True
        for timer in (self._timer, self._batch_timer, *self._retry_timers.values()):
            if timer is not None:
                timer.cancel()
        self._timer = self._batch_timer = None
        parts = [*self._waiting, *self._retry_timers, *self._batch]
        self._waiting.clear()
        self._retry_timers.clear()
        self._batch.clear()
        answer = cancelled(reason)
        stop: BaseException | None = None
        for part in parts:
            try:
                part.join.settle(part.join.event, answer, ran=False, measured=False)
            except BaseException as exc:  # an observer's SystemExit
                stop = stop or exc
        if stop is not None:
            raise stop

    def __repr__(self) -> str:
        return f"<Lane {self.key!r} running={self.running} held={self.held}>"


async def _run_batch(
    batch: BatchCollector, payloads: list[Payload[Any]]
) -> list[Result]:
    """Run a batch collector's processor (with its timeout, and its
    instrumentation) and match its answer to the payloads."""
    count = len(payloads)
    key = batch.key
    call = batch._probed_batch or batch_call(batch)
    try:
        values = await call(payloads)
    except Exception as exc:
        return [Error(exc, None, key)] * count
    except BaseException as exc:
        if propagates(exc):
            raise
        return [Error(exc, None, key)] * count
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        bad = TypeError(
            f"collector {key!r}: a batch processor must return a list of "
            f"{count} results (got {type(values).__name__})"
        )
        return [Error(bad, None, key)] * count
    if len(values) != count:
        wrong = ValueError(
            f"collector {key!r}: the batch processor returned {len(values)} "
            f"results for {count} payloads"
        )
        return [Error(wrong, None, key)] * count
    return [as_result(v, key) for v in values]


def batch_call(
    batch: BatchCollector,
) -> Callable[[list[Payload[Any]]], Awaitable[Sequence[Any]]]:
    """A batch collector's own call, with its timeout: what instrumentation
    wraps (see ``router.collector_call``)."""
    timeout = batch.timeout
    if timeout is None:
        return batch.process_batch

    async def timed(payloads: list[Payload[Any]]) -> Sequence[Any]:
        try:
            async with asyncio.timeout(timeout) as scope:
                return await batch.process_batch(payloads)
        except TimeoutError as exc:
            if not scope.expired():
                raise
            # Built in a helper, not a local: the error's traceback holds
            # this frame, and a local would make that a reference cycle.
            raise _batch_timed_out(  # noqa: B904
                batch.key, timeout, len(payloads), exc.__cause__
            )

    return timed


def _batch_timed_out(
    key: str, timeout: float, size: int, cause: BaseException | None
) -> TimeoutError:
    """The error of a batch call cut off by its timeout, caused (as a
    collector's, see ``router``) by the cancellation that cut it off."""
    err = TimeoutError(
        f"collector {key!r} took longer than its timeout of {timeout} s "
        f"for a batch of {size}"
    )
    err.__cause__ = cause
    err.__suppress_context__ = cause is not None
    return err
