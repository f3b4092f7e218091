"""The ``redis`` target: event-collector's Redis Streams transport against a
hand-written floor on redis-py, and against taskiq-redis and arq.

Every measurement runs one publisher process and worker processes (two,
unless the scaling row says otherwise) on a ``redis-server`` of the
round's own, on loopback, with a trivial handler whose answers the
publisher awaits. See :mod:`benchmarks.redis_bench.target` for what a round
measures, :mod:`benchmarks.redis_bench.floor` for the floor, and
:mod:`benchmarks.redis_bench._drive` for the timing code every side shares.
Reclaim after SIGKILL is measured on its own, by
``python -m benchmarks.redis_bench.reclaim`` (:mod:`benchmarks.redis_bench.reclaim`).
"""

from .target import judge, library_available, measure

__all__ = ["judge", "library_available", "measure"]
