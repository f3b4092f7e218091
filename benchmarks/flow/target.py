"""The ``flow`` target: what flow control costs, one round.

A round measures, one after the other:

1. **Unused**: the trivial-handler throughput of the ``throughput`` target
   (one consumer, no flow control used) on the code before flow control
   (git ref :data:`~._sides.BASE_REF`, extracted from this clone) and on
   this checkout's ``src/`` (its working tree), each in a child process of
   its own. The two processes take turns: ``flow_pairs`` pairs of runs,
   which side goes first swapped from one pair to the next, so that a
   neighbour's load on this shared machine falls on both alike. The
   figure is the median of the pairs' ratios, the checkout's rate over
   the base's (goal: at least 0.95, the features cost nothing when
   unused). A clone without that commit (a shallow one) skips the
   comparison, says so, and measures the checkout alone.
2. **Keyed**: the same throughput in this process, unkeyed and with
   ordering keys, 1000 keys sent round-robin (goal: keyed at least 0.7x
   unkeyed).
3. **One-key burst**: a burst of events of one ordering key on 1 ms
   handlers, the pool autoscaled from one consumer with ``wip_margin=0``
   (the default margin of 15 % adds one spare consumer to any demand, which
   is not what is measured here): the most consumers the pool held (goal:
   1, the events waiting behind their key make it grow by nothing) and
   the time, against the handlers' time end to end; then, for contrast,
   the same burst without a key.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from typing import TYPE_CHECKING, Any

from event_collector import Collector, CollectorQueue, Context, Ok, Payload

from .._loops import LoopFactory, loop_factory, run
from ._sides import BASE_REF, ROOT, SideFailed, alternate, base_source

if TYPE_CHECKING:
    from ..targets import Sizes, Verdict

__all__ = ["KEYED_GOAL", "UNUSED_GOAL", "judge", "measure"]

UNUSED_GOAL = 0.95
KEYED_GOAL = 0.7
BURST_PEAK_GOAL = 1

_warned: set[str] = set()


def _loop_name(factory: LoopFactory) -> str:
    for name in ("asyncio", "uvloop"):
        try:
            if loop_factory(name) is factory:
                return name
        except ValueError:
            continue
    raise ValueError(f"the flow target runs on asyncio or uvloop, not {factory!r}")


def _say_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        print(message, file=sys.stderr)


# -- 1. unused: the code before flow control and this checkout ----------------


def _unused(
    factory: LoopFactory, sizes: Sizes, library_first: bool
) -> dict[str, float]:
    nan = math.nan
    base = base_source()
    if base is None:
        _say_once(
            f"flow: git ref {BASE_REF} (the code before flow control) is not in "
            "this clone (a shallow clone?): the unused-features throughput is "
            "not compared with it"
        )
        return {
            "base_measured": 0.0,
            "base_events_per_s": nan,
            "head_events_per_s": _checkout_alone(factory, sizes),
            "unused_ratio": nan,
            "unused_cpu_ratio": nan,
        }
    figures = alternate(
        base,
        ROOT / "src",
        events=sizes.flow_events,
        pairs=sizes.flow_pairs,
        loop=_loop_name(factory),
        checkout_first=library_first,
    )
    return {"base_measured": 1.0, **figures}


def _checkout_alone(factory: LoopFactory, sizes: Sizes) -> float:
    """The checkout's rate when there is no base to alternate with: one
    run of the same workload, in this process."""
    from .. import library

    n = sizes.flow_events
    return n / run(factory, lambda: library.library_throughput(n))


# -- 2. keyed: 1000 keys round-robin against no key ----------------------------


async def _trivial(payload: Payload[Any], ctx: Context) -> Ok[int]:
    return Ok(1)


async def _keyed_throughput(count: int, keys: int) -> float:
    """Seconds to send ``count`` events to one consumer running a trivial
    handler, with ``keys`` ordering keys in turn (none when 0), and await
    every answer."""
    queue = CollectorQueue(
        [Collector("bench", _trivial)],
        min_consumers=1,
        max_consumers=1,
        autoscale=False,
        logging=False,
    )
    async with queue:
        send = queue.get_publisher().send
        start = time.perf_counter()
        if keys:
            events = [await send(i, ordering_key=i % keys) for i in range(count)]
        else:
            events = [await send(i) for i in range(count)]
        for event in events:
            await event.wait()
        return time.perf_counter() - start


def _keyed(factory: LoopFactory, sizes: Sizes, library_first: bool) -> dict[str, float]:
    from ..targets import pair

    n, keys = sizes.flow_keyed_events, sizes.flow_keys
    unkeyed, keyed = pair(
        lambda: run(factory, lambda: _keyed_throughput(n, 0)),
        lambda: run(factory, lambda: _keyed_throughput(n, keys)),
        library_first,
    )
    return {
        "unkeyed_events_per_s": n / unkeyed,
        "keyed_events_per_s": n / keyed,
        "keyed_ratio": unkeyed / keyed,
        "keys": float(keys),
    }


# -- 3. a burst of one key ------------------------------------------------------


async def _burst(count: int, latency: float, key: str | None) -> tuple[int, float]:
    """The most consumers the pool held while ``count`` events of ordering
    key ``key`` (none when ``None``) on ``latency``-second handlers were
    handled, and the seconds from the first send to the last answer."""
    most = 0
    queue: CollectorQueue

    async def sleeper(payload: Payload[Any], ctx: Context) -> int:
        nonlocal most
        most = max(most, queue.consumer_count())
        await asyncio.sleep(latency)
        return 1

    queue = CollectorQueue([Collector("bench", sleeper)], wip_margin=0.0, logging=False)
    async with queue:

        async def watch() -> None:
            nonlocal most
            while True:
                most = max(most, queue.consumer_count())
                await asyncio.sleep(latency / 2)

        watcher = asyncio.get_running_loop().create_task(watch())
        send = queue.get_publisher().send
        start = time.perf_counter()
        events = [await send(i, ordering_key=key) for i in range(count)]
        for event in events:
            await event.wait()
        elapsed = time.perf_counter() - start
        most = max(most, queue.consumer_count())
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    return most, elapsed


def _one_key(factory: LoopFactory, sizes: Sizes) -> dict[str, float]:
    n, latency = sizes.flow_burst_events, sizes.flow_burst_latency
    peak, elapsed = run(factory, lambda: _burst(n, latency, "one"))
    unkeyed_peak, _ = run(factory, lambda: _burst(n, latency, None))
    return {
        "burst_events": float(n),
        "burst_peak_consumers": float(peak),
        "burst_seconds": elapsed,
        "burst_x_serial": elapsed / (n * latency),
        "unkeyed_burst_peak_consumers": float(unkeyed_peak),
    }


def measure(
    factory: LoopFactory, sizes: Sizes, library_first: bool
) -> dict[str, float]:
    """One round of the target (see the module's docstring)."""
    try:
        figures = _unused(factory, sizes, library_first)
    except SideFailed as exc:
        raise RuntimeError(
            f"flow: a side of the unused-features part failed: {exc}"
        ) from exc
    figures |= _keyed(factory, sizes, library_first)
    figures |= _one_key(factory, sizes)
    return figures


def judge(medians: dict[str, float]) -> Verdict:
    """Met when the checkout with no feature used makes at least 0.95x the
    base's throughput (when the base was measured), the keyed throughput
    is at least 0.7x the unkeyed one, and a burst of one key peaks at one
    consumer."""
    from ..targets import Verdict

    parts: list[str] = []
    met = True
    unused = medians["unused_ratio"]
    if medians["base_measured"] > 0 and not math.isnan(unused):
        parts.append(
            f"unused {unused:.3f}x {BASE_REF} "
            f"(CPU time: {medians['unused_cpu_ratio']:.3f}x)"
        )
        met = unused >= UNUSED_GOAL
    else:
        parts.append(f"unused: not compared ({BASE_REF} not in this clone)")
    keyed = medians["keyed_ratio"]
    parts.append(f"{medians['keys']:.0f} keys {keyed:.2f}x unkeyed")
    peak = medians["burst_peak_consumers"]
    parts.append(
        f"burst of {medians['burst_events']:.0f} on one key: "
        f"{peak:.0f} consumer(s) at most, "
        f"{medians['burst_x_serial']:.2f}x serial handler time "
        f"(unkeyed: {medians['unkeyed_burst_peak_consumers']:.0f})"
    )
    met = met and keyed >= KEYED_GOAL and peak <= BURST_PEAK_GOAL
    figure = unused if not math.isnan(unused) else keyed
    return Verdict(figure, "; ".join(parts), met)
