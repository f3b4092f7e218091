"""Peer: arq, whose jobs wait in a sorted set that its workers poll.

A worker is arq's ``Worker`` tuned for throughput, as its documentation
allows: 100 jobs at once (``max_jobs``; the default is 10) and a poll of
the queue every :data:`POLL_SECONDS` (``poll_delay``; the default is half a
second). The publisher enqueues each job with ``enqueue_job`` and awaits
each result with ``Job.result``, which polls the result key, as often (the
default is half a second; 1 ms and 50 ms gave the same throughput), which
only the job awaited next does while the others run.

Runs from ``.venv-peers/arq`` (see :mod:`benchmarks.redis_bench._peers`);
mypy, which runs where arq is not installed, sees its names as ``Any``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from arq import create_pool  # type: ignore[import-not-found]
from arq.connections import RedisSettings  # type: ignore[import-not-found]
from arq.worker import Worker, func  # type: ignore[import-not-found]

from ._drive import Client

__all__ = ["connect", "work"]

MAX_JOBS = 100
POLL_SECONDS = 0.01
_ANSWER_TIMEOUT = 60.0


async def echo(ctx: dict[str, Any], value: dict[str, int]) -> dict[str, int]:
    """The trivial job: the answer is the payload."""
    return value


async def work(url: str, stream: str, consumer: str, ready: Callable[[], None]) -> None:
    """Run an arq worker on the queue ``stream`` until cancelled."""

    async def started(ctx: dict[str, Any]) -> None:
        ready()

    worker = Worker(
        functions=[func(echo, name="echo")],
        queue_name=stream,
        redis_settings=RedisSettings.from_dsn(url),
        on_startup=started,
        handle_signals=False,
        max_jobs=MAX_JOBS,
        poll_delay=POLL_SECONDS,
        keep_result=600,
        log_results=False,
    )
    try:
        await worker.main()
    finally:
        await worker.close()


class ArqClient:
    """:class:`~benchmarks.redis_bench._drive.Client` over ``enqueue_job``
    and ``Job.result``."""

    def __init__(self, pool: Any, queue: str) -> None:
        self._pool = pool
        self._queue = queue

    async def send(self, payloads: list[dict[str, int]]) -> Sequence[Any]:
        """Enqueue each payload (arq enqueues one job per call)."""
        enqueue = self._pool.enqueue_job
        return [
            await enqueue("echo", value, _queue_name=self._queue) for value in payloads
        ]

    async def wait(self, job: Any) -> Any:
        """The job's result."""
        return await job.result(timeout=_ANSWER_TIMEOUT, poll_delay=POLL_SECONDS)


@asynccontextmanager
async def connect(url: str, stream: str) -> AsyncIterator[Client[Any]]:
    """An :class:`ArqClient` of the queue ``stream``."""
    pool = await create_pool(RedisSettings.from_dsn(url), default_queue_name=stream)
    try:
        yield ArqClient(pool, stream)
    finally:
        await pool.aclose()
