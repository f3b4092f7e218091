"""Peer: taskiq with taskiq-redis, its Redis Streams broker
(``RedisStreamBroker``) and its Redis result backend
(``RedisAsyncResultBackend``), as its documentation sets them up.

A worker runs taskiq's receiver (``taskiq.api.run_receiver_task``, what the
``taskiq worker`` command runs in each of its processes, at its defaults:
100 tasks at once). The publisher sends each task with ``kiq`` and awaits
each result with ``wait_result``, which polls the result backend; it polls
every 10 ms here (the default is 200 ms; 1 ms and 50 ms gave the same
throughput), which only the task awaited next does while the others run.

Runs from ``.venv-peers/taskiq`` (see :mod:`benchmarks.redis_bench._peers`);
mypy, which runs where taskiq is not installed, sees its names as ``Any``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from taskiq.api import run_receiver_task  # type: ignore[import-not-found]
from taskiq_redis import (  # type: ignore[import-not-found]
    RedisAsyncResultBackend,
    RedisStreamBroker,
)

from ._drive import Client

__all__ = ["connect", "work"]

GROUP = "g"
POLL_SECONDS = 0.01
_ANSWER_TIMEOUT = 60.0


async def echo(value: dict[str, int]) -> dict[str, int]:
    """The trivial task: the answer is the payload."""
    return value


def _broker(url: str, stream: str, consumer: str | None = None) -> tuple[Any, Any]:
    """The broker of ``stream`` with its result backend, and the task."""
    backend = RedisAsyncResultBackend(url, keep_results=False, result_ex_time=600)
    broker = RedisStreamBroker(
        url, queue_name=stream, consumer_group_name=GROUP, consumer_name=consumer
    ).with_result_backend(backend)
    task = broker.register_task(echo, task_name="echo")
    return broker, task


async def work(url: str, stream: str, consumer: str, ready: Callable[[], None]) -> None:
    """Run taskiq's receiver on ``stream`` until cancelled."""
    broker, _ = _broker(url, stream, consumer)
    broker.is_worker_process = True
    await broker.startup()
    try:
        ready()
        await run_receiver_task(broker)
    finally:
        await broker.shutdown()


class TaskiqClient:
    """:class:`~benchmarks.redis_bench._drive.Client` over ``kiq`` and
    ``wait_result``."""

    def __init__(self, task: Any) -> None:
        self._task = task

    async def send(self, payloads: list[dict[str, int]]) -> Sequence[Any]:
        """``kiq`` each payload (taskiq sends one message per call)."""
        return [await self._task.kiq(value) for value in payloads]

    async def wait(self, handle: Any) -> Any:
        """The task's return value."""
        result = await handle.wait_result(
            check_interval=POLL_SECONDS, timeout=_ANSWER_TIMEOUT
        )
        if result.is_err:
            raise AssertionError(f"the task failed: {result.error!r}")
        return result.return_value


@asynccontextmanager
async def connect(url: str, stream: str) -> AsyncIterator[Client[Any]]:
    """A :class:`TaskiqClient` on a started broker of ``stream``."""
    broker, task = _broker(url, stream)
    await broker.startup()
    try:
        yield TaskiqClient(task)
    finally:
        await broker.shutdown()
