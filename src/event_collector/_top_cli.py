"""``event-collector top``: a live view of a fleet of workers on a Redis
stream, drawn with rich from :func:`~event_collector.redis.read_fleet`'s
snapshots."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

from ._cli_common import (
    REDIS_SCHEMES,
    Refused,
    add_stream_options,
    bands,
    display_url,
    positive,
    positive_int,
    require_redis,
)
from ._demo_output import require, rich_console

if TYPE_CHECKING:
    import redis
    from rich.console import RenderableType

    from .redis._fleet import FleetSnapshot

__all__ = ["add_top_parser", "render_fleet", "top_command"]


def add_top_parser(commands: Any) -> None:
    """Add ``top`` to the ``event-collector`` subcommands."""
    top: argparse.ArgumentParser = commands.add_parser(
        "top",
        help="watch a fleet of Redis workers live",
        description="Show a fleet of workers (event-collector worker) live: "
        "each worker's consumers, busy consumers, load, held entries, handling "
        "rate, reclaims and dead letters; the stream's backlog, pending "
        "entries, lag and dead letters; the fleet's arrival and departure "
        "rates; and the desired worker count, by Little's law: the arrival "
        "rate times the mean service time, divided by the consumers one "
        "worker can run (its --max-consumers), rounded up, at least 1 while "
        "the stream has a backlog. Ctrl-C quits. Needs the cli and redis "
        "extras.",
    )
    top.set_defaults(run=top_command, top_parser=top)
    top.add_argument(
        "url",
        metavar="URL",
        help="where the fleet is: the workers' Redis, as redis://HOST:PORT/DB "
        "(or rediss://, unix://)",
    )
    add_stream_options(top)
    top.add_argument(
        "--dead-letter-stream",
        default=None,
        metavar="KEY",
        help="the dead-letter stream, if the workers were given one (default: "
        "NAME:dead)",
    )
    top.add_argument(
        "--priority-bands",
        type=bands,
        default=None,
        metavar="BOUNDS",
        help="the workers' priority bands, if not the default ones, as in "
        "10,50,100 (default: 50,100)",
    )
    top.add_argument(
        "--capacity",
        type=positive_int,
        default=None,
        metavar="CONSUMERS",
        help="consumers per worker, for workers that do not report their "
        "max_consumers (those not started by event-collector worker); "
        "default: their current pool size",
    )
    top.add_argument(
        "--interval",
        type=positive,
        default=1.0,
        metavar="SECONDS",
        help="seconds between two reads (default: %(default)s)",
    )
    top.add_argument(
        "--once",
        action="store_true",
        help="print one frame and exit (for scripts); exit status 1 if Redis "
        "cannot be read",
    )


_WORKER_COLUMNS = (
    "consumers",
    "busy",
    "load",
    "held",
    "handled/s",
    "reclaimed",
    "dead",
)


def render_fleet(snapshot: FleetSnapshot, *, url: str = "") -> RenderableType:
    """The fleet view of ``snapshot``: a heading, a table of the stream's
    figures and one of the live workers, as a rich renderable (``url`` is
    named in the heading, without its password)."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    where = f" on {display_url(url)}" if url else ""
    stamp = time.strftime("%H:%M:%S", time.localtime(snapshot.taken_at))
    heading = Text.assemble(
        ("event-collector top", "bold"),
        f": stream {snapshot.stream!r}, group {snapshot.group!r}{where}, at {stamp}",
    )
    stream = Table(show_header=False, box=box.SIMPLE)
    stream.add_column("", style="bold")
    stream.add_column("", justify="right")
    capacity = snapshot.capacity
    for name, text in (
        ("backlog", str(snapshot.backlog)),
        ("pending", str(snapshot.pending)),
        ("lag", str(snapshot.lag)),
        ("dead letters", str(snapshot.dead_letters)),
        ("arrival rate", f"{snapshot.arrival_rate:.1f}/s"),
        ("departure rate", f"{snapshot.departure_rate:.1f}/s"),
        ("service time", f"{snapshot.service_time * 1000:.1f} ms"),
        ("consumers per worker", "unknown" if capacity is None else f"{capacity:g}"),
        ("live workers", str(len(snapshot.workers))),
        ("desired workers", str(snapshot.desired_workers)),
    ):
        stream.add_row(name, text)
    parts: list[RenderableType] = [heading, stream]
    if snapshot.workers:
        workers = Table(
            box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, padding=(0, 1)
        )
        workers.add_column("worker", no_wrap=True)
        for column in _WORKER_COLUMNS:
            workers.add_column(
                column, justify="right", no_wrap=True, min_width=len(column)
            )
        for w in snapshot.workers:
            size = str(w.consumers)
            if w.max_consumers is not None:
                size += f"/{w.max_consumers}"
            workers.add_row(
                w.consumer,
                size,
                str(w.busy),
                f"{w.load:.2f}",
                str(w.held),
                f"{w.departure_rate:.1f}",
                str(w.reclaimed),
                str(w.dead_lettered),
            )
        parts.append(workers)
    else:
        parts.append(Text("no live worker\n", style="bold"))
    parts.append(
        Text(
            "backlog = pending (delivered, not answered) + lag (not delivered); "
            "rates are sums of the workers' recent windows; desired workers = "
            "arrival rate x service time / consumers per worker, rounded up. "
            "Workers: consumers now/most, held = entries fetched and not "
            "answered, dead = entries this worker dead-lettered.",
            style="dim",
        )
    )
    return Group(*parts)


def top_command(args: argparse.Namespace) -> int:
    """Run ``event-collector top``; return the exit status.

    :raises Refused: the arguments are refused (exit status 2).
    :raises CannotRun: a package it needs is missing (exit status 1).
    """
    url: str = args.url
    if not url.startswith(REDIS_SCHEMES):
        raise Refused(
            "URL must be the workers' Redis, as redis://HOST:PORT/DB (or "
            f"rediss://, unix://) (got {url!r})"
        )
    require_redis("top")
    require("rich", feature="event-collector top")
    import redis

    from .redis._fleet import read_fleet

    options: dict[str, Any] = {}
    for name in ("group", "dead_letter_stream", "priority_bands", "capacity"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    console = rich_console(sys.stdout)
    client = redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=5.0)

    def frame() -> RenderableType:
        return render_fleet(read_fleet(client, args.stream, **options), url=url)

    try:
        if args.once:
            try:
                console.print(frame())
            except (redis.RedisError, OSError) as exc:
                print(
                    f"event-collector top: cannot read {display_url(url)}: {exc}",
                    file=sys.stderr,
                )
                return 1
            return 0
        _watch(console, frame, client, url, args.interval)
        return 0
    finally:
        client.close()


def _watch(
    console: Any,
    frame: Callable[[], RenderableType],
    client: redis.Redis,
    url: str,
    interval: float,
) -> None:
    """Redraw ``frame()`` in place every ``interval`` seconds until SIGINT
    or SIGTERM."""
    import redis
    from rich.live import Live
    from rich.text import Text

    stop = threading.Event()

    def quit_(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # A flag rather than KeyboardInterrupt: Ctrl-C ends the loop between two
    # reads, so it never leaves a traceback or a half-drawn frame.
    previous = {
        signum: signal.signal(signum, quit_)
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        with Live(console=console, auto_refresh=False, transient=False) as live:
            while not stop.is_set():
                try:
                    view = frame()
                except (redis.RedisError, OSError) as exc:
                    view = Text(
                        f"cannot read {display_url(url)}: {exc}; trying again "
                        f"every {interval:g} s",
                        style="bold red",
                    )
                live.update(view, refresh=True)
                stop.wait(interval)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
