"""A Hypothesis state machine over flow control: sends with random ordering
keys (some superseding), collectors with a concurrency limit, a rate limit
and retries, a batch collector, the passing of loop time and a shutdown
that drains or is cut short.

It runs on a looptime loop, so every timing rule is exact. Checked after
every step and at the end: each accepted event is answered exactly once;
events of one key start in send order and never overlap; a collector never
runs more calls at once than its limit; no window of time holds more calls
of the rate-limited collector than its bucket allows; a retried collector
is called at most its attempts per event.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Coroutine
from typing import Any, TypeVar

import looptime
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from conftest import is_cancelled
from event_collector import (
    BatchCollector,
    Collector,
    CollectorEvent,
    CollectorQueue,
    Context,
    Error,
    Ok,
    Payload,
    QueueClosed,
    RateLimit,
    ResultList,
    Retry,
    Superseded,
)

T = TypeVar("T")

LIMIT = 2
RATE = RateLimit(5, per=1.0, burst=2)
ATTEMPTS = 3
TOPICS = ("limited", "rated", "retried", "batched")


class Flaky(ConnectionError):
    """What the retried collector raises."""


class FlowMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = looptime.new_event_loop(start=0)
        self.queue: CollectorQueue | None = None
        self.accepted: list[CollectorEvent[Any]] = []
        self.answers: collections.Counter[int] = collections.Counter()
        # Per key: the send order, and the starts and ends of its events.
        self.sent_keys: dict[str, list[int]] = collections.defaultdict(list)
        self.key_log: list[tuple[str, str, int]] = []
        self.running: collections.Counter[str] = collections.Counter()
        self.peak: collections.Counter[str] = collections.Counter()
        self.rated_starts: list[float] = []
        self.calls: collections.Counter[int] = collections.Counter()
        self.serial = 0
        self.order_seen: list[tuple[str, int]] = []

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    @property
    def q(self) -> CollectorQueue:
        assert self.queue is not None
        return self.queue

    # -- the collectors: each records what the invariants check -----------------

    def _collector(self, name: str, **options: Any) -> Collector:
        async def handler(payload: Payload[Any], ctx: Context) -> Any:
            serial, key, seconds, fails = payload.value
            self.running[name] += 1
            self.peak[name] = max(self.peak[name], self.running[name])
            if key is not None:
                self.key_log.append(("start", key, serial))
                self.order_seen.append((key, serial))
            if name == "rated":
                self.rated_starts.append(self.loop.time())
            if name == "retried":
                self.calls[serial] += 1
            try:
                await asyncio.sleep(seconds)
                if name == "retried" and self.calls[serial] <= fails:
                    raise Flaky(f"attempt {self.calls[serial]}")
            finally:
                self.running[name] -= 1
            return serial

        return Collector(name, handler, topics=[name], **options)

    @initialize(
        shutdown_timeout=st.sampled_from([0.5, 5.0, 60.0]),
        autoscale=st.booleans(),
    )
    def start(self, shutdown_timeout: float, autoscale: bool) -> None:
        async def batch(payloads: list[Payload[Any]], ctx: Context) -> list[Any]:
            await asyncio.sleep(0.05)
            return [p.value[0] for p in payloads]

        queue = CollectorQueue(
            [
                self._collector("limited", concurrency=LIMIT),
                self._collector("rated", rate_limit=RATE),
                self._collector(
                    "retried",
                    retry=Retry(attempts=ATTEMPTS, backoff=0.2, max_backoff=1.0),
                ),
                BatchCollector(
                    "batched", batch, topics=["batched"], max_size=3, max_wait=0.3
                ),
            ],
            autoscale=autoscale,
            min_consumers=1,
            max_consumers=4,
            monitor_interval=0.1,
            consumer_shutdown_timeout=shutdown_timeout,
            clock=self.loop.time,
            logging=False,
        )
        queue.add_event_observer(self._answered)
        self.queue = queue
        self.run(queue.init_queue())

    def _answered(self, event: CollectorEvent[Any]) -> None:
        self.answers.update((event.id,))
        serial, key, _, _ = event.payload.value
        if key is not None:
            self.key_log.append(("answered", key, serial))

    def _running(self) -> bool:
        return self.queue is not None and self.queue.is_running

    @precondition(_running)
    @rule(
        topics=st.lists(st.sampled_from(TOPICS), min_size=1, max_size=2, unique=True),
        key=st.sampled_from([None, "a", "b"]),
        supersede=st.booleans(),
        seconds=st.sampled_from([0.0, 0.1, 0.4]),
        fails=st.integers(0, ATTEMPTS),
    )
    def send(
        self,
        topics: list[str],
        key: str | None,
        supersede: bool,
        seconds: float,
        fails: int,
    ) -> None:
        self.serial += 1
        payload = Payload((self.serial, key, seconds, fails), topics=topics)
        publisher = self.q.get_publisher()

        async def inside() -> CollectorEvent[Any]:
            return publisher.send_nowait(
                payload, ordering_key=key, supersede=supersede and key is not None
            )

        try:
            event = self.run(inside())
        except QueueClosed:
            return
        self.accepted.append(event)
        if key is not None:
            self.sent_keys[key].append(self.serial)

    @rule(seconds=st.sampled_from([0.0, 0.05, 0.3, 1.0]))
    def let_time_pass(self, seconds: float) -> None:
        self.run(asyncio.sleep(seconds))

    @precondition(_running)
    @rule()
    def shut_down(self) -> None:
        self.run(self.q.shut_down_queue())

    # -- invariants ------------------------------------------------------------------

    @invariant()
    def answered_at_most_once(self) -> None:
        assert all(count == 1 for count in self.answers.values()), self.answers

    @invariant()
    def limits_hold(self) -> None:
        assert self.peak["limited"] <= LIMIT
        starts = self.rated_starts
        per_second = RATE.per_second
        for i, first in enumerate(starts):
            for j in range(i, len(starts)):
                window = starts[j] - first
                # A bucket of `burst` tokens refilled at its rate.
                assert j - i + 1 <= RATE.burst + window * per_second + 1e-6
        assert all(n <= ATTEMPTS for n in self.calls.values())

    @invariant()
    def keys_are_serial_and_in_order(self) -> None:
        # The event of a key that runs (started, not answered), and the
        # last one of the key that was answered after running.
        current: dict[str, int | None] = {}
        done: dict[str, int] = {}
        for what, key, serial in self.key_log:
            if what == "start":
                running = current.get(key)
                # The same event's other collectors, or its retries, may
                # start while it runs; no other event of the key may.
                assert running in (None, serial), (key, running, serial)
                if running is None:
                    assert serial > done.get(key, 0), (key, serial, done)
                current[key] = serial
            elif what == "answered" and current.get(key) == serial:
                current[key] = None
                done[key] = serial

    def teardown(self) -> None:
        try:
            if self.queue is not None and self.queue.state.name != "CLOSED":
                self.run(self.q.shut_down_queue())
            for event in self.accepted:
                assert event.is_done(), event
                assert self.answers[event.id] == 1
                results = event.get_result()
                assert isinstance(results, ResultList)
                if not _cut_short(results):
                    assert len(results) == len(event.payload.topics)
                    for result in results:
                        assert isinstance(result, Ok | Error)
            self.limits_hold()
        finally:
            self.loop.close()


def _cut_short(results: ResultList) -> bool:
    """Answered without the collectors' results: cancelled or superseded."""
    return len(results) == 1 and (
        is_cancelled(results)
        or (isinstance(results[0], Error) and isinstance(results[0].err, Superseded))
    )


@pytest.mark.slow
def test_flow_control_state_machine() -> None:
    run_state_machine_as_test(
        FlowMachine,
        settings=settings(
            max_examples=60,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
