"""Reclaim after SIGKILL: how long a killed worker's events wait before
another worker has answered them.

    python -m benchmarks.redis_bench.reclaim [--kills 5] [--visibility-timeout 2]

On a ``redis-server`` of its own (loopback, a free port), two library
worker processes serve a stream whose handler takes ``--handler-ms``
(20 ms) and answers with the attempt it ran as; one publisher process
sends at ``--rate`` (500 events/s), so that each worker holds some events
at any moment. Every ``visibility_timeout + 3`` seconds the older worker
is killed with ``SIGKILL`` and a new one started in its place. The
publisher waits for every answer (60 s at most each) and reports, for
each event that ran more than once, when its answer came; the delay of a
reclaim is that moment less the kill before it. Both times are read with
``time.monotonic`` in their own processes: on Linux that is one clock for
the whole machine.

The goal (issue 12): every reclaimed event answered within
``visibility_timeout`` + 2 s of the kill, no event lost. The figures are
printed as a table, and written as JSON with ``--json FILE``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from ._processes import Interpreter, MeasurementFailed, Process
from ._server import RedisServer

__all__ = ["main", "measure"]

_READY_SECONDS = 60.0
_SETTLE_SECONDS = 1.5  # of load before the first kill


def _worker(own: Interpreter, common: list[str], k: int, options: list[str]) -> Process:
    return Process(
        own,
        ["reclaim", "worker", *common, "--consumer", f"w{k}", *options],
        f"reclaim worker {k}",
    )


def measure(
    *,
    kills: int,
    visibility_timeout: float,
    rate: float,
    handler_ms: float,
    loop: str = "asyncio",
) -> dict[str, Any]:
    """Run one measurement (see the module's docstring); return its
    figures: the delay of every reclaim (seconds, per kill), and the
    counts of events sent, lost and answered wrongly."""
    every = visibility_timeout + 3.0
    seconds = _SETTLE_SECONDS + kills * every
    own = Interpreter(sys.executable)
    options = ["--visibility-timeout", repr(visibility_timeout)]
    with RedisServer() as server:
        common = ["--url", server.url, "--stream", "reclaim", "--loop", loop]
        workers = [
            _worker(own, common, k, [*options, "--handler-ms", repr(handler_ms)])
            for k in range(2)
        ]
        publisher = Process(
            own,
            [
                "reclaim",
                "publisher",
                *common,
                *options,
                "--rate",
                repr(rate),
                "--seconds",
                repr(seconds),
                "--time-limit",
                repr(seconds + 120.0),
            ],
            "reclaim publisher",
        )
        processes = [*workers, publisher]
        try:
            deadline = time.monotonic() + _READY_SECONDS
            for process in processes:
                process.expect("ready", deadline)
            publisher.say("go")
            went = time.monotonic()
            killed_at: list[float] = []
            for k in range(kills):
                time.sleep(
                    max(0.0, went + _SETTLE_SECONDS + k * every - time.monotonic())
                )
                victim = workers.pop(0)
                killed_at.append(time.monotonic())
                victim.stop()  # SIGKILL
                fresh = _worker(
                    own, common, 2 + k, [*options, "--handler-ms", repr(handler_ms)]
                )
                processes.append(fresh)
                fresh.expect("ready", time.monotonic() + _READY_SECONDS)
                workers.append(fresh)
            report = json.loads(
                publisher.expect(
                    "result", time.monotonic() + seconds + 150.0, watch=workers
                )
            )
        finally:
            for process in processes:
                process.stop()
    delays: list[list[float]] = [[] for _ in killed_at]
    for answered_at, _attempt in report["redelivered"]:
        before = [i for i, at in enumerate(killed_at) if at < answered_at]
        if before:
            delays[before[-1]].append(answered_at - killed_at[before[-1]])
    return {
        "kills": kills,
        "visibility_timeout_s": visibility_timeout,
        "rate": rate,
        "handler_ms": handler_ms,
        "sent": report["sent"],
        "lost": report["lost"],
        "errors": report["error_count"],
        "reclaimed": sum(len(d) for d in delays),
        "delays_s": delays,
    }


def summary(figures: dict[str, Any]) -> tuple[str, bool]:
    """A table of the figures, and whether the goal was met."""
    goal = figures["visibility_timeout_s"] + 2.0
    rows = ["| kill | reclaimed events | first answered (s) | last answered (s) |"]
    rows.append("| ---: | ---: | ---: | ---: |")
    worst = 0.0
    every_kill_reclaimed = True
    for i, delays in enumerate(figures["delays_s"], 1):
        if not delays:
            every_kill_reclaimed = False
            rows.append(f"| {i} | 0 | | |")
            continue
        worst = max(worst, max(delays))
        rows.append(f"| {i} | {len(delays)} | {min(delays):.2f} | {max(delays):.2f} |")
    everything = [d for delays in figures["delays_s"] for d in delays]
    median = statistics.median(everything) if everything else float("nan")
    met = (
        every_kill_reclaimed
        and worst <= goal
        and figures["lost"] == 0
        and figures["errors"] == 0
    )
    rows.append("")
    rows.append(
        f"visibility_timeout {figures['visibility_timeout_s']:g} s; "
        f"{figures['reclaimed']} events reclaimed after {figures['kills']} kills, "
        f"median {median:.2f} s, worst {worst:.2f} s after the kill "
        f"(goal <= {goal:g} s); {figures['sent']} sent, {figures['lost']} lost, "
        f"{figures['errors']} answered wrongly: goal {'met' if met else 'NOT met'}"
    )
    return "\n".join(rows), met


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.redis_bench.reclaim")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--visibility-timeout", type=float, default=2.0)
    parser.add_argument("--rate", type=float, default=500.0, help="events/s")
    parser.add_argument("--handler-ms", type=float, default=20.0)
    parser.add_argument("--loop", default="asyncio", choices=("asyncio", "uvloop"))
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    try:
        figures = measure(
            kills=args.kills,
            visibility_timeout=args.visibility_timeout,
            rate=args.rate,
            handler_ms=args.handler_ms,
            loop=args.loop,
        )
    except MeasurementFailed as exc:
        print(f"reclaim: measurement failed: {exc}", file=sys.stderr)
        return 2
    table, met = summary(figures)
    print(table)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=2)
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
