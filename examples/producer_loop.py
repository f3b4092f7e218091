"""A producer loop that stops cleanly on SIGTERM or Ctrl-C.

The program sends a reading to a collector queue every 10 ms and prints
each answer as it comes. A signal stops the producer, not the queue: the
loop ends after the send it is in, and leaving ``async with queue`` then
answers every event it sent. The program says how many it sent and exits
with status 0.

Run it from the repository root with ``.venv/bin/python
examples/producer_loop.py``, then press Ctrl-C or send it SIGTERM
(``kill PID``, with the process id it prints).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from event_collector import (
    Collector,
    CollectorEvent,
    CollectorQueue,
    Context,
    Error,
    Ok,
    Payload,
)

INTERVAL = 0.01
"""Seconds between two readings."""


async def double(payload: Payload[int], ctx: Context) -> int:
    # Slower than the readings come: a few events are always in flight.
    await asyncio.sleep(0.05)
    return payload.value * 2


async def print_answer(event: CollectorEvent[int]) -> None:
    match (await event).first():
        case Ok(value):
            print(f"{event.payload.value} -> {value}", flush=True)
        case Error(err):
            print(f"{event.payload.value} failed: {err}", flush=True)


async def next_reading(stop: asyncio.Event) -> None:
    """Wait for the next reading; return early once ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), INTERVAL)


async def main() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    sent = 0
    async with asyncio.TaskGroup() as printers:
        queue = CollectorQueue([Collector("double", double)], logging=False)
        async with queue:
            publisher = queue.get_publisher()
            print(f"running as process {os.getpid()}: Ctrl-C stops it", flush=True)
            while not stop.is_set():
                event = await publisher.send(sent)
                printers.create_task(print_answer(event))
                sent += 1
                await next_reading(stop)
        # Leaving ``async with queue`` drained it: every event is answered.
    print(f"stopped after sending {sent} events", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
