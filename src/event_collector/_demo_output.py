"""What ``event-collector demo`` shows: the live view and the summary (rich),
and the chart (matplotlib).

Both packages come with the ``cli`` extra and are imported only inside the
functions that use them (the command checks first, with :func:`require`,
that they are installed): importing this module needs neither.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ._demo_flow import alert_limit
from .demo import (
    DEMO_EVENT_WINDOW,
    DEMO_METRICS_WARMUP_INTERVAL,
    DEMO_METRICS_WINDOW,
    DemoConfig,
    DemoReport,
    Sample,
    profile_rate,
)

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

__all__ = [
    "CLI_EXTRA",
    "PLOT_FORMATS",
    "LiveView",
    "MissingExtra",
    "plot_format",
    "print_summary",
    "require",
    "rich_console",
    "write_plot",
]

CLI_EXTRA = 'pip install -e ".[cli]" (from a checkout)'
"""The command that installs the ``cli`` extra's packages."""

PLOT_FORMATS = ("png", "svg", "pdf")
"""The chart formats :func:`write_plot` writes, named by the file's
extension."""

# What the view and the summary call the queue's windowed figures. The
# labels say what is averaged, so that a 300 events/s burst read through a
# 5 s window is not taken for a queue that only accepts 200 events/s, and
# the send-to-answer time is not taken for the time spent queued.
ARRIVAL_RATE = f"arrival rate ({DEMO_METRICS_WINDOW:g} s avg)"
DEPARTURE_RATE = f"departure rate ({DEMO_METRICS_WINDOW:g} s avg)"
QUEUE_DELAY = "queue delay (send → start)"
SERVICE_TIME = "service time (handler)"
WAIT_TIME = "wait (send → answer)"
HELD = "held back (key, rate limit)"


class MissingExtra(Exception):
    """An optional package of the ``cli`` extra is not installed."""

    def __init__(self, package: str, feature: str) -> None:
        super().__init__(
            f"event-collector: {feature} needs {package}, which is not installed.\n"
            f"Install the command's extras with: {CLI_EXTRA}"
        )


def require(package: str, *, feature: str) -> None:
    """Import ``package`` (``"rich"``, ``"matplotlib"``), or raise
    :class:`MissingExtra` naming the ``feature`` that needs it."""
    try:
        importlib.import_module(package)
    except ImportError:
        raise MissingExtra(package, feature) from None


def rich_console(stream: TextIO) -> Console:
    """A rich console writing to ``stream``."""
    from rich.console import Console

    return Console(file=stream)


class LiveView:
    """A rich view of the latest sample, with a progress bar."""

    def __init__(self, config: DemoConfig, console: Console) -> None:
        from rich.live import Live
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self._config = config
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self._task = self._progress.add_task(
            f"{config.profile} load, peak {config.rate:g} events/s",
            total=config.duration,
        )
        self._peaks: dict[str, float] = {}
        self._live = Live(
            self._render(None), console=console, refresh_per_second=8, transient=False
        )

    def __enter__(self) -> LiveView:
        self._live.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._live.__exit__(None, None, None)

    def update(self, sample: Sample) -> None:
        """Show ``sample``."""
        self._progress.update(self._task, completed=sample.t)
        self._live.update(self._render(sample))

    def _render(self, sample: Sample | None) -> RenderableType:
        from rich.console import Group
        from rich.table import Table

        table = Table(
            show_header=True,
            header_style="bold",
            expand=False,
            caption=f"rates: mean of the last {DEMO_METRICS_WINDOW:g} s\n"
            f"times: mean of the last {DEMO_EVENT_WINDOW} answered events",
        )
        table.add_column("metric")
        table.add_column("now", justify="right")
        table.add_column("peak", justify="right")
        if sample is not None:
            m = sample.metrics
            peaks = self._peaks
            for name, value, fmt in (
                ("offered rate", sample.offered_rate, "{:.0f}/s"),
                (ARRIVAL_RATE, m.arrival_rate, "{:.0f}/s"),
                (DEPARTURE_RATE, m.departure_rate, "{:.0f}/s"),
                ("consumers", m.consumers, "{:.0f}"),
                ("busy", m.busy, "{:.0f}"),
                ("queue size", m.qsize, "{:.0f}"),
                *_flow_rows(sample, self._config),
                ("load", m.load, "{:.2f}"),
                ("average load", m.avg_load, "{:.2f}"),
                ("wip (Little's law)", m.wip, "{:.1f}"),
                (QUEUE_DELAY, sample.queue_delay * 1000, "{:.1f} ms"),
                (SERVICE_TIME, m.service_time * 1000, "{:.1f} ms"),
                (WAIT_TIME, m.wait_time * 1000, "{:.1f} ms"),
            ):
                peak = peaks[name] = max(peaks.get(name, value), value)
                table.add_row(name, fmt.format(value), fmt.format(peak))
            table.add_row("sent / answered", f"{sample.sent} / {m.event_count}", "")
        return Group(table, self._progress)


def _flow_rows(sample: Sample, config: DemoConfig) -> list[tuple[str, float, str]]:
    """The live view's rows of the ``flow`` profile (none for the others)."""
    if sample.held is None or sample.limited_rate is None:
        return []
    limit = f"alert calls (limit {alert_limit(config.rate):g}/s)"
    return [(HELD, sample.held, "{:.0f}"), (limit, sample.limited_rate, "{:.1f}/s")]


def _percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0 to 1) of ``values`` by the nearest-rank method."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else 0.0


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _spread(values: Sequence[float]) -> str:
    """Mean, median, 95th percentile and maximum of ``values`` (seconds), in
    milliseconds."""
    mean = _mean(values) * 1000
    p50 = _percentile(values, 0.5) * 1000
    p95 = _percentile(values, 0.95) * 1000
    top = max(values, default=0.0) * 1000
    return f"mean {mean:.0f} / p50 {p50:.0f} / p95 {p95:.0f} / max {top:.0f} ms"


def _summary_rows(report: DemoReport) -> list[tuple[str, str]]:
    config = report.config
    last = report.samples[-1].metrics if report.samples else None
    sent_rate = report.sent / config.duration if config.duration else 0.0
    return [
        ("profile", f"{config.profile}, peak {config.rate:g} events/s"),
        ("handler latency", f"{_ms(config.latency)} ± {_ms(config.spread)}"),
        ("run time", f"{report.elapsed:.1f} s (load {config.duration:g} s)"),
        ("events sent", f"{report.sent} ({sent_rate:.1f} events/s)"),
        ("answered ok", str(report.ok)),
        ("handler errors", str(report.failed)),
        ("cancelled at shutdown", str(report.cancelled)),
        (
            "consumers: peak / last",
            f"{report.peak('consumers'):.0f} / {last.consumers if last else 0}",
        ),
        ("peak queue size", f"{report.peak('qsize'):.0f}"),
        (f"peak {ARRIVAL_RATE}", f"{report.peak('arrival_rate'):.1f} events/s"),
        (f"{SERVICE_TIME}: mean", _ms(_mean(report.service_times))),
        (QUEUE_DELAY, _spread(report.queue_delays)),
        (WAIT_TIME, _spread(report.wait_times)),
        *_flow_summary(report),
    ]


def _flow_summary(report: DemoReport) -> list[tuple[str, str]]:
    """The summary's rows of the ``flow`` profile (none for the others)."""
    flow = report.flow
    if flow is None:
        return []
    held = max((s.held or 0 for s in report.samples), default=0)
    return [
        (
            "ordering keys",
            f"{flow.keys} devices, {flow.readings} readings: at most "
            f"{flow.most_per_key} of a device at once, {flow.out_of_order} "
            "out of order",
        ),
        (
            "rate-limited collector",
            f"alert, limit {flow.alert_limit:g}/s: {flow.alerts} calls, "
            f"at most {flow.peak_alert_rate:.1f}/s between two samples",
        ),
        (f"peak {HELD}", str(held)),
    ]


def print_summary(report: DemoReport, console: Console) -> None:
    """Print the table that ends a run: what was sent, answered and measured."""
    from rich.table import Table

    table = Table(title="event-collector demo: summary", show_header=False)
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    for name, value in _summary_rows(report):
        table.add_row(name, value)
    console.print(table)


def plot_format(path: str | Path) -> str:
    """The chart format that ``path``'s extension names, one of
    :data:`PLOT_FORMATS` (the extension's case does not matter).

    :raises ValueError: the extension is missing or names another format.
    """
    suffix = Path(path).suffix
    name = suffix.lower().removeprefix(".")
    if name not in PLOT_FORMATS:
        allowed = ", ".join(f".{f}" for f in PLOT_FORMATS)
        what = f"extension {suffix!r}" if suffix else "no extension"
        raise ValueError(
            f"the chart file must end in one of {allowed} (got {what} in {str(path)!r})"
        )
    return name


def write_plot(report: DemoReport, path: str | Path) -> None:
    """Write a chart of the timeline to ``path``: consumers and queue size
    against the arrival rate, and the queue delay, wait and service times.

    The format is the one the extension names, in any case: ``.png``,
    ``.svg`` or ``.pdf``. Uses matplotlib through
    :class:`matplotlib.figure.Figure`, so no GUI backend and no global
    pyplot state are involved.

    :raises ValueError: ``path`` has another extension, or none.
    :raises OSError: the file cannot be written.
    """
    fmt = plot_format(path)
    from matplotlib.figure import Figure

    config = report.config
    samples = report.samples
    t = [s.t for s in samples]
    # Averages read 0 during the warm-up: leave them out rather than draw a
    # misleading drop to 0.
    warm = [s for s in samples if s.t >= DEMO_METRICS_WARMUP_INTERVAL]
    tw = [s.t for s in warm]
    steps = 400
    t_offered = [config.duration * i / steps for i in range(steps + 1)]
    offered = [
        profile_rate(config.profile, x, rate=config.rate, duration=config.duration)
        for x in t_offered
    ]

    fig = Figure(figsize=(10, 6.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    top.step(t, [s.metrics.consumers for s in samples], where="post", label="consumers")
    top.plot(t, [s.metrics.qsize for s in samples], color="tab:red", label="queue size")
    if report.flow is not None:
        top.plot(t, [s.held or 0 for s in samples], color="tab:purple", label=HELD)
    top.set_ylabel("consumers, events queued")
    top.set_ylim(bottom=0)
    rates = top.twinx()
    rates.plot(
        t_offered, offered, linestyle="--", color="tab:gray", label="offered rate"
    )
    rates.plot(
        tw,
        [s.metrics.arrival_rate for s in warm],
        color="tab:green",
        label=ARRIVAL_RATE,
    )
    rates.set_ylabel("events/s")
    rates.set_ylim(bottom=0)
    lines = top.get_lines() + rates.get_lines()
    top.legend(lines, [str(line.get_label()) for line in lines], loc="upper left")
    for label, values in (
        (WAIT_TIME, [s.metrics.wait_time for s in warm]),
        (QUEUE_DELAY, [s.queue_delay for s in warm]),
        (SERVICE_TIME, [s.metrics.service_time for s in warm]),
    ):
        bottom.plot(tw, [v * 1000 for v in values], label=label)
    bottom.set_ylabel(f"ms, mean of the last {DEMO_EVENT_WINDOW} events")
    bottom.set_ylim(bottom=0)
    bottom.set_xlabel("seconds")
    bottom.set_xlim(0, config.duration)
    bottom.legend(loc="lower right")
    fig.suptitle(
        f"event-collector demo: {config.profile} load, peak {config.rate:g} "
        f"events/s, handler {config.latency * 1000:g} ± {config.spread * 1000:g} ms"
    )
    fig.savefig(path, format=fmt, dpi=100)
