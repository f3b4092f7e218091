"""The seam instrumentation works through: probes around sends and around
collector calls.

A probe is what :mod:`event_collector.otel`, the Prometheus module's
per-collector metrics and :mod:`event_collector.sender_context` install on
a queue, or on a Redis publisher. Until one is installed nothing is probed:
a send checks one attribute, a collector call one more.

- ``sending(payload)`` runs around each send; it may add headers to the
  payload (a trace's ``traceparent``) before the transport takes it.
- ``wrap(collector, call)`` wraps a collector's call on one payload (its
  timeout included): the wrapper sees the payload, what the handler returns
  and what it raises. ``wrap_batch`` does the same for a batch collector's
  call on a list of payloads.

The wrappers of one collector are composed once, when a probe is installed
or removed, never per event.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from ._lanes import batch_call
from .collector import BatchCollector, Collector
from .data import Payload
from .router import collector_call

__all__ = [
    "BatchCall",
    "Call",
    "Probe",
    "Probed",
    "installed",
    "ordered",
    "rewrap",
    "sending",
]

Call = Callable[[Payload[Any]], Awaitable[Any]]
"""A collector's call on one payload."""

BatchCall = Callable[[list[Payload[Any]]], Awaitable[Sequence[Any]]]
"""A batch collector's call on a list of payloads."""


class Probe:
    """Hooks that do nothing; a probe overrides the ones it needs.

    ``outer``: probes with it wrap the others (the sender's context must be
    entered before a trace's consumer span is made current in it).
    """

    outer = False

    def sending(self, payload: Payload[Any]) -> contextlib.AbstractContextManager[Any]:
        """A context manager entered around one send of ``payload``."""
        return contextlib.nullcontext()

    def wrap(self, collector: Collector, call: Call) -> Call:
        """``call`` wrapped; ``call`` itself to leave it as it is."""
        return call

    def wrap_batch(self, collector: BatchCollector, call: BatchCall) -> BatchCall:
        """``call`` (a batch collector's) wrapped."""
        return call


class Probed(Protocol):
    """What probes are installed on: the queue's publisher, a Redis
    publisher."""

    _probes: tuple[Probe, ...]


def sending(
    probes: tuple[Probe, ...], payload: Payload[Any]
) -> contextlib.AbstractContextManager[Any]:
    """Every probe's ``sending`` around a send, the first one entered first."""
    if len(probes) == 1:
        return probes[0].sending(payload)
    stack = contextlib.ExitStack()
    with stack:  # a probe that fails to enter exits those entered before it
        for probe in probes:
            stack.enter_context(probe.sending(payload))
        return stack.pop_all()


def ordered(probes: tuple[Probe, ...]) -> tuple[Probe, ...]:
    """Outer probes first, each group in the order installed."""
    return tuple(sorted(probes, key=lambda p: not p.outer))


def installed(collector: Collector) -> tuple[Probe, ...]:
    """The probes installed on ``collector``, outer ones first."""
    probes: tuple[Probe, ...] = vars(collector).get("_event_collector_probes", ())
    return probes


def rewrap(collector: Collector, probes: tuple[Probe, ...]) -> None:
    """Compose the collector's wrapped call from ``probes`` (the first one
    outermost), or drop it when none is left."""
    probes = ordered(probes)
    if not probes:
        for name in ("_event_collector_probes", "_probed_batch"):
            vars(collector).pop(name, None)
        collector._probed = None  # as Collector.__init__ leaves it
        return
    collector._event_collector_probes = probes  # type: ignore[attr-defined]
    call = collector_call(collector)
    for probe in reversed(probes):
        call = probe.wrap(collector, call)
    collector._probed = call
    if isinstance(collector, BatchCollector):
        batch = batch_call(collector)
        for probe in reversed(probes):
            batch = probe.wrap_batch(collector, batch)
        collector._probed_batch = batch
