"""``event-collector top URL``: a live view, drawn with rich, of what URL
names. Its scheme picks the source: a fleet of workers on a Redis stream
(``redis://``, from :func:`~event_collector.redis.read_fleet`'s snapshots),
or a service's Prometheus endpoint (``http://``, read by
:mod:`event_collector._top_http` and drawn by :mod:`event_collector._top_view`)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

from ._cli_common import (
    REDIS_SCHEMES,
    Refused,
    bands,
    display_url,
    positive,
    positive_int,
    require_redis,
)
from ._demo_output import require, rich_console
from ._top_http import HTTP_SCHEMES, ScrapeError, require_prometheus
from ._top_live import Interrupts, watch
from ._top_service import ServiceWatch
from ._top_view import render_service

if TYPE_CHECKING:
    from rich.console import RenderableType

    from ._top_service import ServiceFrame
    from .redis._fleet import FleetSnapshot

__all__ = [
    "DEFAULT_WINDOW",
    "SPARK_WIDTH",
    "add_top_parser",
    "render_fleet",
    "top_command",
]

DEFAULT_WINDOW = 120.0
"""Seconds of history the sparklines of the http:// view span by default."""

SPARK_WIDTH = 40
"""Blocks per sparkline."""

# (option, its dest): the options that only a Redis URL takes
_REDIS_ONLY = (
    ("--stream", "stream"),
    ("--group", "group"),
    ("--dead-letter-stream", "dead_letter_stream"),
    ("--priority-bands", "priority_bands"),
    ("--capacity", "capacity"),
)


def add_top_parser(commands: Any) -> None:
    """Add ``top`` to the ``event-collector`` subcommands."""
    top: argparse.ArgumentParser = commands.add_parser(
        "top",
        help="watch a running service or a fleet of Redis workers live",
        description="Show live what URL names; its scheme picks the source. "
        "http://HOST:PORT/metrics (or https://): a service's Prometheus "
        "endpoint, served by event_collector.prometheus; each queue on it "
        "with its arrival and departure rates, errors, consumers, busy "
        "consumers, queue size, load, WIP, wait and service time, loop lag, "
        "and each collector's calls, errors and latency when the endpoint "
        "exports them, with sparklines of their recent history (needs the "
        "cli and prometheus extras). redis://HOST:PORT/DB (with --stream): a "
        "fleet of workers (event-collector worker): each worker's consumers, "
        "busy consumers, load, held entries, handling rate, reclaims and dead "
        "letters; the stream's backlog, pending entries, lag and dead "
        "letters; the fleet's arrival and departure rates; and the desired "
        "worker count, by Little's law: the arrival rate times the mean "
        "service time, divided by the consumers one worker can run (its "
        "--max-consumers), rounded up, at least 1 while the stream has a "
        "backlog (needs the cli and redis extras). Ctrl-C quits.",
    )
    top.set_defaults(run=top_command, top_parser=top)
    top.add_argument(
        "url",
        metavar="URL",
        help="a service's Prometheus endpoint, as http://HOST:PORT/metrics (or "
        "https://), or the workers' Redis, as redis://HOST:PORT/DB (or "
        "rediss://, unix://)",
    )
    redis_options = top.add_argument_group("with a Redis URL")
    redis_options.add_argument(
        "--stream",
        default=None,
        metavar="NAME",
        help="the work stream's Redis key; the transport's other keys start "
        "with NAME: (required with a Redis URL)",
    )
    redis_options.add_argument(
        "--group",
        default=None,
        help="the consumer group the workers share (default: event-collector)",
    )
    redis_options.add_argument(
        "--dead-letter-stream",
        default=None,
        metavar="KEY",
        help="the dead-letter stream, if the workers were given one (default: "
        "NAME:dead)",
    )
    redis_options.add_argument(
        "--priority-bands",
        type=bands,
        default=None,
        metavar="BOUNDS",
        help="the workers' priority bands, if not the default ones, as in "
        "10,50,100 (default: 50,100)",
    )
    redis_options.add_argument(
        "--capacity",
        type=positive_int,
        default=None,
        metavar="CONSUMERS",
        help="consumers per worker, for workers that do not report their "
        "max_consumers (those not started by event-collector worker); "
        "default: their current pool size",
    )
    http_options = top.add_argument_group("with an http:// URL")
    http_options.add_argument(
        "--window",
        type=positive,
        default=None,
        metavar="SECONDS",
        help="seconds of history the sparklines span, in "
        f"{SPARK_WIDTH} blocks (default: {DEFAULT_WINDOW:g})",
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
        help="print one frame and exit (for scripts); exit status 1 if the "
        "source cannot be read. Over http://, the rates need two reads: one "
        "frame shows - for them",
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
    if url.startswith(HTTP_SCHEMES):
        given = [option for option, dest in _REDIS_ONLY if getattr(args, dest)]
        if given:
            raise Refused(
                f"{', '.join(given)}: only with a Redis URL, not with an "
                f"http:// endpoint (got {url!r})"
            )
        return _service_top(args)
    if not url.startswith(REDIS_SCHEMES):
        raise Refused(
            "URL must be the workers' Redis, as redis://HOST:PORT/DB (or "
            "rediss://, unix://), or a service's Prometheus endpoint, as "
            f"http://HOST:PORT/metrics (or https://) (got {url!r})"
        )
    if args.window is not None:
        raise Refused(f"--window: only with an http:// endpoint (got {url!r})")
    if not args.stream:
        raise Refused("--stream NAME is required with a Redis URL: the work stream")
    return _fleet_top(args)


def _cannot_read(url: str, exc: BaseException) -> int:
    print(
        f"event-collector top: cannot read {display_url(url)}: {exc}", file=sys.stderr
    )
    return 1


def _fleet_top(args: argparse.Namespace) -> int:
    url: str = args.url
    require_redis("top")
    require("rich", feature="event-collector top")
    import redis
    from rich.text import Text

    from .redis._fleet import read_fleet

    options: dict[str, Any] = {}
    for name in ("group", "dead_letter_stream", "priority_bands", "capacity"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    console = rich_console(sys.stdout)
    client = redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=5.0)

    def frame() -> RenderableType:
        return render_fleet(read_fleet(client, args.stream, **options), url=url)

    def live_frame() -> RenderableType:
        try:
            return frame()
        except (redis.RedisError, OSError) as exc:
            return Text(
                f"cannot read {display_url(url)}: {exc}; trying again every "
                f"{args.interval:g} s",
                style="bold red",
            )

    try:
        if args.once:
            try:
                console.print(frame())
            except (redis.RedisError, OSError) as exc:
                return _cannot_read(url, exc)
            return 0
        with Interrupts() as interrupts:
            watch(console, live_frame, args.interval, interrupts)
        return 0
    finally:
        client.close()


def _service_top(args: argparse.Namespace) -> int:
    url: str = args.url
    require("rich", feature="event-collector top")
    require_prometheus()
    from rich.console import Group
    from rich.text import Text

    window: float = DEFAULT_WINDOW if args.window is None else args.window
    service = ServiceWatch(url, window=window, width=SPARK_WIDTH)
    console = rich_console(sys.stdout)

    def view(frame: ServiceFrame) -> RenderableType:
        return render_service(frame, service.history, window=window, width=SPARK_WIDTH)

    if args.once:
        try:
            console.print(view(service.poll()))
        except ScrapeError as exc:
            return _cannot_read(url, exc)
        return 0
    with Interrupts() as interrupts:
        # The first read decides: a wrong URL is an error at once. Later
        # ones may fail while the service restarts: the view waits for it.
        try:
            ok, first = interrupts.call(service.poll)
        except ScrapeError as exc:
            return _cannot_read(url, exc)
        if not ok or first is None:
            return 0
        last = view(first)

        def frame() -> RenderableType:
            nonlocal last
            try:
                last = view(service.poll())
            except ScrapeError as exc:
                problem = Text(
                    f"cannot read {display_url(url)}: {exc}; trying again every "
                    f"{args.interval:g} s (below: the last frame read)",
                    style="bold red",
                )
                return Group(problem, last)
            return last

        watch(console, frame, args.interval, interrupts, first=last)
    return 0
