"""The ``event-collector`` command.

``event-collector demo`` runs a real :class:`~event_collector.CollectorQueue`
under a synthetic load and shows the pool at work: a live terminal view while
it runs, a summary at the end, and on request a chart (``--plot``) or the
metrics timeline as JSON lines (``--json``).

The terminal view needs rich and the chart needs matplotlib; both come with
the ``cli`` extra (``pip install "event-collector[cli]"``) and are imported
only when used.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import random
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from . import __version__
from .collector import Collector
from .data import Context, Error, Payload
from .exceptions import EventCancelled
from .queue import (
    MIN_METRICS_COLLECTOR_WINDOW_SIZE,
    CollectorQueue,
    Metrics,
    metrics_json_fields,
)

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from .publisher import CollectorEvent

__all__ = [
    "DEMO_AVG_LOAD_INTERVAL",
    "DEMO_METRICS_WARMUP_INTERVAL",
    "DEMO_METRICS_WINDOW",
    "PROFILES",
    "DemoConfig",
    "DemoReport",
    "Sample",
    "arrival_times",
    "main",
    "profile_rate",
    "run_demo",
    "write_plot",
]

CLI_EXTRA = 'pip install "event-collector[cli]"'
"""The command that installs the optional dependencies of this module."""

DEMO_METRICS_WARMUP_INTERVAL = 1.0
"""``metrics_warmup_interval`` of the demo queue (seconds): short, so that a
20 s run shows rates almost from the start."""

DEMO_METRICS_WINDOW = MIN_METRICS_COLLECTOR_WINDOW_SIZE
"""``metrics_collector_window_size`` of the demo queue (seconds), the
smallest the queue allows: the rates follow a changing load closely."""

DEMO_AVG_LOAD_INTERVAL = 5.0
"""``avg_load_interval`` of the demo queue (seconds), so that the pool
shrinks within a short run once a burst is over."""


# -- load profiles -----------------------------------------------------------
#
# Each profile maps the fraction of the run elapsed (0 to 1) to a fraction of
# the peak rate (0 to 1). They are pure functions: the same time always gives
# the same rate.


def _steady(x: float) -> float:
    return 1.0


def _burst(x: float) -> float:
    # A quiet baseline with two bursts at the peak rate.
    return 1.0 if 0.2 <= x < 0.35 or 0.6 <= x < 0.75 else 0.1


def _ramp(x: float) -> float:
    return 0.1 + 0.9 * x


def _wave(x: float) -> float:
    # Two full periods between 10 % and 100 %, starting low.
    return 0.55 - 0.45 * math.cos(4.0 * math.pi * x)


PROFILES: dict[str, Callable[[float], float]] = {
    "steady": _steady,
    "burst": _burst,
    "ramp": _ramp,
    "wave": _wave,
}
"""Load profiles by name: each maps the elapsed fraction of the run (0 to 1)
to the fraction of the peak rate offered at that moment."""

PROFILE_HELP = {
    "steady": "the peak rate all along",
    "burst": "10%% of the peak, with bursts at the peak from 20-35%% and 60-75%% "
    "of the run",
    "ramp": "rises linearly from 10%% to 100%% of the peak",
    "wave": "two sine periods between 10%% and 100%% of the peak",
}


def profile_rate(
    profile: str, elapsed: float, *, rate: float, duration: float
) -> float:
    """The arrival rate (events/s) a profile offers ``elapsed`` seconds into a
    run of ``duration`` seconds whose peak rate is ``rate`` events/s.

    Outside ``[0, duration]`` the rate is 0.

    :raises ValueError: unknown ``profile``, or ``duration`` not positive.
    """
    try:
        shape = PROFILES[profile]
    except KeyError:
        raise ValueError(
            f"profile must be one of {sorted(PROFILES)} (got profile={profile!r})"
        ) from None
    if not duration > 0:
        raise ValueError(f"duration must be > 0 seconds (got duration={duration!r})")
    if elapsed < 0.0 or elapsed > duration:
        return 0.0
    return rate * shape(elapsed / duration)


def arrival_times(
    profile: str, *, rate: float, duration: float, seed: int | None = None
) -> Iterator[float]:
    """Send times (seconds from the start of the run) of a Poisson process
    whose intensity follows ``profile``.

    Candidates are drawn at the peak ``rate`` and each is kept with
    probability ``profile_rate(t) / rate`` (thinning), so the arrivals follow
    the profile's instantaneous rate. The same ``seed`` gives the same times.
    """
    if not rate > 0:
        raise ValueError(f"rate must be > 0 events/s (got rate={rate!r})")
    profile_rate(profile, 0.0, rate=rate, duration=duration)  # check arguments
    rng = random.Random(seed)
    t = 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= duration:
            return
        if rng.random() * rate < profile_rate(profile, t, rate=rate, duration=duration):
            yield t


# -- the demo run ------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class DemoConfig:
    """What ``event-collector demo`` runs (see ``--help`` for each field)."""

    profile: str = "burst"
    rate: float = 300.0
    latency: float = 0.1
    spread: float = 0.05
    error_rate: float = 0.0
    min_consumers: int = 1
    max_consumers: int = 1000
    duration: float = 20.0
    interval: float = 0.5
    seed: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Sample:
    """One point of the metrics timeline."""

    t: float
    """Seconds since the load started."""
    offered_rate: float
    """The rate the profile asks for at ``t`` (events/s)."""
    sent: int
    """Events sent so far."""
    metrics: Metrics
    """The queue's metrics at ``t``."""

    def as_dict(self) -> dict[str, Any]:
        """The sample as a flat JSON-ready mapping."""
        fields = metrics_json_fields(self.metrics)
        return {
            "t": round(self.t, 6),
            "offered_rate": self.offered_rate,
            "sent": self.sent,
            **fields,
        }


@dataclasses.dataclass(slots=True)
class DemoReport:
    """What a demo run measured."""

    config: DemoConfig
    samples: list[Sample]
    """The metrics timeline, one sample per ``interval``."""
    sent: int
    """Events sent."""
    ok: int
    """Events answered with ``Ok``."""
    failed: int
    """Events whose handler raised."""
    cancelled: int
    """Events the shutdown answered with ``EventCancelled``."""
    elapsed: float
    """Seconds from the first send to the end of the shutdown."""
    wait_times: list[float]
    """Send-to-answer seconds of each event handled by a consumer."""
    service_times: list[float]
    """Handler seconds of each event handled by a consumer."""

    @property
    def answered(self) -> int:
        """Events handled by a consumer (``ok + failed``)."""
        return self.ok + self.failed

    def peak(self, name: str) -> float:
        """The largest value of a metric over the timeline (0 if empty)."""
        return max((float(getattr(s.metrics, name)) for s in self.samples), default=0)


class SimulatedFailure(Exception):
    """Raised by the demo handler for the share of events ``--error-rate``
    asks to fail."""


async def _demo_handler(payload: Payload[Any], ctx: Context) -> float:
    delay, fail = payload.value
    await asyncio.sleep(delay)
    if fail:
        raise SimulatedFailure(f"simulated failure after {delay:.3f} s")
    return float(delay)


async def run_demo(
    config: DemoConfig, *, on_sample: Callable[[Sample], None] | None = None
) -> DemoReport:
    """Run a collector queue under the configured load and measure it.

    Events are sent at the times :func:`arrival_times` gives, measured on the
    event loop's clock; the sender never waits for results. A sampler takes
    the queue's metrics every ``config.interval`` seconds and hands each
    sample to ``on_sample``. When ``config.duration`` is over, the queue is
    shut down (it drains what is queued) and every event's result is read.
    """
    loop = asyncio.get_running_loop()
    queue = CollectorQueue(
        [Collector("demo", _demo_handler)],
        min_consumers=config.min_consumers,
        max_consumers=config.max_consumers,
        avg_load_interval=DEMO_AVG_LOAD_INTERVAL,
        metrics_collector_window_size=DEMO_METRICS_WINDOW,
        metrics_warmup_interval=DEMO_METRICS_WARMUP_INTERVAL,
        logging=False,
        clock=loop.time,
    )
    rng = random.Random(None if config.seed is None else config.seed + 1)
    events: list[CollectorEvent[Any]] = []
    samples: list[Sample] = []

    async with queue:
        publisher = queue.get_publisher()
        start = loop.time()
        end = start + config.duration

        async def send_load() -> None:
            for at in arrival_times(
                config.profile,
                rate=config.rate,
                duration=config.duration,
                seed=config.seed,
            ):
                delay = start + at - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                handler_time = max(
                    0.0, config.latency + config.spread * (2.0 * rng.random() - 1.0)
                )
                fail = rng.random() < config.error_rate
                events.append(publisher.send_nowait((handler_time, fail)))

        async def take_samples() -> None:
            k = 1
            while True:
                due = min(start + k * config.interval, end)
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                t = due - start
                sample = Sample(
                    t=t,
                    offered_rate=profile_rate(
                        config.profile, t, rate=config.rate, duration=config.duration
                    ),
                    sent=len(events),
                    metrics=queue.get_metrics(),
                )
                samples.append(sample)
                if on_sample is not None:
                    on_sample(sample)
                if due >= end:
                    return
                k += 1

        await asyncio.gather(send_load(), take_samples())
    elapsed = loop.time() - start

    ok = failed = cancelled = 0
    wait_times: list[float] = []
    service_times: list[float] = []
    for event in events:
        # The queue has shut down: every event has its answer.
        result = (await event.wait()).first()
        if isinstance(result, Error):
            if isinstance(result.err, EventCancelled):
                cancelled += 1
                continue
            failed += 1
        else:
            ok += 1
        if event.wait_time is not None:
            wait_times.append(event.wait_time)
        if event.service_time is not None:
            service_times.append(event.service_time)
    return DemoReport(
        config=config,
        samples=samples,
        sent=len(events),
        ok=ok,
        failed=failed,
        cancelled=cancelled,
        elapsed=elapsed,
        wait_times=wait_times,
        service_times=service_times,
    )


def _percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0 to 1) of ``values`` by the nearest-rank method."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else 0.0


# -- output ------------------------------------------------------------------


def _import_rich() -> None:
    try:
        import rich  # noqa: F401
    except ImportError:
        raise _MissingExtra("rich", "the live terminal view") from None


def _import_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise _MissingExtra("matplotlib", "--plot") from None


class _MissingExtra(Exception):
    def __init__(self, package: str, feature: str) -> None:
        super().__init__(
            f"event-collector: {feature} needs {package}, which is not installed.\n"
            f"Install the command's extras with: {CLI_EXTRA}"
        )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


class _LiveView:
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

    def __enter__(self) -> _LiveView:
        self._live.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._live.__exit__(None, None, None)

    def update(self, sample: Sample) -> None:
        self._progress.update(self._task, completed=sample.t)
        self._live.update(self._render(sample))

    def _render(self, sample: Sample | None) -> RenderableType:
        from rich.console import Group
        from rich.table import Table

        table = Table(show_header=True, header_style="bold", expand=False)
        table.add_column("metric")
        table.add_column("now", justify="right")
        table.add_column("peak", justify="right")
        if sample is not None:
            m = sample.metrics
            peaks = self._peaks
            for name, value, fmt in (
                ("offered rate", sample.offered_rate, "{:.0f}/s"),
                ("arrival rate", m.arrival_rate, "{:.0f}/s"),
                ("departure rate", m.departure_rate, "{:.0f}/s"),
                ("consumers", m.consumers, "{:.0f}"),
                ("busy", m.busy, "{:.0f}"),
                ("queue size", m.qsize, "{:.0f}"),
                ("load", m.load, "{:.2f}"),
                ("average load", m.avg_load, "{:.2f}"),
                ("wip (Little's law)", m.wip, "{:.1f}"),
                ("service time", m.service_time * 1000, "{:.1f} ms"),
                ("wait time", m.wait_time * 1000, "{:.1f} ms"),
            ):
                peak = peaks[name] = max(peaks.get(name, value), value)
                table.add_row(name, fmt.format(value), fmt.format(peak))
            table.add_row("sent / answered", f"{sample.sent} / {m.event_count}", "")
        return Group(table, self._progress)


def _summary_rows(report: DemoReport) -> list[tuple[str, str]]:
    config = report.config
    last = report.samples[-1].metrics if report.samples else None
    waits = report.wait_times
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
        ("peak arrival rate", f"{report.peak('arrival_rate'):.1f} events/s"),
        ("mean service time", _ms(_mean(report.service_times))),
        (
            "wait time: mean / p50 / p95 / max",
            " / ".join(
                f"{v * 1000:.0f}"
                for v in (
                    _mean(waits),
                    _percentile(waits, 0.5),
                    _percentile(waits, 0.95),
                    max(waits, default=0.0),
                )
            )
            + " ms",
        ),
    ]


def _print_summary(report: DemoReport, console: Console) -> None:
    from rich.table import Table

    table = Table(title="event-collector demo: summary", show_header=False)
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    for name, value in _summary_rows(report):
        table.add_row(name, value)
    console.print(table)


def write_plot(report: DemoReport, path: str | Path) -> None:
    """Write a PNG chart of the timeline: consumers and queue size against
    the arrival rate, and the wait and service times.

    Uses matplotlib's Agg renderer through :class:`matplotlib.figure.Figure`,
    so no GUI backend and no global pyplot state are involved.
    """
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
        label=f"arrival rate ({DEMO_METRICS_WINDOW:g} s window)",
    )
    rates.set_ylabel("events/s")
    rates.set_ylim(bottom=0)
    lines = top.get_lines() + rates.get_lines()
    top.legend(lines, [str(line.get_label()) for line in lines], loc="upper left")
    bottom.plot(
        tw,
        [s.metrics.wait_time * 1000 for s in warm],
        label="wait time (send to answer)",
    )
    bottom.plot(
        tw,
        [s.metrics.service_time * 1000 for s in warm],
        label="service time (handler)",
    )
    bottom.set_ylabel("ms, mean of recent events")
    bottom.set_ylim(bottom=0)
    bottom.set_xlabel("seconds")
    bottom.set_xlim(0, config.duration)
    bottom.legend(loc="lower right")
    fig.suptitle(
        f"event-collector demo: {config.profile} load, peak {config.rate:g} "
        f"events/s, handler {config.latency * 1000:g} ± {config.spread * 1000:g} ms"
    )
    fig.savefig(path, format="png", dpi=100)


# -- command line ------------------------------------------------------------


def _number(kind: Callable[[str], float], *, minimum: float, strict: bool) -> Any:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        bad = not math.isfinite(value) or (
            value <= minimum if strict else value < minimum
        )
        if bad:
            sign = ">" if strict else ">="
            raise argparse.ArgumentTypeError(f"must be {sign} {minimum:g}: {text!r}")
        return value

    return parse


_positive = _number(float, minimum=0.0, strict=True)
_non_negative = _number(float, minimum=0.0, strict=False)
_positive_int = _number(int, minimum=1, strict=False)


def _fraction(text: str) -> float:
    value: float = _non_negative(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {text!r}")
    return value


_DEFAULTS = DemoConfig()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``event-collector``."""
    parser = argparse.ArgumentParser(
        prog="event-collector",
        description="Tools for event-collector, the autoscaling asyncio "
        "collector queue.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    profiles = "; ".join(f"{name}: {text}" for name, text in PROFILE_HELP.items())
    demo = commands.add_parser(
        "demo",
        help="run a collector queue under a synthetic load and watch it scale",
        description="Run a real CollectorQueue under a synthetic load: a live "
        "view of its metrics while it runs, a summary at the end. Events "
        "arrive as a Poisson process following the chosen profile; each "
        "handler call sleeps for the given latency. The demo queue uses "
        f"metrics_warmup_interval={DEMO_METRICS_WARMUP_INTERVAL:g} s, "
        f"metrics_collector_window_size={DEMO_METRICS_WINDOW:g} s and "
        f"avg_load_interval={DEMO_AVG_LOAD_INTERVAL:g} s (instead of the "
        "defaults of 3, 60 and 60 s), so that a run of a few seconds shows "
        f"meaningful rates. Needs the cli extra: {CLI_EXTRA}",
    )
    demo.set_defaults(demo_parser=demo)
    demo.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="burst",
        help=f"shape of the load over time (default: burst). {profiles}",
    )
    demo.add_argument(
        "--rate",
        type=_positive,
        default=_DEFAULTS.rate,
        help="peak arrival rate, events/s (default: %(default)s)",
    )
    demo.add_argument(
        "--latency",
        type=_non_negative,
        default=_DEFAULTS.latency,
        help="mean handler time, seconds (default: %(default)s)",
    )
    demo.add_argument(
        "--spread",
        type=_non_negative,
        default=_DEFAULTS.spread,
        help="jitter of the handler time: each call sleeps a time drawn "
        "uniformly from latency +/- spread, seconds (default: %(default)s)",
    )
    demo.add_argument(
        "--error-rate",
        type=_fraction,
        default=_DEFAULTS.error_rate,
        help="share of events whose handler raises, 0 to 1 (default: %(default)s)",
    )
    demo.add_argument(
        "--min-consumers",
        type=_positive_int,
        default=_DEFAULTS.min_consumers,
        help="fewest consumers (default: %(default)s)",
    )
    demo.add_argument(
        "--max-consumers",
        type=_positive_int,
        default=_DEFAULTS.max_consumers,
        help="most consumers (default: %(default)s)",
    )
    demo.add_argument(
        "--duration",
        type=_positive,
        default=_DEFAULTS.duration,
        help="seconds of load (default: %(default)s)",
    )
    demo.add_argument(
        "--interval",
        type=_positive,
        default=_DEFAULTS.interval,
        help="seconds between two samples of the metrics timeline "
        "(default: %(default)s)",
    )
    demo.add_argument(
        "--seed", type=int, default=None, help="random seed, for a repeatable load"
    )
    demo.add_argument(
        "--plot",
        metavar="FILE.png",
        type=Path,
        default=None,
        help="write a chart of the run to this PNG file (needs matplotlib)",
    )
    demo.add_argument(
        "--json",
        action="store_true",
        help="print the metrics timeline on stdout as JSON lines, one object "
        "per sample, and nothing else",
    )
    return parser


def _config_from(args: argparse.Namespace) -> DemoConfig:
    return DemoConfig(
        profile=args.profile,
        rate=args.rate,
        latency=args.latency,
        spread=args.spread,
        error_rate=args.error_rate,
        min_consumers=args.min_consumers,
        max_consumers=args.max_consumers,
        duration=args.duration,
        interval=args.interval,
        seed=args.seed,
    )


def _rich_console(stream: TextIO) -> Console:
    from rich.console import Console

    return Console(file=stream)


def _run(coro: Coroutine[Any, Any, DemoReport]) -> DemoReport:
    # A private loop, never installed as the thread's current loop: a caller
    # that has one (a test runner, an embedding application) keeps it.
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        return runner.run(coro)


def _demo(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.demo_parser
    if args.max_consumers < args.min_consumers:
        parser.error(
            "--max-consumers must be >= --min-consumers (got "
            f"--max-consumers={args.max_consumers}, "
            f"--min-consumers={args.min_consumers})"
        )
    config = _config_from(args)
    if args.plot is not None:
        _import_matplotlib()
    if args.json:
        # stdout carries the JSON lines only; the view goes to stderr, and
        # only to a terminal.
        view_stream: TextIO | None = sys.stderr if sys.stderr.isatty() else None
        if view_stream is not None:
            try:
                _import_rich()
            except _MissingExtra:
                view_stream = None
    else:
        _import_rich()
        view_stream = sys.stdout

    console = _rich_console(view_stream) if view_stream is not None else None
    out = sys.stdout

    def emit_json(sample: Sample) -> None:
        out.write(json.dumps(sample.as_dict()) + "\n")
        out.flush()

    if console is not None:
        with _LiveView(config, console) as view:

            def on_sample(sample: Sample) -> None:
                view.update(sample)
                if args.json:
                    emit_json(sample)

            report = _run(run_demo(config, on_sample=on_sample))
        if not console.is_terminal:
            console.line()  # the last frame of the view ends without one
        _print_summary(report, console)
    else:
        report = _run(run_demo(config, on_sample=emit_json if args.json else None))
        print(
            f"event-collector demo: sent {report.sent}, answered {report.answered} "
            f"({report.failed} errors), cancelled {report.cancelled}, "
            f"peak consumers {report.peak('consumers'):.0f}",
            file=sys.stderr,
        )
    if args.plot is not None:
        write_plot(report, args.plot)
        message = f"chart written to {args.plot}"
        if console is not None:
            console.print(message)
        else:
            print(message, file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``event-collector`` with ``argv`` (``sys.argv[1:]`` by default);
    return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return _demo(args)
    except _MissingExtra as exc:
        print(exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("event-collector: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
