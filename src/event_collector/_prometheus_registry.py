"""The one Prometheus collector per registry and kind (queues, streams)
that :mod:`event_collector.prometheus` registers: the members of a kind share
its metric families, one label value each."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.registry import Collector as _PrometheusCollector

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ["METRIC_PREFIX", "Kind", "Member", "RegistryExporter", "register"]

METRIC_PREFIX = "event_collector_"
"""The prefix of every metric name."""


class Member(Protocol):
    """What a registry's exporter holds: a queue's or a stream's collector."""

    name: str

    def add_samples(self, families: dict[str, Metric]) -> None: ...


class Kind:
    """One kind of member (queues, streams): its metric families, how its
    errors name it, and the exporter of each registry."""

    __slots__ = ("exporters", "families", "label")

    def __init__(self, label: str, families: Callable[[], dict[str, Metric]]) -> None:
        self.label = label
        self.families = families
        self.exporters: weakref.WeakKeyDictionary[
            CollectorRegistry, RegistryExporter
        ] = weakref.WeakKeyDictionary()


_exporters_lock = threading.Lock()


class RegistryExporter(_PrometheusCollector):
    """The one collector a registry holds for all instrumented queues (and
    another for all instrumented streams), so that their metric families are
    exported once, with a sample per member."""

    def __init__(self, registry: CollectorRegistry, kind: Kind) -> None:
        self._registry = registry
        self._kind = kind
        self._members: dict[str, Member] = {}
        self._lock = threading.Lock()

    def add(self, member: Member) -> None:
        with self._lock:
            if member.name in self._members:
                label = self._kind.label
                raise ValueError(
                    f"a {label} is already instrumented in this registry under "
                    f"name={member.name!r}; give each {label} its own name"
                )
            first = not self._members
            self._members[member.name] = member
        if first:
            try:
                self._registry.register(self)
            except BaseException:
                with self._lock:
                    del self._members[member.name]
                raise

    def remove(self, member: Member) -> None:
        # Under the lock register() takes, in the same order (exporters,
        # then this one's): a member added meanwhile either finds this
        # exporter still registered or makes a new one, never a half-removed
        # one.
        with _exporters_lock:
            with self._lock:
                if self._members.get(member.name) is not member:
                    return
                del self._members[member.name]
                last = not self._members
            if last:
                self._registry.unregister(self)
                self._kind.exporters.pop(self._registry, None)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            members = list(self._members.values())
        families = self._kind.families()
        for member in members:
            member.add_samples(families)
        yield from families.values()

    def describe(self) -> Iterator[Metric]:
        yield from self._kind.families().values()


def register(
    registry: CollectorRegistry | None, kind: Kind, member: Member
) -> RegistryExporter:
    """Add ``member`` to the exporter of its kind in ``registry`` (the
    default one for ``None``), registering that exporter on first use."""
    target = REGISTRY if registry is None else registry
    with _exporters_lock:
        exporter = kind.exporters.get(target)
        if exporter is None:
            exporter = kind.exporters[target] = RegistryExporter(target, kind)
        exporter.add(member)
    return exporter
