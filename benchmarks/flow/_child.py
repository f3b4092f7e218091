"""One side of the ``flow`` target's first part, in a process of its own.

Run by path (``python benchmarks/flow/_child.py``), not as a module of the
``benchmarks`` package, so that it imports nothing but ``event_collector``:
whichever the ``PYTHONPATH`` it is given names, this checkout's or the code
before flow control. It measures what :func:`benchmarks.library.library_throughput`
measures, with the public API both versions share: one run for each line
it reads, so that the parent can alternate the runs of two such processes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import event_collector
from event_collector import Collector, CollectorQueue, Ok


async def _trivial(payload: Any, ctx: Any) -> Ok[int]:
    return Ok(1)


async def _throughput(count: int) -> tuple[float, float]:
    """Wall and CPU seconds to send ``count`` events to one consumer
    running a trivial handler and await every answer."""
    queue = CollectorQueue(
        [Collector("bench", _trivial)],
        min_consumers=1,
        max_consumers=1,
        autoscale=False,
        logging=False,
    )
    async with queue:
        send = queue.get_publisher().send
        wall, cpu = time.perf_counter(), time.process_time()
        events = [await send(i) for i in range(count)]
        for event in events:
            await event.wait()
        return time.perf_counter() - wall, time.process_time() - cpu


def _loop_factory(name: str) -> Any:
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def main() -> None:
    """Say ``ready`` once warm, then measure a run for each line read from
    stdin, printing a JSON line for each, until stdin ends."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    factory = _loop_factory(args.loop)

    def measure() -> tuple[float, float]:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(_throughput(args.events))

    measure()  # a warm-up run, not reported
    print(json.dumps({"ready": True, "module": event_collector.__file__}), flush=True)
    for _ in sys.stdin:
        wall, cpu = measure()
        figures = {
            "events_per_s": args.events / wall,
            "cpu_events_per_s": args.events / cpu,
        }
        print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
