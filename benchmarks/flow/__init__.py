"""The ``flow`` target: what flow control costs.

The trivial-handler throughput with no feature used, against the code
before flow control (each side in a child process of its own); the
throughput with 1000 ordering keys against none; and the pool under a
burst of one key. See :mod:`benchmarks.flow.target` for what a round
measures.
"""

from .target import judge, measure

__all__ = ["judge", "measure"]
