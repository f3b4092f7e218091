"""Installing probes (see ``_probes``) on a queue or a Redis publisher:
what ``otel.instrument``, the Prometheus module's ``instrument`` and
``sender_context.carry`` call."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ._probes import Probe, Probed, installed, ordered, rewrap
from .collector import Collector
from .publisher import EventPublisher
from .queue import CollectorQueue

if TYPE_CHECKING:
    from .redis import RedisPublisher

__all__ = ["install"]


def install(
    target: CollectorQueue | RedisPublisher, probe: Probe
) -> Callable[[], None]:
    """Install ``probe`` on a queue (its publisher and its collectors) or on
    a Redis publisher; return the function that removes it again.

    A collector object shared by two queues is probed by both queues'
    probes: give each queue its own collectors.
    """
    publishers: list[Probed]
    collectors: list[Collector]
    if isinstance(target, CollectorQueue):
        publishers = [target.get_publisher()]
        collectors = target.collectors
    elif hasattr(target, "_probes") and not isinstance(target, EventPublisher):
        # A queue's own publisher has _probes too, but probing it alone
        # would leave the queue's collectors unprobed: the queue is given.
        publishers, collectors = [target], []
    else:
        raise TypeError(
            "instrument a CollectorQueue or a RedisPublisher "
            f"(got {type(target).__name__})"
        )
    if probe in _installed_on(publishers, collectors):
        raise ValueError(f"{probe!r} is installed on this target already")
    if type(probe).sending is Probe.sending:
        # A probe of collector calls only: sends keep their inlined path.
        publishers = []
    for publisher in publishers:
        publisher._probes = ordered((*publisher._probes, probe))
    for collector in collectors:
        rewrap(collector, (*installed(collector), probe))

    def remove() -> None:
        for publisher in publishers:
            publisher._probes = tuple(p for p in publisher._probes if p is not probe)
        for collector in collectors:
            rewrap(collector, tuple(p for p in installed(collector) if p is not probe))

    return remove


def _installed_on(publishers: list[Probed], collectors: list[Collector]) -> set[Probe]:
    """The probes installed on any of these publishers and collectors."""
    found = {p for publisher in publishers for p in publisher._probes}
    for collector in collectors:
        found.update(installed(collector))
    return found
