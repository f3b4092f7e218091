"""The fleet as Redis sees it: one read of a work stream's backlog, pending
list and dead letters, and of the figures its live workers report.

:func:`read_fleet` returns a :class:`FleetSnapshot`, which
``event-collector top`` draws and :func:`event_collector.prometheus.instrument_fleet`
exports. It reads with redis-py's synchronous client (two round trips), so
that a Prometheus scrape thread or a terminal loop can call it without an
event loop.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any

import redis

from .._models import QueueType
from ._common import DEFAULT_BANDS, Keys, is_nogroup

__all__ = ["FleetSnapshot", "WorkerSnapshot", "desired_workers", "read_fleet"]


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerSnapshot:
    """What one live worker last reported (every half second; a worker that
    stops reporting drops out of the fleet within three seconds)."""

    consumer: str
    """The worker's consumer name in the group (host:pid:random)."""
    consumers: int
    """Consumers in its pool."""
    busy: int
    """Consumers running a handler."""
    qsize: int
    """Events waiting for one of its consumers (its inbox, and its share of
    the stream's lag)."""
    load: float
    """``(qsize + busy) / consumers``."""
    held: int
    """Entries it holds: fetched and not yet acknowledged."""
    handled: int
    """Events it has answered since it started."""
    reclaimed: int
    """Entries it took over from workers that died."""
    dead_lettered: int
    """Entries it moved to the dead-letter stream."""
    arrival_rate: float
    """Events its queue took in, per second (recent window)."""
    departure_rate: float
    """Events it answered, per second (recent window)."""
    service_time: float
    """Mean handler time of its recent events, in seconds."""
    wait_time: float
    """Mean time from send to answer of its recent events, in seconds."""
    min_consumers: int | None
    """Its pool's fewest consumers, if it reports them."""
    max_consumers: int | None
    """Its pool's most consumers, if it reports them: its capacity."""
    reported_at: float
    """When it reported these figures, in seconds since the epoch (its own
    clock)."""


@dataclasses.dataclass(frozen=True, slots=True)
class FleetSnapshot:
    """A work stream and its workers at one moment.

    The stream figures add up the work stream's bands (a FIFO stream, or
    the bands of a priority queue): ``backlog`` is what the streams hold
    (entries are deleted when acknowledged), ``pending`` what workers have
    fetched and not acknowledged, ``lag`` what no worker has fetched yet.
    """

    stream: str
    """The work stream's key."""
    group: str
    """The consumer group."""
    taken_at: float
    """When the snapshot was read, in seconds since the epoch."""
    workers: tuple[WorkerSnapshot, ...]
    """The live workers, by consumer name."""
    backlog: int
    """Entries in the work stream(s): undelivered plus pending (XLEN)."""
    pending: int
    """Entries delivered to a worker and not yet acknowledged (XPENDING)."""
    lag: int
    """Entries no worker has fetched yet: ``backlog - pending``."""
    dead_letters: int
    """Entries in the dead-letter stream (XLEN)."""
    capacity_hint: int | None = None
    """The per-worker capacity to assume for workers that do not report
    their ``max_consumers``."""

    @property
    def arrival_rate(self) -> float:
        """Events the workers take in, per second: the sum over workers."""
        return math.fsum(w.arrival_rate for w in self.workers)

    @property
    def departure_rate(self) -> float:
        """Events the workers answer, per second: the sum over workers."""
        return math.fsum(w.departure_rate for w in self.workers)

    @property
    def service_time(self) -> float:
        """Mean handler time over the fleet, in seconds: the workers' means
        weighted by their departure rates (a plain mean of those that
        measured one while no worker has a rate yet)."""
        weights = [(w.departure_rate, w.service_time) for w in self.workers]
        total = math.fsum(rate for rate, _ in weights)
        if total > 0:
            return math.fsum(rate * t for rate, t in weights) / total
        measured = [t for _, t in weights if t > 0]
        return math.fsum(measured) / len(measured) if measured else 0.0

    @property
    def capacity(self) -> float | None:
        """Consumers one worker can run: the mean ``max_consumers`` the
        workers report; else :attr:`capacity_hint`; else their mean pool
        size (a floor, which overstates the workers needed rather than
        understating them); ``None`` with no worker and no hint."""
        reported = [w.max_consumers for w in self.workers if w.max_consumers]
        if reported:
            return sum(reported) / len(reported)
        if self.capacity_hint:
            return float(self.capacity_hint)
        sizes = [w.consumers for w in self.workers if w.consumers > 0]
        return sum(sizes) / len(sizes) if sizes else None

    @property
    def desired_workers(self) -> int:
        """Workers the current load needs (see :func:`desired_workers`)."""
        return desired_workers(
            self.arrival_rate, self.service_time, self.capacity, self.backlog
        )

    def worker(self, consumer: str) -> WorkerSnapshot:
        """The worker of that consumer name.

        :raises KeyError: no live worker has that name.
        """
        for w in self.workers:
            if w.consumer == consumer:
                return w
        raise KeyError(consumer)


def desired_workers(
    arrival_rate: float, service_time: float, capacity: float | None, backlog: int
) -> int:
    """The workers a load needs, by Little's law: ``arrival_rate`` (events/s)
    x ``service_time`` (seconds) is the number of events in service at
    once; divided by ``capacity`` (consumers per worker) and rounded up.

    At least 1 while ``backlog`` (entries waiting or pending) is not 0, so
    that a stream with work and no worker asks for one; 0 when there is
    neither load nor backlog.
    """
    needed = 0
    if capacity and capacity > 0 and arrival_rate > 0 and service_time > 0:
        # A hair under an integer is that integer: rates are rounded floats.
        needed = math.ceil(arrival_rate * service_time / capacity - 1e-9)
    if backlog > 0:
        needed = max(needed, 1)
    return needed


def _number(fields: dict[bytes, bytes], name: bytes, kind: type[Any]) -> Any:
    raw = fields.get(name)
    if raw is None:
        return None
    try:
        return kind(float(raw)) if kind is int else kind(raw)
    except ValueError:
        return None


def _worker(name: str, fields: dict[bytes, bytes]) -> WorkerSnapshot:
    def i(key: str) -> int:
        value = _number(fields, key.encode(), int)
        return 0 if value is None else int(value)

    def f(key: str) -> float:
        value = _number(fields, key.encode(), float)
        return 0.0 if value is None else float(value)

    low = _number(fields, b"min_consumers", int)
    high = _number(fields, b"max_consumers", int)
    return WorkerSnapshot(
        consumer=name,
        consumers=i("consumers"),
        busy=i("busy"),
        qsize=i("qsize"),
        load=f("load"),
        held=i("held"),
        handled=i("handled"),
        reclaimed=i("reclaimed"),
        dead_lettered=i("dead_lettered"),
        arrival_rate=f("arrival_rate"),
        departure_rate=f("departure_rate"),
        service_time=f("service_time"),
        wait_time=f("wait_time"),
        min_consumers=low,
        max_consumers=high,
        reported_at=f("at") / 1000,
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_fleet(
    client: redis.Redis | str,
    stream: str,
    *,
    group: str = "event-collector",
    dead_letter_stream: str | None = None,
    priority_bands: Sequence[int] = DEFAULT_BANDS,
    capacity: int | None = None,
) -> FleetSnapshot:
    """Read a work stream's figures and its live workers' from Redis.

    The stream figures count both layouts a queue may use: the stream
    itself (FIFO) and its priority bands (``<stream>:p<bound>``,
    ``<stream>:plast``); whichever does not exist counts 0.

    :param client: a synchronous ``redis.Redis`` client, or a Redis URL (a
        client is then made for this call and closed after it).
    :param stream: the work stream's key, as the workers were given it.
    :param group: the workers' consumer group.
    :param dead_letter_stream: where the dead letters go;
        ``"<stream>:dead"`` by default.
    :param priority_bands: the bands' upper bounds, as the workers were
        given them (the default bands by default).
    :param capacity: consumers per worker, for workers that do not report
        their ``max_consumers`` (see :attr:`FleetSnapshot.capacity`).
    :raises redis.exceptions.RedisError: Redis could not be read.
    """
    if isinstance(client, str):
        own = redis.Redis.from_url(
            client, socket_connect_timeout=2.0, socket_timeout=5.0
        )
        try:
            return read_fleet(
                own,
                stream,
                group=group,
                dead_letter_stream=dead_letter_stream,
                priority_bands=priority_bands,
                capacity=capacity,
            )
        finally:
            own.close()
    fifo = Keys.make(stream, group, dead_letter_stream, QueueType.FIFO, ())
    bands = (
        fifo.bands
        + Keys.make(stream, group, None, QueueType.PRIORITY, priority_bands).bands
    )
    taken_at = time.time()
    pipe: Any = client.pipeline(transaction=False)
    for band in bands:
        pipe.xlen(band)
        pipe.xpending(band, group)
    pipe.xlen(fifo.dead)
    pipe.zrange(fifo.workers, 0, -1)
    replies = pipe.execute(raise_on_error=False)
    backlog = pending = lag = 0
    for index in range(len(bands)):
        length, summary = replies[2 * index], replies[2 * index + 1]
        if isinstance(length, Exception):
            raise length
        held = 0
        if isinstance(summary, dict):
            held = int(summary.get("pending") or 0)
        elif isinstance(summary, Exception) and not is_nogroup(summary):
            raise summary  # NOGROUP: a band that was never made holds nothing
        backlog += int(length)
        pending += held
        lag += max(0, int(length) - held)
    dead, names_reply = replies[-2], replies[-1]
    for reply in (dead, names_reply):
        if isinstance(reply, Exception):
            raise reply
    names = sorted(_text(n) for n in names_reply)
    workers: list[WorkerSnapshot] = []
    if names:
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(fifo.worker(name))
        for name, fields in zip(names, pipe.execute(), strict=True):
            # A worker whose figures expired has stopped; the others drop it
            # from the set at their next report.
            if fields:
                workers.append(_worker(name, fields))
    return FleetSnapshot(
        stream=stream,
        group=group,
        taken_at=taken_at,
        workers=tuple(workers),
        backlog=backlog,
        pending=pending,
        lag=lag,
        dead_letters=int(dead),
        capacity_hint=capacity,
    )
