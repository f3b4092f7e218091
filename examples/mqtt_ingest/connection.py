"""The ingester's connections to the broker: connecting again after a
failure, noticing a broken connection, the intake's subscription, and the
publication of the results."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aiomqtt
import structlog

log = structlog.get_logger("mqtt_ingest")

FIRST_RETRY = 0.5
"""Seconds to wait before connecting again after the first failure."""
LAST_RETRY = 30.0
"""The longest wait between two connection attempts, in seconds."""
KEEPALIVE = 30
"""Seconds of silence after which the client pings the broker; a broker
that does not answer the ping within as long again is given up."""

Inbox = asyncio.Queue[aiomqtt.Message]
"""The messages the broker delivered, not yet made events."""
Outbox = asyncio.Queue[tuple[str, bytes]]
"""The result messages (topic, body) waiting to be published."""


def handing_to(inbox: Inbox) -> type[Inbox]:
    """A message queue type for ``aiomqtt.Client`` that puts every message
    into ``inbox`` instead of keeping it.

    The client acknowledges a QoS 1 message as soon as it has read it, and
    its own queue goes with the connection: a message still in it when the
    connection ends would be acknowledged and never handled. ``inbox``
    outlives every connection, so the shutdown handles all it holds.
    """

    class HandOver(asyncio.Queue[aiomqtt.Message]):
        def put_nowait(self, item: aiomqtt.Message) -> None:
            inbox.put_nowait(item)

    return HandOver


async def stopped_within(stop: asyncio.Event | None, seconds: float) -> bool:
    """Wait ``seconds``, or less if ``stop`` is set; whether it is set."""
    if stop is None:
        await asyncio.sleep(seconds)
        return False
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


async def keep_connected(
    name: str,
    connect: Callable[[], aiomqtt.Client],
    work: Callable[[aiomqtt.Client], Awaitable[None]],
    stop: asyncio.Event | None,
) -> None:
    """Run ``work`` on a connection until it returns, connecting again after
    each failure.

    A connection that fails or breaks is logged, and the next attempt waits
    ``FIRST_RETRY`` seconds, twice as long after each further failure, at
    most ``LAST_RETRY``, with some jitter so that many clients of a broker
    that came back do not all connect at once. It returns when ``work``
    returns, or when ``stop`` is set during a wait.
    """
    delay = FIRST_RETRY
    while True:
        try:
            async with connect() as client:
                log.info("mqtt connected", link=name)
                delay = FIRST_RETRY
                await work(client)
                return
        except aiomqtt.MqttError as exc:
            wait = delay * random.uniform(0.5, 1.0)
            log.warning(
                "mqtt connection lost",
                link=name,
                error=str(exc),
                retry_in=round(wait, 2),
            )
        if await stopped_within(stop, wait):
            return
        delay = min(2 * delay, LAST_RETRY)


async def connection_lost(client: aiomqtt.Client) -> None:
    """Raise ``MqttError`` when the client's connection breaks.

    The client hands every message to the inbox (see :func:`handing_to`),
    so its message iterator yields nothing; it raises when the connection
    drops, which is what this waits for.
    """
    async for _ in client.messages:
        pass


async def while_connected(
    client: aiomqtt.Client, work: Coroutine[Any, Any, object]
) -> None:
    """Run ``work`` until it ends; cancel it and raise ``MqttError`` if the
    connection breaks first."""
    lost = asyncio.create_task(connection_lost(client))
    working = asyncio.create_task(work)
    try:
        await asyncio.wait({lost, working}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (working, lost):
            task.cancel()
        await asyncio.gather(working, lost, return_exceptions=True)
    for task in (working, lost):
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error


async def intake(
    client: aiomqtt.Client, topic_filter: str, stop: asyncio.Event
) -> None:
    """Subscribe, then wait until ``stop`` is set, or the connection breaks
    (``MqttError``)."""
    granted = await client.subscribe(topic_filter, qos=1)
    if any(getattr(code, "value", code) >= 0x80 for code in granted):
        raise aiomqtt.MqttError(f"the broker refused the subscription {topic_filter!r}")
    log.info("mqtt subscribed", topic_filter=topic_filter, qos=1)
    await while_connected(client, stop.wait())


async def publish_results(client: aiomqtt.Client, outbox: Outbox) -> None:
    """Publish the outbox's messages (QoS 1) until the connection breaks."""
    await while_connected(client, publish_each(client, outbox))


async def publish_each(client: aiomqtt.Client, outbox: Outbox) -> None:
    """Publish the outbox's messages, for ever; a message whose publication
    fails or is cancelled goes back to the outbox for the next connection."""
    while True:
        topic, body = await outbox.get()
        try:
            await client.publish(topic, body, qos=1)
        except BaseException:
            outbox.put_nowait((topic, body))
            raise
        finally:
            outbox.task_done()
