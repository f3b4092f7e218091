"""``RedisTransport`` and ``RedisPublisher``: the public face of the Redis
Streams transport."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from .._config import is_finite
from .._eventqueue import NOT_STARTED, EventQueue
from .._log import GuardedLogger, Logger, get_logger
from .._models import DEFAULT_PRIORITY, CollectorEvent, Metrics, QueueType
from ..exceptions import ConfigError, QueueClosed
from ._codec import Codec, JsonCodec
from ._common import DEFAULT_BANDS, Config, Keys, consumer_name
from ._inbox import Inbox
from ._publisher import RedisPublisher
from ._sender import Sender
from ._worker import Worker

__all__ = ["RedisTransport"]


def _positive(name: str, value: Any, *, integer: bool = False) -> None:
    if integer:
        ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    else:
        ok = (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and is_finite(value)
            and value > 0
        )
    if not ok:
        kind = "an int" if integer else "a number"
        raise ConfigError(f"{name} must be {kind} > 0 (got {name}={value!r})")


class RedisTransport:
    """Events carried by a Redis stream, handled by a fleet of workers.

    A process that runs a :class:`~event_collector.queue.CollectorQueue` on
    this transport is a *worker*: its consumers take events from the stream
    (only as many as are idle), handle them, and send each answer back to
    its publisher with the acknowledgement, in one transaction. It may
    publish too (``queue.get_publisher().send(...)`` goes through Redis).
    A process that only publishes uses :meth:`publisher`.

    :param url: the Redis URL (``redis://``, ``rediss://`` for TLS, with a
        user and password for an ACL user: they pass through to redis-py).
    :param stream: the work stream's key, exactly as given. Every other key
        the transport keeps starts with ``<stream>:`` (see the scaling-out
        guide for the list and the ACL they need).
    :param group: the consumer group the workers share.
    :param visibility_timeout: seconds after which the events of a worker
        that stopped renewing its leases (it died) are handled by another.
        A live worker renews them, however long its handlers run.
    :param max_deliveries: deliveries of an event, at most; an event whose
        workers died that many times goes to the dead-letter stream and its
        publisher gets ``Error(DeliveryExhausted)``.
    :param dead_letter_stream: where dead letters go; ``"<stream>:dead"`` by
        default.
    :param max_payload_bytes: the largest encoded payload (and result) the
        transport carries; a larger payload is refused at ``send``, a larger
        result is answered with an ``Error`` saying so.
    :param codec: how values are encoded (a :class:`~event_collector.redis.Codec`);
        :class:`~event_collector.redis.JsonCodec` by default. Never pickle.
    :param maxsize: the bound on the stream's backlog (waiting and pending
        events), 0 for none: ``send`` waits for room and ``send_nowait``
        raises ``QueueFull``. A queue's own ``maxsize``, when given, must be
        the same.
    :param priority_bands: on a ``QueueType.PRIORITY`` queue, the upper
        bounds of the priority bands (a stream per band, the lowest numbers
        read first; priorities above the last bound go to a last band).
    :param reply_ttl: seconds a reply stream outlives its publisher.
    :param heartbeat_interval: seconds between lease renewals; by default a
        third of ``visibility_timeout``, at most one second.
    :param client_options: more keyword arguments for
        ``redis.asyncio.Redis.from_url`` (``ssl_ca_certs``, say).
    :param logger: where the transport logs (a structlog logger); the
        ``event_collector`` logger by default.

    Starting waits for Redis (retrying with backoff, logging each failure)
    rather than failing while it is unreachable; a refusal (a missing ACL
    right, a wrong password) is raised at once.
    """

    def __init__(
        self,
        url: str,
        *,
        stream: str,
        group: str = "event-collector",
        visibility_timeout: float = 30.0,
        max_deliveries: int = 5,
        dead_letter_stream: str | None = None,
        max_payload_bytes: int = 1_000_000,
        codec: Codec | None = None,
        maxsize: int = 0,
        priority_bands: Sequence[int] = DEFAULT_BANDS,
        reply_ttl: float = 300.0,
        heartbeat_interval: float | None = None,
        client_options: dict[str, Any] | None = None,
        logger: Logger | None = None,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ConfigError(
                f"url must be a redis://, rediss:// or unix:// URL (got url={url!r})"
            )
        for name, value in (("stream", stream), ("group", group)):
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{name} must be a non-empty string (got {value!r})")
        _positive("visibility_timeout", visibility_timeout)
        _positive("max_deliveries", max_deliveries, integer=True)
        _positive("max_payload_bytes", max_payload_bytes, integer=True)
        _positive("reply_ttl", reply_ttl)
        if heartbeat_interval is None:
            heartbeat_interval = min(1.0, visibility_timeout / 3)
        else:
            _positive("heartbeat_interval", heartbeat_interval)
            if heartbeat_interval >= visibility_timeout / 2:
                raise ConfigError(
                    "heartbeat_interval must be under half the visibility_timeout "
                    f"(got heartbeat_interval={heartbeat_interval!r}, "
                    f"visibility_timeout={visibility_timeout!r})"
                )
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 0:
            raise ConfigError(f"maxsize must be an int >= 0 (got maxsize={maxsize!r})")
        bands = tuple(priority_bands)
        if (
            not bands
            or any(isinstance(b, bool) or not isinstance(b, int) for b in bands)
            or list(bands) != sorted(set(bands))
        ):
            raise ConfigError(
                "priority_bands must be increasing ints "
                f"(got priority_bands={priority_bands!r})"
            )
        if dead_letter_stream is not None and (
            not isinstance(dead_letter_stream, str) or not dead_letter_stream
        ):
            raise ConfigError(
                "dead_letter_stream must be a non-empty string or None "
                f"(got {dead_letter_stream!r})"
            )
        codec = JsonCodec() if codec is None else codec
        if not isinstance(codec, Codec):
            raise ConfigError(
                "codec must have a name, encode and decode "
                f"(a JsonCodec, say) (got codec={codec!r})"
            )
        self.url = url
        self.stream = stream
        self.group = group
        self.visibility_timeout = float(visibility_timeout)
        self.max_deliveries = max_deliveries
        self.dead_letter_stream = dead_letter_stream or f"{stream}:dead"
        self.max_payload_bytes = max_payload_bytes
        self.codec = codec
        self.maxsize = maxsize
        self.priority_bands = bands
        self.reply_ttl = float(reply_ttl)
        self.heartbeat_interval = float(heartbeat_interval)
        self._client_options = dict(client_options or {})
        self._log: Logger = GuardedLogger(logger or get_logger(transport="redis"))
        self._queue_type = QueueType.FIFO
        self._inbox: Inbox | None = None
        self._sender: Sender | None = None
        self._worker: Worker | None = None
        self._closed: str | None = NOT_STARTED
        self._read_metrics: Callable[[], Metrics] | None = None
        self._pool_limits: tuple[int, int] | None = None
        self.consumer = consumer_name()
        """This process's name in the consumer group."""

    def _config(self, queue_type: QueueType) -> Config:
        keys = Keys.make(
            self.stream,
            self.group,
            self.dead_letter_stream,
            queue_type,
            self.priority_bands,
        )
        return Config(
            url=self.url,
            keys=keys,
            codec=self.codec,
            visibility_timeout=self.visibility_timeout,
            max_deliveries=self.max_deliveries,
            max_payload_bytes=self.max_payload_bytes,
            maxsize=self.maxsize,
            reply_ttl=self.reply_ttl,
            heartbeat_interval=self.heartbeat_interval,
            reclaim_interval=max(0.1, min(0.5, self.visibility_timeout / 4)),
            client_options=self._client_options,
        )

    # -- publish-only processes ---------------------------------------------------

    def publisher(
        self,
        *,
        queue_type: QueueType = QueueType.FIFO,
        default_priority: int = DEFAULT_PRIORITY,
    ) -> RedisPublisher:
        """A publisher for a process that sends events and runs no queue
        (a web front end): use it with ``async with``."""
        if queue_type is QueueType.LIFO:
            raise ConfigError(_NO_LIFO)
        return RedisPublisher(
            self._config(queue_type),
            default_priority=default_priority,
            log=self._log,
        )

    # -- the seam ------------------------------------------------------------------

    def attach(self, *, queue_type: QueueType, maxsize: int) -> EventQueue:
        """Take a queue's settings; ``ConfigError`` for LIFO, for a second
        queue, or for a ``maxsize`` other than the transport's."""
        if self._inbox is not None:
            raise ConfigError(
                "transport: a RedisTransport serves one CollectorQueue; "
                "make one per queue"
            )
        if queue_type is QueueType.LIFO:
            raise ConfigError(_NO_LIFO)
        if maxsize and self.maxsize and maxsize != self.maxsize:
            raise ConfigError(
                f"maxsize: the queue's ({maxsize}) and the RedisTransport's "
                f"({self.maxsize}) differ; give it to one of them"
            )
        if maxsize:
            self.maxsize = maxsize
        self._queue_type = queue_type
        inbox = self._inbox = Inbox()
        return inbox

    async def put(self, event: CollectorEvent[Any]) -> None:
        """Write ``event`` to the stream; return once Redis has it."""
        sender = self._running_sender()
        band, data = sender.entry(event)
        await sender.submit(event, band, data)

    def put_nowait(self, event: CollectorEvent[Any]) -> None:
        """Queue ``event`` for the next write, without waiting for Redis."""
        sender = self._running_sender()
        band, data = sender.entry(event)
        sender.submit_nowait(event, band, data)

    def _running_sender(self) -> Sender:
        if self._closed is not None or self._sender is None:
            raise QueueClosed(self._closed or NOT_STARTED)
        return self._sender

    @property
    def settle(self) -> Callable[[CollectorEvent[Any]], None]:
        """Acknowledge an answered event and send its answer back."""
        return self._settle

    def _settle(self, event: CollectorEvent[Any]) -> None:
        worker = self._worker
        if worker is not None:
            worker.settle(event)

    def backlog(self) -> int:
        """Events here waiting for a consumer, plus this worker's share of
        those waiting in the stream."""
        inbox, worker = self._inbox, self._worker
        if inbox is None:
            return 0
        return inbox.qsize() + (0 if worker is None else worker.remote_share)

    @property
    def closed_reason(self) -> str | None:
        """Why sends are refused, or ``None`` while they are accepted."""
        return self._closed

    async def start(self) -> None:
        """Connect, create the group if needed, start fetching."""
        if self._inbox is None:
            raise RuntimeError("the RedisTransport is not attached to a queue")
        config = self._config(self._queue_type)
        loop = asyncio.get_running_loop()
        sender = Sender(config, log=self._log, clock=loop.time)
        worker = Worker(
            config, self._inbox, consumer=self.consumer, log=self._log, clock=loop.time
        )
        await sender.start()
        try:
            await worker.start()
        except BaseException:
            await sender.stop()
            raise
        worker.metrics = self._read_metrics
        worker.pool_limits = self._pool_limits
        self._sender, self._worker = sender, worker
        self._inbox.open()
        self._closed = None
        self._log.info(
            "redis worker ready",
            stream=self.stream,
            group=self.group,
            consumer=self.consumer,
        )

    def close(self, reason: str) -> None:
        """Refuse sends and stop fetching."""
        self._closed = reason
        if self._inbox is not None:
            self._inbox.close(reason)
        if self._sender is not None:
            self._sender.close(reason)
        if self._worker is not None:
            self._worker.close()

    def hand_back(self) -> list[CollectorEvent[Any]]:
        """Give what no consumer started back to the group (another worker
        takes it at once); none of it is answered here."""
        if self._worker is not None:
            self._worker.hand_back()
        return []

    async def stop(self) -> None:
        """Write the last acknowledgements, hand back, leave the group."""
        worker, sender = self._worker, self._sender
        if worker is not None:
            await worker.stop()
        if sender is not None:
            await sender.stop()
        self._worker = self._sender = None

    async def wait_answered(self) -> None:
        """Wait until every event this process sent is answered (what the
        queue publisher's ``wait`` waits for on Redis)."""
        sender = self._sender
        if sender is not None:
            await sender.wait_idle(None)

    def observe_metrics(
        self, read: Callable[[], Metrics], *, limits: tuple[int, int] | None = None
    ) -> None:
        """Called by the queue with a way to read its metrics and its pool's
        ``(min, max)`` consumers: the worker reports them to the fleet view
        (``event-collector top``, the desired-worker count)."""
        self._read_metrics = read
        self._pool_limits = limits
        if self._worker is not None:
            self._worker.metrics = read
            self._worker.pool_limits = limits

    def __repr__(self) -> str:
        return f"<RedisTransport {self.url_for_display()} stream={self.stream!r}>"

    def url_for_display(self) -> str:
        """The URL without its password."""
        head, sep, tail = self.url.partition("@")
        if not sep:
            return self.url
        scheme, _, user = head.partition("://")
        user = user.split(":", 1)[0]
        return f"{scheme}://{user}:***@{tail}"


_NO_LIFO = (
    "queue_type: LIFO is not offered on Redis (a stream is read in order); "
    "use FIFO, or PRIORITY for priority bands"
)
