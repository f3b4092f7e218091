"""Ingest MQTT messages into a collector queue, and publish their results.

The program subscribes to a topic filter on an MQTT broker (QoS 1) and hands
every message to a collector queue: its JSON body and the topic it came on
(``collectors.py`` says what the collectors do with them). It logs each
failed result, a message that is not JSON, and every change of the
connection; with ``--results PREFIX`` it also publishes each event's
results to ``PREFIX/<the message's topic>``. When the broker goes away it
connects again, waiting longer after each failure (0.5 s doubling to 30 s).

SIGTERM or Ctrl-C stops it: it disconnects from the broker, which keeps the
session and queues what comes next for the same ``--client-id``; every
message it had received is handled and answered, the results are published,
and it exits with status 0.

Run it from the root of the checkout, with the README's ``.venv`` and a
broker on 127.0.0.1:1883::

    .venv/bin/pip install -e ".[mqtt]"
    .venv/bin/python -m examples.mqtt_ingest.app --results results

    mosquitto_pub -q 1 -t sensors/kitchen/reading -m '{"value": 21.5}'
    mosquitto_sub -t 'results/#' -v

Options, each also read from the environment: ``--broker`` (``MQTT_BROKER``,
``mqtt://[user:password@]host[:port]``), ``--topic`` (``MQTT_TOPIC``,
``sensors/+/reading``), ``--results`` (``MQTT_RESULTS``, none), ``--client-id``
(``MQTT_CLIENT_ID``), ``--store`` (``INGEST_STORE``, ``readings.jsonl``).
Log lines go to stderr, as JSON when stderr is not a terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt
import structlog

from event_collector import (
    CollectorEvent,
    CollectorQueue,
    Error,
    EventPublisher,
    Ok,
    QueueClosed,
)

from .collectors import make_collectors
from .connection import (
    KEEPALIVE,
    Inbox,
    Outbox,
    handing_to,
    intake,
    keep_connected,
    publish_results,
)

log = structlog.get_logger("mqtt_ingest")

FLUSH_TIMEOUT = 10.0
"""Seconds the shutdown waits for the last results to be published."""


@dataclass(frozen=True)
class Settings:
    """What to connect to, what to take and where to answer."""

    host: str
    port: int
    username: str | None
    password: str | None
    topic_filter: str
    results: str | None
    client_id: str
    store: Path


def parse_args(argv: list[str] | None = None) -> Settings:
    """The settings from the command line, with the environment's defaults."""
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default=env("MQTT_BROKER", "mqtt://127.0.0.1"))
    parser.add_argument("--topic", default=env("MQTT_TOPIC", "sensors/+/reading"))
    parser.add_argument("--results", default=env("MQTT_RESULTS"))
    parser.add_argument(
        "--client-id", default=env("MQTT_CLIENT_ID", "event-collector-ingest")
    )
    parser.add_argument("--store", default=env("INGEST_STORE", "readings.jsonl"))
    args = parser.parse_args(argv)
    url = urlsplit(args.broker)
    if url.scheme != "mqtt" or not url.hostname:
        parser.error(f"--broker must be mqtt://host[:port] (got {args.broker!r})")
    try:
        port = url.port or 1883
        aiomqtt.Wildcard(args.topic)
        if args.results is not None:
            aiomqtt.Topic(args.results)
    except ValueError as exc:
        parser.error(str(exc))
    return Settings(
        host=url.hostname,
        port=port,
        username=unquote(url.username) if url.username else None,
        password=unquote(url.password) if url.password else None,
        topic_filter=args.topic,
        results=args.results,
        client_id=args.client_id,
        store=Path(args.store),
    )


def describe(err: BaseException | str) -> str:
    """An error as one line: its class and message."""
    if isinstance(err, BaseException):
        return f"{type(err).__name__}: {err}"
    return err


class Ingest:
    """Turns MQTT messages into events, and their results into log lines and
    result messages.

    :param publisher: the queue's publisher.
    :param keys: the collectors' keys, in the queue's order (a broadcast
        event's results come in that order).
    :param results: the results' topic prefix, or None to publish none.
    :param outbox: where the result messages wait for the results link.
    :param answers: the task group that runs one answer task per event.
    """

    def __init__(
        self,
        publisher: EventPublisher,
        keys: list[str],
        results: str | None,
        outbox: Outbox,
        answers: asyncio.TaskGroup,
    ) -> None:
        self.inbox: Inbox = asyncio.Queue()
        """Every message the broker delivered and that is not yet an event."""
        self.counts = {"taken": 0, "malformed": 0, "failed": 0}
        """Messages made events, messages refused, failed results."""
        self._publisher = publisher
        self._keys = keys
        self._results = results
        self._outbox = outbox
        self._answers = answers

    async def pump(self) -> None:
        """Take the inbox's messages, one after another, for ever."""
        while True:
            message = await self.inbox.get()
            try:
                await self.take(message)
            finally:
                self.inbox.task_done()

    async def take(self, message: aiomqtt.Message) -> None:
        """Send one message to the queue; log it if it is not JSON."""
        topic = message.topic.value
        if self._results is not None and topic.startswith(f"{self._results}/"):
            return  # one of our results, which would come back for ever
        body = message.payload
        try:
            if not isinstance(body, bytes | bytearray):
                raise TypeError(f"a {type(body).__name__} payload")
            reading = json.loads(body)
        except (TypeError, ValueError) as exc:
            self.counts["malformed"] += 1
            log.warning(
                "malformed mqtt message",
                topic=topic,
                error=describe(exc),
                payload=repr(body)[:80],
            )
            return
        try:
            event = await self._publisher.send({"topic": topic, "reading": reading})
        except QueueClosed as exc:
            log.error("mqtt message not handled", topic=topic, error=str(exc))
            return
        self.counts["taken"] += 1
        self._answers.create_task(self.answer(event, topic))

    async def answer(self, event: CollectorEvent[Any], topic: str) -> None:
        """Wait for the event's results; log the failures, queue the message."""
        results = await event.wait()
        if len(results) == len(self._keys):
            labelled = dict(zip(self._keys, results, strict=True))
        else:
            # One error for the whole event (the shutdown cancelled it).
            labelled = {"event": results.first()}
        answer: dict[str, Any] = {}
        for key, result in labelled.items():
            match result:
                case Ok(value):
                    answer[key] = {"ok": True, "value": value}
                case Error(err):
                    self.counts["failed"] += 1
                    log.warning(
                        "collector failed",
                        topic=topic,
                        collector=key,
                        event_id=event.payload.event_id,
                        error=describe(err),
                    )
                    answer[key] = {"ok": False, "error": describe(err)}
        if self._results is not None:
            body = {
                "topic": topic,
                "event_id": event.payload.event_id,
                "results": answer,
            }
            message = json.dumps(body, default=str).encode()
            self._outbox.put_nowait((f"{self._results}/{topic}", message))


async def run(settings: Settings) -> dict[str, int]:
    """Ingest until SIGTERM or SIGINT; return the counts of what was done."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def broker(**options: Any) -> aiomqtt.Client:
        return aiomqtt.Client(
            settings.host,
            settings.port,
            username=settings.username,
            password=settings.password,
            keepalive=KEEPALIVE,
            **options,
        )

    collectors = make_collectors(settings.store)
    queue = CollectorQueue(collectors, max_consumers=100)
    outbox: Outbox = asyncio.Queue()
    results_link = None
    async with asyncio.TaskGroup() as links:
        if settings.results is not None:
            # A session of its own, which a stop does not need to keep.
            results_link = links.create_task(
                keep_connected(
                    "results",
                    partial(broker, identifier=f"{settings.client_id}-results"),
                    partial(publish_results, outbox=outbox),
                    None,
                )
            )
        # Leaving ``answers`` waits for every answer task; leaving ``queue``,
        # before it, answers every event.
        async with asyncio.TaskGroup() as answers, queue:
            keys = [collector.key for collector in queue.collectors]
            ingest = Ingest(
                queue.get_publisher(), keys, settings.results, outbox, answers
            )
            pump = answers.create_task(ingest.pump())
            # clean_session=False: the broker keeps the subscription and
            # queues the QoS 1 messages while this client is away.
            await keep_connected(
                "intake",
                partial(
                    broker,
                    identifier=settings.client_id,
                    clean_session=False,
                    queue_type=handing_to(ingest.inbox),
                ),
                partial(intake, topic_filter=settings.topic_filter, stop=stop),
                stop,
            )
            log.info("mqtt ingest draining", inbox=ingest.inbox.qsize())
            # Disconnected: nothing more comes in, and everything the broker
            # delivered is in the inbox. Make it all events.
            await ingest.inbox.join()
            pump.cancel()
        # The last results are in the outbox.
        if results_link is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_TIMEOUT):
                    await outbox.join()
            results_link.cancel()
    counts = {**ingest.counts, "unpublished": outbox.qsize()}
    if counts["unpublished"]:
        log.error("results not published", count=counts["unpublished"])
    log.info("mqtt ingest stopped", **counts)
    return counts


def configure_logging() -> None:
    """INFO and above on stderr: JSON lines for a log collector, or coloured
    lines for a person at a terminal.

    aiomqtt and paho-mqtt log through the standard library (WARNING and
    above are kept); their records are rendered the same way.
    """
    stamp: list[structlog.typing.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    render: list[structlog.typing.Processor]
    if sys.stderr.isatty():
        render = [structlog.dev.ConsoleRenderer()]
    else:
        render = [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ]
    structlog.configure(
        processors=[*stamp, *render],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=stamp,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *render,
            ],
        )
    )
    logging.basicConfig(level=logging.WARNING, handlers=[handler])


def main(argv: list[str] | None = None) -> None:
    """Parse the options, configure logging, ingest until stopped."""
    settings = parse_args(argv)
    configure_logging()
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
