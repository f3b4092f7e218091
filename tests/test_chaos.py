"""Chaos: thousands of events whose handlers return, raise, hang past their
timeout or raise ``CancelledError``, sent by concurrent publishers while the
pool scales, with a shutdown in the middle of it all.

Invariant: every event ``send`` accepted is answered exactly once. Answers
are counted three ways: calls to ``CollectorEvent._set_answer``, an event
observer (consumer-answered events), and awaiting every event.
"""

from __future__ import annotations

import asyncio
import collections
import random
from typing import Any

import pytest

from conftest import LoopErrors, is_cancelled
from event_collector import (
    Collector,
    CollectorEvent,
    CollectorQueue,
    Context,
    Error,
    Ok,
    Payload,
    QueueClosed,
    QueueFull,
    QueueType,
)

SEED = 20_241_127
EVENTS = 4_000
PUBLISHERS = 8
SHUTDOWN_AFTER = 3_400  # accepted events before the shutdown starts
OUTCOMES = ("return", "raise", "hang", "cancel")
# Loop time (looptime): a handler times out only by waiting, never because
# a busy loop was slow, so every outcome is the planned one.
TIMEOUTS = {"a": 1.0, "b": 2.5}
GUARD = 60.0


class Boom(Exception):
    """What a failing handler raises."""


def _handler(key: str) -> Any:
    async def handle(payload: Payload[Any], ctx: Context) -> Any:
        plan = payload.value
        for _ in range(plan["yields"]):
            await asyncio.sleep(0)
        outcome = plan[key]
        if outcome == "raise":
            raise Boom(plan["n"])
        if outcome == "hang":
            await asyncio.sleep(3600)
        if outcome == "cancel":
            raise asyncio.CancelledError(f"{key} gave up on {plan['n']}")
        return (key, plan["n"])

    return handle


def _expected(key: str, plan: dict[str, Any], result: Ok[Any] | Error) -> bool:
    outcome = plan[key]
    if outcome == "return":
        return result == Ok((key, plan["n"]))
    if not isinstance(result, Error):
        return False
    err = result.err
    if outcome == "raise":
        return isinstance(err, Boom) and err.args == (plan["n"],)
    if outcome == "hang":
        return isinstance(err, TimeoutError) and repr(key) in str(err)
    return isinstance(err, asyncio.CancelledError)


@pytest.mark.slow
@pytest.mark.looptime
@pytest.mark.parametrize(
    ("queue_type", "maxsize"),
    [
        pytest.param(QueueType.FIFO, 0, id="fifo"),
        pytest.param(QueueType.PRIORITY, 64, id="priority-bounded"),
        pytest.param(QueueType.LIFO, 0, id="lifo"),
    ],
)
async def test_every_accepted_event_is_answered_exactly_once(
    loop_guard: LoopErrors,
    monkeypatch: pytest.MonkeyPatch,
    queue_type: QueueType,
    maxsize: int,
) -> None:
    rng = random.Random(f"{SEED}-{queue_type.name}-{maxsize}")
    answers: collections.Counter[int] = collections.Counter()
    original_set_answer = CollectorEvent._set_answer

    def counting_set_answer(self: CollectorEvent[Any], answer: object) -> bool:
        answers[self.id] += 1
        return original_set_answer(self, answer)

    # Every answer of an unkeyed event, the consumers' and the shutdown's,
    # goes through it (no event here has an ordering key: a KeyedEvent has
    # a _set_answer of its own).
    monkeypatch.setattr(CollectorEvent, "_set_answer", counting_set_answer)

    queue = CollectorQueue(
        [
            Collector("a", _handler("a"), timeout=TIMEOUTS["a"]),
            Collector("b", _handler("b"), timeout=TIMEOUTS["b"]),
        ],
        max_consumers=1_000,
        clock=asyncio.get_running_loop().time,
        queue_type=queue_type,
        maxsize=maxsize,
        consumer_shutdown_timeout=0.5,
        logging=False,
    )
    observed: collections.Counter[int] = collections.Counter()
    queue.add_event_observer(lambda event: observed.update((event.id,)))
    await queue.init_queue()
    publisher = queue.get_publisher()

    accepted: list[CollectorEvent[Any]] = []
    refused = 0
    plans = [
        {
            "n": n,
            "a": rng.choice(OUTCOMES),
            "b": rng.choice(OUTCOMES),
            "yields": rng.randrange(4),
            "nowait": rng.random() < 0.2,
            "priority": rng.randrange(5),
            "pause": rng.choice((0.0, 0.01, 0.02, 0.05)),
        }
        for n in range(EVENTS)
    ]
    shutdown_started = asyncio.Event()

    async def publish(share: list[dict[str, Any]]) -> None:
        nonlocal refused
        for plan in share:
            await asyncio.sleep(plan["pause"])  # loop time: costs nothing
            try:
                if plan["nowait"]:
                    event = publisher.send_nowait(plan, priority=plan["priority"])
                else:
                    event = await publisher.send(plan, priority=plan["priority"])
            except QueueFull:
                refused += 1
                continue
            except QueueClosed:
                refused += 1
                continue
            accepted.append(event)
            if len(accepted) == SHUTDOWN_AFTER:
                shutdown_started.set()

    async def stop_midway() -> None:
        await shutdown_started.wait()
        await queue.shut_down_queue()

    stopper = asyncio.create_task(stop_midway())
    async with asyncio.timeout(GUARD):
        await asyncio.gather(
            *(publish(plans[i::PUBLISHERS]) for i in range(PUBLISHERS))
        )
        shutdown_started.set()  # in case refusals kept us below the mark
        await stopper
    peak = queue.get_metrics()
    assert queue.state == "closed"

    # Counted by awaiting every accepted event: all answered at once.
    async with asyncio.timeout(1.0):
        awaited = [await event for event in accepted]
    assert len(awaited) == len(accepted)
    assert len(accepted) + refused == EVENTS
    assert len(accepted) >= SHUTDOWN_AFTER

    # Counted by _set_answer: exactly once for each accepted event, never for
    # a refused one.
    accepted_ids = {event.id for event in accepted}
    assert len(accepted_ids) == len(accepted)
    assert set(answers) == accepted_ids
    assert set(answers.values()) == {1}

    # Counted by the observer: every accepted event, each once, those the
    # shutdown answered with EventCancelled included.
    assert set(observed.values()) == {1}
    assert set(observed) == accepted_ids
    cancelled = {
        e.id for e, r in zip(accepted, awaited, strict=True) if is_cancelled(r)
    }
    assert cancelled  # the shutdown did cut some handlers short
    assert len(cancelled) < EVENTS // 2  # most events ran before the shutdown

    # And every handled event got what its handlers did.
    outcomes_seen: collections.Counter[str] = collections.Counter()
    for event, results in zip(accepted, awaited, strict=True):
        if event.id in cancelled:
            continue
        plan = event.payload.value
        assert len(results) == 2, (plan, results)
        assert _expected("a", plan, results[0]), (plan, results)
        assert _expected("b", plan, results[1]), (plan, results)
        outcomes_seen.update((plan["a"], plan["b"]))
    assert set(outcomes_seen) == set(OUTCOMES)
    assert peak.consumers == 0
    assert queue.get_metrics().event_count >= len(observed)
