"""The ``instrument`` target: what OpenTelemetry tracing and the sender's
context cost, on and off, and what the seam they use costs unused. See
:mod:`benchmarks.instrument.target`."""

from .target import judge, measure

__all__ = ["judge", "measure"]
