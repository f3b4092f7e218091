"""Soak: 100k events through one autoscaling queue, with handlers that return
and raise; the memory traced after the warm-up must not grow with the number
of events handled.

Why a slope, and not "the end is within 10 % of the start": the traced
memory of a healthy queue moves up and down by tens of kilobytes between two
looks, and none of it is a leak. An idle consumer costs about 1.3 kB and the
pool may hold anywhere from 1 to 50 of them when we look (25 to 50 in
practice); sets, dicts and deques keep the capacity of their largest size;
the rate meters' checkpoint lists grow and are compacted in a sawtooth. Two
readings of a footprint of about 150 kB can therefore differ by 20 % either
way. A leak is different in kind: it grows in proportion to the events
handled. So the test takes 81 checkpoints, one every 1,000 events from event
20,000 to event 100,000, fits a least-squares line of traced bytes against
events handled, and bounds its slope.

The bound is 3 bytes per event. The smallest leak an event can cause is one
reference kept in a list, 8 bytes (a list slot), which this test measures at
about 8.4 B/event, the list's over-allocation included; keeping any object
costs more. A healthy queue measures within 0.25 B/event of zero. Bounded
noise cannot fake a slope: a step of ``h`` bytes that appears once and stays
moves a least-squares slope over ``L`` events by at most ``1.5 h / L`` (when
it falls in the middle). Over the 80,000 measured events, reaching 3 B/event
takes a step of 160 kB, more than the whole footprint, whereas the largest
step on offer, the pool going from 1 consumer to 50, is 65 kB, worth at most
1.2 B/event. The same 65 kB step the other way would bring the 8.4 B/event
of the smallest leak down to 7.2, still more than twice the bound.

What keeps the rest of the noise out of the readings:

- ``gc.collect()`` before each checkpoint. A full collection frees cyclic
  garbage and also empties the interpreter's free lists (floats, tuples,
  dicts and others), whose contents would otherwise depend on where the
  checkpoint falls in the collector's cycle: without it, a healthy run
  measured up to 1.9 B/event on Python 3.13. ``gc.freeze()`` first moves
  what existed before the test (pytest, the imports) out of the collector's
  reach; it was allocated before tracing began and so is not counted
  anyway, and each collection then costs about a millisecond, not twenty.
- The checkpoints go into arrays allocated before tracing starts, so the
  measurement itself keeps nothing (a list of ints would grow with the
  checkpoints). ``tracemalloc.get_traced_memory`` counts the blocks the
  program holds, not tracemalloc's own tables.
- The queue's clock runs fast (a millisecond per reading, at least three
  readings per event), so the metrics windows (5 s of load average and of
  rates, the last 500 service times) are full after the first few thousand
  events: the 20,000 events of warm-up are a minute of queue time.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import statistics
import tracemalloc
from array import array
from typing import Any

import pytest

from event_collector import Collector, CollectorQueue, Context, Error, Ok, Payload

EVENTS = 100_000
BATCH = 1_000
"""Events sent (and awaited) between two checkpoints."""
WARMUP_EVENTS = 20_000
SLOPE_LIMIT = 3.0
"""Bytes per event; see the module docstring for why this separates a leak
of one reference per event (about 8.4) from the noise (within 0.25)."""


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


def _checkpoint_report(
    handled: range, traced: array[int], consumers: array[int], slope: float
) -> str:
    kilobytes = " ".join(f"{size / 1000:.1f}" for size in traced)
    return (
        f"traced memory grows by {slope:+.2f} bytes per event, above the bound "
        f"of {SLOPE_LIMIT} (least-squares slope over {len(traced)} checkpoints, "
        f"events {handled[0]} to {handled[-1]}; fitted growth "
        f"{slope * (handled[-1] - handled[0]) / 1000:+.1f} kB; pool of "
        f"{min(consumers)} to {max(consumers)} consumers at the checkpoints). "
        f"Traced kB every {handled.step} events: {kilobytes}"
    )


@pytest.mark.slow
async def test_no_memory_growth_over_100k_events() -> None:
    handled = range(WARMUP_EVENTS, EVENTS + 1, BATCH)
    # Filled in place: storing into an array allocates nothing.
    traced = array("q", bytes(8 * len(handled)))
    consumers = array("q", bytes(8 * len(handled)))
    # What exists already (pytest, the imports) is set aside, so that each
    # full collection walks only what the test made (see the docstring).
    gc.freeze()
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
        for start in range(0, EVENTS, BATCH):
            events = [await publisher.send(start + i) for i in range(BATCH)]
            for event in events:
                result = (await event)[0]
                if isinstance(result, Error):
                    assert isinstance(result.err, Boom)
                    errors += 1
                else:
                    assert result == Ok(event.payload.value)
            del events, event, result
            done = start + BATCH
            if done >= WARMUP_EVENTS:
                index = (done - WARMUP_EVENTS) // BATCH
                consumers[index] = queue.current_load().consumers
                gc.collect()
                traced[index] = tracemalloc.get_traced_memory()[0]
        metrics = queue.get_metrics()
        await queue.shut_down_queue()
    finally:
        tracemalloc.stop()
        gc.unfreeze()
    assert metrics.event_count == EVENTS
    assert errors == len(range(0, EVENTS, 7))
    assert min(traced) > 0
    slope = statistics.linear_regression(handled, traced).slope
    print(f"soak: {slope:+.3f} bytes per event (bound {SLOPE_LIMIT})")
    assert slope <= SLOPE_LIMIT, _checkpoint_report(handled, traced, consumers, slope)
