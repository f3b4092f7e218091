"""Prometheus metrics of a Redis stream and its workers, read from Redis at
each scrape: :func:`instrument_fleet`, re-exported by
:mod:`event_collector.prometheus`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from ._prometheus_registry import METRIC_PREFIX, Kind, RegistryExporter, register

if TYPE_CHECKING:
    import redis
    from prometheus_client.metrics_core import Metric

    from .redis import RedisTransport
    from .redis._fleet import FleetSnapshot

__all__ = ["FleetCollector", "instrument_fleet"]


# (metric name without prefix, help text, FleetSnapshot attribute)
_FLEET_GAUGES: tuple[tuple[str, str, str], ...] = (
    (
        "stream_backlog",
        "Entries in the work stream: not yet delivered plus pending (XLEN).",
        "backlog",
    ),
    (
        "stream_pending",
        "Entries delivered to a worker and not yet acknowledged (XPENDING).",
        "pending",
    ),
    ("stream_lag", "Entries no worker has fetched yet: backlog - pending.", "lag"),
    ("stream_dead_letters", "Entries in the dead-letter stream.", "dead_letters"),
    ("fleet_workers", "Live workers reporting on the stream.", "worker_count"),
    (
        "fleet_arrival_rate",
        "Events the workers take in per second, summed over the workers.",
        "arrival_rate",
    ),
    (
        "fleet_departure_rate",
        "Events the workers answer per second, summed over the workers.",
        "departure_rate",
    ),
    (
        "fleet_mean_service_time_seconds",
        "Mean handler time over the fleet (weighted by departure rate), seconds.",
        "service_time",
    ),
    (
        "fleet_desired_workers",
        "Workers the load needs by Little's law: arrival rate x service time / "
        "consumers per worker, rounded up; at least 1 while the stream has a "
        "backlog.",
        "desired_workers",
    ),
)
_FLEET_UP = "fleet_up"


def _fleet_families() -> dict[str, Metric]:
    families: dict[str, Metric] = {
        _FLEET_UP: GaugeMetricFamily(
            METRIC_PREFIX + _FLEET_UP,
            "1 if the last scrape could read the stream from Redis, else 0 "
            "(and no other sample of the stream).",
            labels=["stream"],
        )
    }
    for name, text, _ in _FLEET_GAUGES:
        families[name] = GaugeMetricFamily(
            METRIC_PREFIX + name, text, labels=["stream"]
        )
    return families


_STREAMS = Kind("stream", _fleet_families)


class FleetCollector:
    """The Prometheus metrics of a Redis stream and its workers.

    Made by :func:`instrument_fleet`, which registers it. Every scrape reads
    a :class:`~event_collector.redis.FleetSnapshot` from Redis (two round
    trips, on the scraping thread); a Redis that cannot be read gives
    ``event_collector_fleet_up 0`` and no other sample, rather than a
    failed scrape.

    :param client: a synchronous ``redis.Redis`` client.
    :param stream: the work stream's key.
    :param name: the ``stream`` label value.
    :param read: keyword arguments of
        :func:`~event_collector.redis.read_fleet` (``group`` and so on).
    :param owns_client: close ``client`` on :meth:`unregister`.
    """

    __slots__ = (
        "_client",
        "_owns_client",
        "_read",
        "_registered",
        "last",
        "name",
        "stream",
    )

    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        *,
        name: str,
        read: dict[str, Any],
        owns_client: bool = False,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str (got name={name!r})")
        self._client = client
        self._owns_client = owns_client
        self._read = read
        self._registered: RegistryExporter | None = None
        self.stream: str = stream
        """The work stream's key."""
        self.name: str = name
        """The ``stream`` label value."""
        self.last: FleetSnapshot | None = None
        """The snapshot the last successful scrape read."""

    def snapshot(self) -> FleetSnapshot:
        """Read the stream and its workers from Redis now.

        :raises redis.exceptions.RedisError: Redis could not be read.
        """
        from .redis._fleet import read_fleet

        return read_fleet(self._client, self.stream, **self._read)

    def add_samples(self, families: dict[str, Metric]) -> None:
        """Add this stream's samples to ``families``, read from Redis now."""
        import redis.exceptions

        labels = [self.name]
        up = families[_FLEET_UP]
        assert isinstance(up, GaugeMetricFamily)
        try:
            snapshot = self.snapshot()
        except (redis.exceptions.RedisError, OSError):
            up.add_metric(labels, 0.0)
            return
        self.last = snapshot
        up.add_metric(labels, 1.0)
        for name, _, attribute in _FLEET_GAUGES:
            if attribute == "worker_count":
                value = float(len(snapshot.workers))
            else:
                value = float(getattr(snapshot, attribute))
            family = families[name]
            assert isinstance(family, GaugeMetricFamily)
            family.add_metric(labels, value)

    def collect(self) -> Iterator[Metric]:
        """This stream's metric families."""
        families = _fleet_families()
        self.add_samples(families)
        yield from families.values()

    def describe(self) -> Iterator[Metric]:
        """The metric families, without samples (names for the registry)."""
        yield from _fleet_families().values()

    def unregister(self) -> None:
        """Remove this stream's series from the registry (and close the
        client :func:`instrument_fleet` made). Calling it again does
        nothing."""
        exporter, self._registered = self._registered, None
        if exporter is not None:
            exporter.remove(self)
            if self._owns_client:
                self._client.close()

    def __repr__(self) -> str:
        return f"<FleetCollector stream={self.name!r}>"


def instrument_fleet(
    redis_source: RedisTransport | redis.Redis | str,
    *,
    stream: str | None = None,
    group: str | None = None,
    dead_letter_stream: str | None = None,
    priority_bands: Sequence[int] | None = None,
    capacity: int | None = None,
    registry: CollectorRegistry | None = None,
    name: str | None = None,
) -> FleetCollector:
    """Export a Redis stream's fleet figures to a Prometheus registry.

    Registers gauges, with the label ``stream=name``, read from Redis at
    each scrape (see :class:`FleetCollector`):
    ``event_collector_stream_backlog``, ``_stream_pending``,
    ``_stream_lag``, ``_stream_dead_letters``, ``event_collector_fleet_workers``,
    ``_fleet_arrival_rate``, ``_fleet_departure_rate`` (events/s),
    ``_fleet_mean_service_time_seconds``, ``_fleet_desired_workers`` (the
    autoscaling signal) and ``event_collector_fleet_up``.

    :param redis_source: a :class:`~event_collector.redis.RedisTransport`
        (its URL, stream, group, dead-letter stream and bands are used), a
        Redis URL or a synchronous ``redis.Redis`` client.
    :param stream: the work stream's key; required unless ``redis_source``
        is a transport.
    :param group: the workers' consumer group (``"event-collector"`` by
        default, or the transport's).
    :param dead_letter_stream: ``"<stream>:dead"`` by default, or the
        transport's.
    :param priority_bands: the bands' upper bounds, if not the default ones
        (or the transport's).
    :param capacity: consumers per worker, for workers that do not report
        their ``max_consumers``.
    :param registry: where to register; ``prometheus_client.REGISTRY`` by
        default.
    :param name: the ``stream`` label value, unique within the registry;
        the stream's key by default.
    :raises ValueError: ``name`` is already used in ``registry``, or no
        stream is given.
    :returns: the :class:`FleetCollector`; call its ``unregister()`` when
        done.
    """
    import redis

    from .redis import RedisTransport

    read: dict[str, Any] = {}
    if isinstance(redis_source, RedisTransport):
        transport = redis_source
        stream = transport.stream if stream is None else stream
        read = {
            "group": transport.group,
            "dead_letter_stream": transport.dead_letter_stream,
            "priority_bands": transport.priority_bands,
        }
        source: redis.Redis | str = transport.url
    else:
        source = redis_source
    if not isinstance(stream, str) or not stream:
        raise ValueError(f"stream must be a non-empty str (got stream={stream!r})")
    for key, value in (
        ("group", group),
        ("dead_letter_stream", dead_letter_stream),
        ("priority_bands", priority_bands),
        ("capacity", capacity),
    ):
        if value is not None:
            read[key] = value
    owns = isinstance(source, str)
    if isinstance(source, str):
        # Short timeouts: a scrape must not hang on a Redis that is away.
        client = redis.Redis.from_url(
            source, socket_connect_timeout=2.0, socket_timeout=2.0
        )
    else:
        client = source
    collector = FleetCollector(
        client,
        stream,
        name=stream if name is None else name,
        read=read,
        owns_client=owns,
    )
    try:
        collector._registered = register(registry, _STREAMS, collector)
    except BaseException:
        if owns:
            client.close()
        raise
    return collector
