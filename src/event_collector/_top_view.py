"""What ``event-collector top http://...`` draws: a table per queue of the
:class:`~event_collector._top_service.ServiceFrame`, each figure with its value
now, a sparkline of its recent history and its largest recent value, and a
table of the queue's collectors when the endpoint exports their series.

rich is imported only inside :func:`render_service` (the ``cli`` extra)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from ._cli_common import display_url

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderableType
    from rich.measure import Measurement
    from rich.segment import Segment

    from ._top_service import CollectorFigures, QueueFigures, ServiceFrame
    from ._top_spark import Series

__all__ = ["QUEUE_ROWS", "Spark", "duration", "render_service", "span"]

NONE = "-"
"""What a figure without a value shows (a rate on the first frame)."""


def rate(value: float) -> str:
    """Events per second."""
    return f"{value:.1f}/s"


def count(value: float) -> str:
    """A whole number of things."""
    return f"{value:.0f}"


def duration(value: float) -> str:
    """Seconds, as ms below one second."""
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def share(value: float) -> str:
    """A fraction, as a percentage."""
    return f"{value * 100:.1f} %"


def span(seconds: float) -> str:
    """A window's length, in minutes when it is a whole number of them."""
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


QUEUE_ROWS: tuple[tuple[str, str, Callable[[float], str]], ...] = (
    ("arrival_rate", "arrival rate", rate),
    ("departure_rate", "departure rate", rate),
    ("error_rate", "errors", rate),
    ("consumers", "consumers", count),
    ("busy", "busy consumers", count),
    ("queue_size", "queue size", count),
    ("load", "load", "{:.2f}".format),
    ("wip", "WIP", "{:.1f}".format),
    ("wait_time", "wait (send → answer)", duration),
    ("service_time", "service time (handler)", duration),
    ("loop_lag", "loop lag", duration),
)
"""A queue's rows: the :class:`QueueFigures` field, its label, its format."""

_OPTIONAL = {"loop_lag"}
"""Rows drawn only when the endpoint exports them."""


def _text(value: float | None, form: Callable[[float], str]) -> str:
    return NONE if value is None else form(value)


class Spark:
    """A sparkline as a rich renderable that gives way when the table is
    too wide for the screen: it keeps its newest blocks, on the right."""

    __slots__ = ("blocks",)

    def __init__(self, blocks: str) -> None:
        self.blocks = blocks

    def __rich_measure__(
        self, console: Console, options: ConsoleOptions
    ) -> Measurement:
        from rich.measure import Measurement

        return Measurement(min(len(self.blocks), 1), len(self.blocks))

    def __rich_console__(
        self, console: Console, options: ConsoleOptions
    ) -> Iterator[Segment]:
        from rich.segment import Segment

        width = options.max_width
        yield Segment(self.blocks[-width:] if width > 0 else "")


def _spark(
    history: Mapping[tuple[str, ...], Series], key: tuple[str, ...], now: float
) -> Spark:
    series = history.get(key)
    return Spark("" if series is None else series.sparkline(now))


def _peak(
    history: Mapping[tuple[str, ...], Series],
    key: tuple[str, ...],
    form: Callable[[float], str],
) -> str:
    series = history.get(key)
    return _text(None if series is None else series.peak(), form)


def _queue_table(
    queue: QueueFigures,
    history: Mapping[tuple[str, ...], Series],
    now: float,
    window: str,
) -> RenderableType:
    from rich import box
    from rich.table import Table

    table = Table(
        title=f"queue {queue.name!r}",
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        header_style="bold",
    )
    table.add_column("figure", no_wrap=True)
    table.add_column("now", justify="right", no_wrap=True)
    # The one column that may shrink, from the left, on a narrow screen.
    table.add_column(f"last {window}")
    table.add_column("max", justify="right", no_wrap=True)
    for field, label, form in QUEUE_ROWS:
        value: float | None = getattr(queue, field)
        if value is None and field in _OPTIONAL:
            continue
        key = (queue.name, field)
        table.add_row(
            label,
            _text(value, form),
            _spark(history, key, now),
            _peak(history, key, form),
        )
    return table


def _collector_table(
    queue: QueueFigures,
    history: Mapping[tuple[str, ...], Series],
    now: float,
    window: str,
) -> RenderableType:
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, header_style="bold")
    table.add_column("collector", no_wrap=True)
    table.add_column("calls", justify="right", no_wrap=True)
    table.add_column("errors", justify="right", no_wrap=True)
    table.add_column("errors %", justify="right", no_wrap=True)
    table.add_column(f"errors, last {window}")
    table.add_column("latency", justify="right", no_wrap=True)
    table.add_column(f"latency, last {window}")
    c: CollectorFigures
    for c in queue.collectors:
        key = (queue.name, c.name)
        table.add_row(
            c.name,
            _text(c.calls_rate, rate),
            _text(c.error_rate, rate),
            _text(c.error_share, share),
            _spark(history, (*key, "error_rate"), now),
            _text(c.latency, duration),
            _spark(history, (*key, "latency"), now),
        )
    return table


_LEGEND = (
    "Rates: counter increases between the last two reads, per second "
    "(arrivals = answered events + growth of the queue and of the busy "
    "consumers). wait, service time: the queue's own means over its recent "
    "events. load = (queued + busy) / consumers; WIP = arrival rate x "
    "service time, by the queue's own window. Sparklines: one block per "
    "{step}, ▁ = 0, █ = the max column. Collectors: calls and errors per "
    "second, errors per call, mean handler time of the calls, between the "
    "last two reads."
)


def render_service(
    frame: ServiceFrame,
    history: Mapping[tuple[str, ...], Series],
    *,
    window: float,
    width: int,
) -> RenderableType:
    """The view of ``frame``: a heading, each queue's table and its
    collectors' table, and a legend, as a rich renderable.

    :param history: the figures' series, as ``ServiceWatch.history`` holds
        them.
    :param window: seconds the sparklines span.
    :param width: blocks per sparkline.
    """
    from rich.console import Group
    from rich.text import Text

    stamp = time.strftime("%H:%M:%S", time.localtime(frame.taken_at))
    if frame.elapsed is None:
        rates = "rates from the next read on"
    else:
        rates = f"rates over the last {frame.elapsed:.1f} s"
    heading = Text.assemble(
        ("event-collector top", "bold"),
        f": {display_url(frame.url)}, at {stamp}; {rates}",
    )
    parts: list[RenderableType] = [heading]
    label = span(window)
    for queue in frame.queues:
        parts.append(_queue_table(queue, history, frame.at, label))
        if queue.collectors:
            parts.append(_collector_table(queue, history, frame.at, label))
    parts.append(Text(_LEGEND.format(step=span(window / width)), style="dim"))
    return Group(*parts)
