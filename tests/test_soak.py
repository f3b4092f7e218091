"""Soak: 100k events through one queue, with handlers that return and raise;
the memory traced after the warm-up does not grow by more than 10 %.

The queue's clock runs fast (a millisecond per reading), so the metrics
windows (load average, rates) fill up during the warm-up instead of growing
through the measured part, which would look like a leak and is not one.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import tracemalloc
from typing import Any

import pytest

from event_collector import Collector, CollectorQueue, Context, Error, Ok, Payload

EVENTS = 100_000
BATCH = 1_000
WARMUP_BATCHES = 20
GROWTH_LIMIT = 1.10


class Boom(Exception):
    """What every seventh handler call raises."""


async def _handler(payload: Payload[Any], ctx: Context) -> Any:
    if payload.value % 7 == 0:
        raise Boom(payload.value)
    if payload.value % 3 == 0:
        await asyncio.sleep(0)
    return payload.value


class FastClock:
    """Each reading is a millisecond later than the one before."""

    __slots__ = ("_ticks",)

    def __init__(self) -> None:
        self._ticks = itertools.count()

    def __call__(self) -> float:
        return next(self._ticks) / 1000


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


@pytest.mark.slow
async def test_no_memory_growth_over_100k_events() -> None:
    tracemalloc.start()
    try:
        queue = CollectorQueue(
            [Collector("soak", _handler)],
            max_consumers=50,
            metrics_collector_window_size=5,
            avg_load_interval=5,
            metrics_warmup_interval=0,
            clock=FastClock(),
            logging=False,
        )
        await queue.init_queue()
        publisher = queue.get_publisher()
        errors = 0
        baseline = 0
        for batch in range(EVENTS // BATCH):
            if batch == WARMUP_BATCHES:
                baseline = _traced()
            start = batch * BATCH
            events = [await publisher.send(start + i) for i in range(BATCH)]
            for event in events:
                result = (await event)[0]
                if isinstance(result, Error):
                    assert isinstance(result.err, Boom)
                    errors += 1
                else:
                    assert result == Ok(event.payload.value)
            del events, event, result
        after = _traced()
        metrics = queue.get_metrics()
        await queue.shut_down_queue()
    finally:
        tracemalloc.stop()
    assert metrics.event_count == EVENTS
    assert errors == len(range(0, EVENTS, 7))
    assert baseline > 0
    assert after <= baseline * GROWTH_LIMIT, (
        f"traced memory grew from {baseline} to {after} bytes "
        f"({after / baseline - 1:+.1%}) after the warm-up"
    )
