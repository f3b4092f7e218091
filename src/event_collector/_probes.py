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
or removed, never per event. A probe never changes what a send does (see
:class:`Sending`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Protocol

from ._lanes import batch_call
from ._log import get_logger, report_exception
from .collector import BatchCollector, Collector
from .data import Payload
from .router import collector_call

__all__ = [
    "BatchCall",
    "Call",
    "Probe",
    "Probed",
    "Sending",
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


def sending(probes: tuple[Probe, ...], payload: Payload[Any]) -> Sending:
    """Every probe's ``sending`` around a send, the first one entered first."""
    return Sending(probes, payload)


class Sending:
    """The probes' context managers around one send, which they cannot
    change: a probe that fails to enter is left out and one that fails to
    exit is passed over, each failure logged; what an exit returns is
    ignored (no probe swallows the send's own error, nor turns a send that
    went through into one that raised, which would have it sent again)."""

    __slots__ = ("_entered", "_payload", "_probes")

    def __init__(self, probes: tuple[Probe, ...], payload: Payload[Any]) -> None:
        self._probes = probes
        self._payload = payload
        self._entered: list[tuple[Probe, contextlib.AbstractContextManager[Any]]] = []

    def __enter__(self) -> None:
        for probe in self._probes:
            try:
                manager = probe.sending(self._payload)
                manager.__enter__()
            except Exception as exc:
                report_exception(_log, "probe failed to enter a send", exc, probe=probe)
            else:
                self._entered.append((probe, manager))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        entered, self._entered = self._entered, []
        for probe, manager in reversed(entered):
            try:
                manager.__exit__(exc_type, exc, tb)
            except Exception as failure:
                if failure is not exc:  # not the send's own error, raised again
                    report_exception(
                        _log, "probe failed to exit a send", failure, probe=probe
                    )


_log = get_logger()


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
