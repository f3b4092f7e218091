"""The performance targets: what one round measures, and how its medians
are judged.

A round measures the baseline and the library one after the other, in
fresh loops of the same kind; which of the two goes first changes from one
round to the next, so that neither always runs on a process the other has
just warmed (or cluttered).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
from collections.abc import Callable, Sequence
from typing import TypeVar

from event_collector import Ok

from . import baselines, flow, instrument, library, redis_bench
from ._loops import LoopFactory, run, run_counting_gc

__all__ = ["FULL", "QUICK", "TARGETS", "Sizes", "Target", "Verdict", "percentile"]

A = TypeVar("A")
B = TypeVar("B")


@dataclasses.dataclass(frozen=True, slots=True)
class Sizes:
    """How big each workload is."""

    throughput_events: int = 100_000
    io_events: int = 20_000
    io_latency: float = 0.01  # seconds per I/O handler
    io_workers: int = 1000
    idle_seconds: float = 5.0
    idle_burst: int = 1000  # events of the "idle after a burst" variant
    memory_events: int = 100_000
    burst_events: int = 1000
    burst_latency: float = 0.1  # seconds per handler
    burst_max_consumers: int = 2000
    burst_consumers_goal: int = 500
    latency_events: int = 3000
    latency_service: float = 0.0005  # CPU seconds per handler
    latency_load: float = 0.5
    max_idle_rounds: int = 3  # idle rounds are long: at most this many
    redis_events: int = 50_000  # per full-speed run of the redis target
    redis_half_load_events: int = 20_000
    redis_peer_events: int = 5000  # 0: the peers are not measured
    flow_events: int = 50_000  # per run of an unused-features side
    flow_pairs: int = 10  # pairs of runs (base, checkout) per round
    flow_keyed_events: int = 100_000
    flow_keys: int = 1000
    flow_burst_events: int = 1000
    flow_burst_latency: float = 0.001  # seconds per handler
    instrument_events: int = 50_000  # per run of one side
    instrument_pairs: int = 10  # turns of every side per round


FULL = Sizes()
QUICK = Sizes(
    throughput_events=20_000,
    io_events=4000,
    idle_seconds=0.5,
    idle_burst=200,
    memory_events=20_000,
    latency_events=400,
    max_idle_rounds=1,
    redis_events=3000,
    redis_half_load_events=1000,
    redis_peer_events=0,
    flow_events=20_000,
    flow_pairs=2,
    flow_keyed_events=20_000,
    flow_burst_events=200,
    instrument_events=10_000,
    instrument_pairs=2,
)


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """A target's figure from the medians, and whether it meets the goal."""

    figure: float
    text: str
    met: bool


Round = Callable[[LoopFactory, Sizes, bool], dict[str, float]]
"""Measures one round: ``measure(factory, sizes, library_first)``."""
Judge = Callable[[dict[str, float]], Verdict]


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """One target of the suite."""

    name: str
    title: str
    goal: str
    baseline_key: str
    library_key: str
    unit: str
    measure: Round
    judge: Judge


def pair(
    bare: Callable[[], A], lib: Callable[[], B], library_first: bool
) -> tuple[A, B]:
    """Run both sides of a round, the library first if asked; return the
    baseline's result and the library's."""
    if library_first:
        lib_result = lib()
        return bare(), lib_result
    bare_result = bare()
    return bare_result, lib()


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


# -- 1. trivial handler throughput ---------------------------------------------


async def _ok_one(value: object) -> Ok[int]:
    return Ok(1)


def _rates(
    count: int,
    bare: tuple[float, float, float],
    library: tuple[float, float, float],
) -> dict[str, float]:
    """A round of a rate target from each side's (wall seconds, CPU seconds,
    GC seconds).

    ``ratio`` is this round's library rate over the baseline's, measured a
    moment apart; its median over the rounds is the target's figure, which
    a noisy neighbour slowing one whole round does not move. The CPU-time
    ratio and the collector's share say where the time went.
    """
    (bare_wall, bare_cpu, bare_gc), (lib_wall, lib_cpu, lib_gc) = bare, library
    return {
        "bare_events_per_s": count / bare_wall,
        "library_events_per_s": count / lib_wall,
        "ratio": bare_wall / lib_wall,
        "cpu_ratio": bare_cpu / lib_cpu,
        "bare_gc_pct": 100 * bare_gc / bare_cpu,
        "library_gc_pct": 100 * lib_gc / lib_cpu,
    }


def _throughput(
    factory: LoopFactory, sizes: Sizes, library_first: bool
) -> dict[str, float]:
    n = sizes.throughput_events
    bare, lib = pair(
        lambda: run_counting_gc(factory, lambda: baselines.bare_throughput(n, _ok_one)),
        lambda: run_counting_gc(factory, lambda: library.library_throughput(n)),
        library_first,
    )
    return _rates(n, bare, lib)


def _judge_ratio(goal: float) -> Judge:
    def judge(medians: dict[str, float]) -> Verdict:
        ratio = medians["ratio"]
        return Verdict(
            ratio,
            f"{ratio:.2f}x (CPU time: {medians['cpu_ratio']:.2f}x)",
            ratio >= goal,
        )

    return judge


# -- 2. I/O handlers, autoscaled pool vs a fixed pool ---------------------------


def _io(factory: LoopFactory, sizes: Sizes, library_first: bool) -> dict[str, float]:
    n, latency, workers = sizes.io_events, sizes.io_latency, sizes.io_workers

    async def sleeper(value: object) -> int:
        await asyncio.sleep(latency)
        return 1

    bare, lib = pair(
        lambda: run_counting_gc(
            factory, lambda: baselines.bare_throughput(n, sleeper, workers)
        ),
        lambda: run_counting_gc(
            factory, lambda: library.library_sleepers(n, latency, workers)
        ),
        library_first,
    )
    return _rates(n, bare, lib)


# -- 3. idle CPU ------------------------------------------------------------------


def _idle(factory: LoopFactory, sizes: Sizes, library_first: bool) -> dict[str, float]:
    seconds = sizes.idle_seconds
    (cpu, wall), (lib_cpu, lib_wall) = pair(
        lambda: run(factory, lambda: baselines.empty_idle(seconds)),
        lambda: run(factory, lambda: library.library_idle(seconds)),
        library_first,
    )
    # Not judged, and the library's only: measured last in every round.
    burst_cpu, burst_wall = run(
        factory, lambda: library.library_idle(seconds, after_burst=sizes.idle_burst)
    )
    return {
        "empty_loop_cpu_pct": 100 * cpu / wall,
        "library_cpu_pct": 100 * lib_cpu / lib_wall,
        "after_burst_cpu_pct": 100 * burst_cpu / burst_wall,
    }


def _judge_idle(medians: dict[str, float]) -> Verdict:
    pct = medians["library_cpu_pct"]
    return Verdict(pct, f"{pct:.3f}% of a core", pct <= 0.3)


# -- 4. memory per queued event -------------------------------------------------


def _memory(
    factory: LoopFactory, sizes: Sizes, library_first: bool
) -> dict[str, float]:
    n = sizes.memory_events
    bare, lib = pair(
        lambda: run(factory, lambda: baselines.bare_memory(n)),
        lambda: run(factory, lambda: library.library_memory(n)),
        library_first,
    )
    return {"bare_bytes_per_event": bare, "library_bytes_per_event": lib}


def _judge_memory(medians: dict[str, float]) -> Verdict:
    size = medians["library_bytes_per_event"]
    return Verdict(size, f"{size:.0f} B/event", size <= 250)


# -- 5. scale-up reaction ---------------------------------------------------------


def _burst(factory: LoopFactory, sizes: Sizes, library_first: bool) -> dict[str, float]:
    n, latency = sizes.burst_events, sizes.burst_latency
    goal = sizes.burst_consumers_goal
    bare, (elapsed, polled, handled, interval) = pair(
        lambda: run(factory, lambda: baselines.bare_burst(n, latency, n, goal)),
        lambda: run(
            factory,
            lambda: library.library_burst(n, latency, sizes.burst_max_consumers, goal),
        ),
        library_first,
    )
    return {
        "bare_completion_x": bare / latency,
        "library_completion_x": elapsed / latency,
        # Two upper bounds on the same instant: the earlier one is the figure.
        "library_time_to_goal_ms": 1000 * min(polled, handled),
        "goal_seen_by_poller_ms": 1000 * polled,
        "goal_handlers_started_ms": 1000 * handled,
        "monitor_interval_ms": 1000 * interval,
        "consumers_goal": goal,
    }


def _judge_burst(medians: dict[str, float]) -> Verdict:
    completion = medians["library_completion_x"]
    reach = medians["library_time_to_goal_ms"]
    interval = medians["monitor_interval_ms"]
    return Verdict(
        completion,
        f"{completion:.3f}x latency; {medians['consumers_goal']:.0f} consumers "
        f"after {reach:.1f} ms "
        f"(monitor interval {interval:.0f} ms)",
        completion <= 1.15 and reach <= interval,
    )


# -- 6. latency overhead at 50% load ---------------------------------------------


def _gaps(sizes: Sizes) -> list[float]:
    rate = sizes.latency_load / sizes.latency_service
    rng = random.Random(4)  # the same arrival process on both sides
    return [rng.expovariate(rate) for _ in range(sizes.latency_events)]


def _latency(
    factory: LoopFactory, sizes: Sizes, library_first: bool
) -> dict[str, float]:
    gaps, service = _gaps(sizes), sizes.latency_service
    bare, lib = pair(
        lambda: run(factory, lambda: baselines.bare_latency(gaps, service)),
        lambda: run(factory, lambda: library.library_latency(gaps, service)),
        library_first,
    )
    bare_p99, lib_p99 = percentile(bare, 0.99), percentile(lib, 0.99)
    return {
        "bare_p50_ms": 1000 * percentile(bare, 0.5),
        "bare_p99_ms": 1000 * bare_p99,
        "library_p50_ms": 1000 * percentile(lib, 0.5),
        "library_p99_ms": 1000 * lib_p99,
        # Paired within the round, like the rate targets' ratio: its median
        # is the figure, which one disturbed round does not move.
        "p99_extra_ms": 1000 * (lib_p99 - bare_p99),
    }


def _judge_latency(medians: dict[str, float]) -> Verdict:
    extra = medians["p99_extra_ms"]
    return Verdict(extra, f"p99 {extra:+.3f} ms vs bare", extra <= 1.0)


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            "throughput",
            "1. trivial handler, one consumer",
            ">= 0.5x bare",
            "bare_events_per_s",
            "library_events_per_s",
            "events/s",
            _throughput,
            _judge_ratio(0.5),
        ),
        Target(
            "io",
            "2. 10 ms I/O handlers, pool up to 1000",
            ">= 0.8x 1000 bare workers",
            "bare_events_per_s",
            "library_events_per_s",
            "events/s",
            _io,
            _judge_ratio(0.8),
        ),
        Target(
            "idle",
            "3. idle CPU, default settings",
            "<= 0.3% of a core",
            "empty_loop_cpu_pct",
            "library_cpu_pct",
            "% of a core",
            _idle,
            _judge_idle,
        ),
        Target(
            "memory",
            "4. memory per queued event",
            "<= 250 B",
            "bare_bytes_per_event",
            "library_bytes_per_event",
            "B/event",
            _memory,
            _judge_memory,
        ),
        Target(
            "scaleup",
            "5. burst of 1000 x 100 ms, max 2000",
            "<= 1.15x latency; 500 consumers within 1 monitor interval",
            "bare_completion_x",
            "library_completion_x",
            "x handler latency",
            _burst,
            _judge_burst,
        ),
        Target(
            "latency",
            "6. p99 send-to-start at 50% load",
            "<= +1 ms over bare",
            "bare_p99_ms",
            "library_p99_ms",
            "ms",
            _latency,
            _judge_latency,
        ),
        Target(
            "redis",
            "8. Redis Streams, 1 publisher + 2 workers",
            ">= 0.5x floor, >= 3x peers; p50 at half load <= +2 ms",
            "floor_events_per_s",
            "library_events_per_s",
            "events/s",
            redis_bench.measure,
            redis_bench.judge,
        ),
        Target(
            "flow",
            "9. flow control: unused, 1000 keys, a one-key burst",
            ">= 0.95x before flow control; keyed >= 0.7x; burst on 1 consumer",
            "base_events_per_s",
            "head_events_per_s",
            "events/s",
            flow.measure,
            flow.judge,
        ),
        Target(
            "instrument",
            "10. instrumentation: OpenTelemetry and the sender's context",
            ">= 0.95x with tracing installed but off; seam >= 0.95x before it",
            "plain_events_per_s",
            "otel_idle_events_per_s",
            "events/s",
            instrument.measure,
            instrument.judge,
        ),
    )
}
