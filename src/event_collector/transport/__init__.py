"""Transports: what carries a collector queue's events.

:class:`Transport` is the seam; :class:`MemoryTransport` (the default) keeps
events in the process.
"""

from .base import Transport
from .memory import MemoryTransport

__all__ = ["MemoryTransport", "Transport"]
