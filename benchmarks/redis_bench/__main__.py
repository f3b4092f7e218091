"""``python -m benchmarks.redis_bench SIDE ROLE ...``: one process of a
measurement, started by :mod:`benchmarks.redis_bench.target`.

A *worker* says ``ready`` and serves the work stream until it is stopped
(``SIGTERM`` stops it cleanly; the suite, done measuring, kills it). A
*publisher* drives it: it says ``ready``, waits for ``go`` on its standard
input (sent once every worker is ready), warms up, measures, and says
``result {...}`` with the :class:`~benchmarks.redis_bench._drive.Run` as
JSON. Side ``reclaim`` is the reclaim measurement's (see
:mod:`benchmarks.redis_bench.reclaim`): its publisher sends for
``--seconds`` at ``--rate`` and reports what its answers showed. Those
lines go to the standard output the process started with; what
anything else prints to standard output goes to standard error instead, so
that a library's log lines cannot get in their way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from typing import IO, Any, Protocol, TypeVar

from .._loops import loop_factory
from ._drive import Client, Run, drive_paced, drive_window, poisson_gaps

T = TypeVar("T")

SIDES = ("floor", "library", "taskiq", "arq", "reclaim")


class Side(Protocol):
    """What a side's module offers (see :mod:`benchmarks.redis_bench.floor`)."""

    async def work(
        self, url: str, stream: str, consumer: str, ready: Callable[[], None]
    ) -> None: ...

    def connect(
        self, url: str, stream: str
    ) -> AbstractAsyncContextManager[Client[Any]]: ...


def load_side(name: str) -> Side:
    """The module of the side called ``name``, imported only now: each side
    needs its own packages (the peers' are in their own environments)."""
    if name == "floor":
        from . import floor

        return floor
    if name == "library":
        from . import library

        return library
    if name == "taskiq":
        from . import taskiq_peer

        return taskiq_peer
    if name == "arq":
        from . import arq_peer

        return arq_peer
    raise ValueError(f"side must be one of {SIDES} (got {name!r})")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.redis_bench")
    parser.add_argument("side", choices=SIDES)
    parser.add_argument("role", choices=("worker", "publisher"))
    parser.add_argument("--url", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--loop", default="asyncio")
    parser.add_argument("--consumer", default="w0", help="worker: its name")
    parser.add_argument("--events", type=int, default=0, help="publisher")
    parser.add_argument("--warmup", type=int, default=0, help="publisher")
    parser.add_argument("--window", type=int, default=1000, help="publisher")
    parser.add_argument("--batch", type=int, default=100, help="publisher")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="publisher: paced at this rate"
    )
    parser.add_argument(
        "--time-limit", type=float, default=300.0, help="publisher: seconds"
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="reclaim publisher: sending"
    )
    parser.add_argument(
        "--visibility-timeout", type=float, default=2.0, help="reclaim: seconds"
    )
    parser.add_argument(
        "--handler-ms", type=float, default=20.0, help="reclaim worker: handler"
    )
    return parser.parse_args(argv)


def _channel() -> IO[str]:
    """The original standard output, for the protocol's lines; file
    descriptor 1 (and ``sys.stdout``) now write to standard error."""
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    sys.stdout.flush()
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return channel


def _run(loop: str, main: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        return runner.run(main)


async def _serve(side: Side, args: argparse.Namespace, channel: IO[str]) -> None:
    """Run the worker until ``SIGTERM``."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)

    def ready() -> None:
        channel.write("ready\n")

    try:
        await side.work(args.url, args.stream, args.consumer, ready)
    except asyncio.CancelledError:
        return  # SIGTERM: the measurement is over


async def _publish(side: Side, args: argparse.Namespace, channel: IO[str]) -> None:
    """Warm up, then measure (at full speed, or paced at ``--rate``) and
    report, before the client closes: what comes after is not measured,
    and the process may be killed then."""
    async with asyncio.timeout(args.time_limit):
        async with side.connect(args.url, args.stream) as client:
            if args.warmup:
                await drive_window(
                    client, args.warmup, window=args.window, batch=args.batch
                )
            run: Run
            if args.rate > 0:
                gaps = poisson_gaps(args.events, args.rate)
                run = await drive_paced(client, gaps, batch=args.batch)
            else:
                run = await drive_window(
                    client, args.events, window=args.window, batch=args.batch
                )
            channel.write("result " + json.dumps(run.to_json()) + "\n")


async def _reclaim(args: argparse.Namespace, channel: IO[str]) -> None:
    """The reclaim measurement's worker (until ``SIGTERM``) or publisher."""
    from . import _reclaim_side

    if args.role == "worker":

        def ready() -> None:
            channel.write("ready\n")

        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            await _reclaim_side.work(
                args.url,
                args.stream,
                ready,
                visibility_timeout=args.visibility_timeout,
                handler_ms=args.handler_ms,
            )
        except asyncio.CancelledError:
            return
        return
    async with asyncio.timeout(args.time_limit):
        report = await _reclaim_side.publish(
            args.url,
            args.stream,
            rate=args.rate or 500.0,
            seconds=args.seconds,
            visibility_timeout=args.visibility_timeout,
        )
    channel.write("result " + json.dumps(report) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    channel = _channel()
    if args.side == "reclaim":
        if args.role == "publisher":
            channel.write("ready\n")
            if sys.stdin.readline().strip() != "go":
                raise SystemExit("publisher: no 'go' on standard input")
        _run(args.loop, _reclaim(args, channel))
        return
    side = load_side(args.side)
    if args.role == "worker":
        _run(args.loop, _serve(side, args, channel))
        return
    channel.write("ready\n")
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("publisher: no 'go' on standard input")
    _run(args.loop, _publish(side, args, channel))


main()
