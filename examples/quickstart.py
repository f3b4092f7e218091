"""Quick start: a collector queue used as an async context manager.

Run it from the repository root with ``.venv/bin/python
examples/quickstart.py``. It starts a collector queue with one collector,
sends 100 payloads, waits for each result and prints it. The results go to
stdout; the queue's own log lines (INFO and above) go to stderr, as the
structlog configuration at the bottom says. A handler's exception would be
raised again by ``result.unwrap()`` and end the program with a traceback.
"""

import asyncio
import logging
import sys

import structlog

from event_collector import Collector, CollectorQueue, Context, Error, Ok, Payload


async def event_handler(payload: Payload[dict[str, str]], ctx: Context) -> str:
    """The application's handler: here, pretend to do some I/O."""
    await asyncio.sleep(0.01)
    return f"processed {payload.value['data']}"


async def run_collector_queue() -> None:
    collector = Collector("demo-collector", event_handler)
    collectors = [collector]
    min_consumers = 1
    max_consumers = 1000

    collector_queue = CollectorQueue(
        collectors,
        min_consumers=min_consumers,
        max_consumers=max_consumers,
    )

    async with collector_queue:
        publisher = collector_queue.get_publisher()
        collector_events = []
        for i in range(100):
            payload = {
                "data": f"payload-{i}",
            }
            event = await publisher.send(payload)
            collector_events.append(event)

        for event in collector_events:
            result_list = await event.wait()
            result = result_list.first()
            match result:
                case Error(_):
                    result.unwrap()
                case Ok(value):
                    print(value)


async def main() -> None:
    await run_collector_queue()


if __name__ == "__main__":
    # Logging belongs to the application: show the queue's INFO messages and
    # above on stderr, and drop its DEBUG chatter about consumers.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    asyncio.run(main())
    sys.exit(0)
