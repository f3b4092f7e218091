"""The ``redis`` target: one round, and the judge of the medians.

A round starts its own ``redis-server`` and measures, one after the other
(each on a fresh stream, the server flushed in between, every process
started anew):

1. the floor and the library at full speed, 1 publisher and 2 workers,
   batches of :data:`BATCH`, at most :data:`WINDOW` events unanswered (the
   floor first in even rounds, the library first in odd ones);
2. both at half the floor's throughput of step 1, open loop (Poisson
   arrivals, the same on both sides): the latency p50;
3. the library on 1 and 4 workers (the 2 workers of step 1 are the middle
   of that row);
4. with ``sizes.redis_peer_events`` > 0 (not in quick mode), the peers,
   taskiq-redis and arq, each from its own environment, at full speed.

Every figure is paired within the round (ratios, the p50 difference), and
the medians of those are judged. The library's keys are NaN when
``event_collector.redis`` cannot be imported (its side is then not run).
"""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .._loops import LoopFactory, loop_factory
from ._peers import PEERS, Peer, peer_interpreter
from ._processes import Interpreter, measure_with
from ._server import RedisServer, version_number, version_text

if TYPE_CHECKING:
    from ..targets import Sizes, Verdict

__all__ = ["BATCH", "WINDOW", "judge", "library_available", "measure"]

A = TypeVar("A")
B = TypeVar("B")

WORKERS = 2
SCALING = (1, 2, 4)
BATCH = 100  # events per send (one pipelined round trip)
WINDOW = 1000  # events sent and not answered, at most
WARMUP = 500  # events each publisher sends before it measures
HALF = 0.5  # the load of step 2, a fraction of the floor's throughput

RATIO_GOAL = 0.5
PEER_GOAL = 3.0
HALF_P50_GOAL_MS = 2.0


def library_available() -> bool:
    """Whether ``event_collector.redis`` (and so the library side) exists."""
    try:
        return importlib.util.find_spec("event_collector.redis") is not None
    except ImportError:
        return False


def _loop_name(factory: LoopFactory) -> str:
    """The name of the loop ``factory`` makes, for the child processes."""
    for name in ("asyncio", "uvloop"):
        try:
            if loop_factory(name) is factory:
                return name
        except ValueError:
            continue
    raise ValueError(f"the redis target runs on asyncio or uvloop, not {factory!r}")


def _pair(
    floor: Callable[[], A], library: Callable[[], B], library_first: bool
) -> tuple[A, B]:
    """:func:`benchmarks.targets.pair` (imported here, not at the top: the
    targets module imports this one)."""
    from ..targets import pair

    return pair(floor, library, library_first)


class _Round:
    """The processes' settings shared by every measurement of a round."""

    def __init__(self, server: RedisServer, loop: str) -> None:
        self.server = server
        self.loop = loop
        self.own = Interpreter(sys.executable)
        self._streams = 0

    def measure(
        self,
        side: str,
        publisher_args: list[str],
        *,
        workers: int = WORKERS,
        interpreter: Interpreter | None = None,
    ) -> dict[str, Any]:
        self.server.flush()
        self._streams += 1
        return measure_with(
            interpreter or self.own,
            side,
            url=self.server.url,
            stream=f"bench-{side}-{self._streams}",
            loop=self.loop,
            workers=workers,
            publisher_args=publisher_args,
            time_limit=300.0,
        )

    def full_speed(
        self,
        side: str,
        events: int,
        *,
        workers: int = WORKERS,
        interpreter: Interpreter | None = None,
    ) -> dict[str, Any]:
        args = ["--events", str(events), "--warmup", str(WARMUP)]
        args += ["--window", str(WINDOW), "--batch", str(BATCH)]
        return self.measure(side, args, workers=workers, interpreter=interpreter)

    def paced(self, side: str, events: int, rate: float) -> dict[str, Any]:
        args = ["--events", str(events), "--warmup", str(WARMUP)]
        args += ["--window", str(WINDOW), "--batch", str(BATCH), "--rate", repr(rate)]
        return self.measure(side, args)


def _peer_rate(rounds: _Round, peer: Peer, events: int) -> float:
    """A peer's events per second, or NaN (and a word on stderr) when its
    environment cannot be made."""
    try:
        interpreter = peer_interpreter(peer)
    except RuntimeError as exc:
        print(f"redis: peer {peer.label} not measured: {exc}", file=sys.stderr)
        return math.nan
    rate: float = rounds.full_speed(peer.side, events, interpreter=interpreter)[
        "events_per_s"
    ]
    return rate


def measure(
    factory: LoopFactory, sizes: Sizes, library_first: bool
) -> dict[str, float]:
    """One round of the target (see the module's docstring)."""
    nan = math.nan
    has_library = library_available()
    with RedisServer() as server:
        rounds = _Round(server, _loop_name(factory))
        events = sizes.redis_events

        def library_run(workers: int) -> dict[str, Any] | None:
            if not has_library:
                return None
            return rounds.full_speed("library", events, workers=workers)

        floor, library = _pair(
            lambda: rounds.full_speed("floor", events),
            lambda: library_run(WORKERS),
            library_first,
        )
        rate = HALF * floor["events_per_s"]
        half = sizes.redis_half_load_events
        floor_half, library_half = _pair(
            lambda: rounds.paced("floor", half, rate),
            lambda: rounds.paced("library", half, rate) if has_library else None,
            library_first,
        )
        scaling = {w: library_run(w) for w in SCALING if w != WORKERS}
        scaling[WORKERS] = library
        figures: dict[str, float] = {
            "floor_events_per_s": floor["events_per_s"],
            "library_events_per_s": library["events_per_s"] if library else nan,
            "ratio": library["events_per_s"] / floor["events_per_s"]
            if library
            else nan,
            "floor_p50_ms": floor["p50_ms"],
            "library_p50_ms": library["p50_ms"] if library else nan,
            "half_load_events_per_s": rate,
            "floor_half_p50_ms": floor_half["p50_ms"],
            "library_half_p50_ms": library_half["p50_ms"] if library_half else nan,
            "half_p50_extra_ms": (
                library_half["p50_ms"] - floor_half["p50_ms"] if library_half else nan
            ),
        }
        for workers in SCALING:
            run = scaling[workers]
            figures[f"library_{workers}w_events_per_s"] = (
                run["events_per_s"] if run else nan
            )
        peer_events = sizes.redis_peer_events
        figures["peers_measured"] = 1.0 if peer_events > 0 else 0.0
        if peer_events > 0:
            for peer in PEERS:
                peer_rate = _peer_rate(rounds, peer, peer_events)
                figures[f"{peer.side}_events_per_s"] = peer_rate
                figures[f"vs_{peer.side}"] = figures["library_events_per_s"] / peer_rate
        figures["redis_version"] = version_number(server.version)
    return figures


def judge(medians: dict[str, float]) -> Verdict:
    """Met when the library makes at least half the floor's throughput, its
    p50 at half load is at most 2 ms over the floor's, and (when they were
    measured) it makes at least 3x each peer's throughput."""
    from ..targets import Verdict

    server = f"Redis {version_text(medians['redis_version'])}"
    ratio = medians["ratio"]
    if math.isnan(ratio):
        floor = medians["floor_events_per_s"]
        return Verdict(
            ratio,
            "library: not measured (event_collector.redis cannot be imported); "
            f"floor {floor:,.0f} events/s; {server}",
            False,
        )
    extra = medians["half_p50_extra_ms"]
    parts = [f"{ratio:.2f}x floor", f"p50 at half load {extra:+.2f} ms"]
    met = ratio >= RATIO_GOAL and extra <= HALF_P50_GOAL_MS
    if medians.get("peers_measured", 0.0) > 0:
        for peer in PEERS:
            times = medians[f"vs_{peer.side}"]
            if math.isnan(times):
                parts.append(f"{peer.label}: not measured")
                met = False
            else:
                parts.append(f"{times:.1f}x {peer.label}")
                met = met and times >= PEER_GOAL
    else:
        parts.append("peers: not measured in quick mode")
    return Verdict(ratio, "; ".join(parts) + f"; {server}", met)
