"""The ``event-collector`` command.

``event-collector demo`` runs a real :class:`~event_collector.queue.CollectorQueue`
under a synthetic load and shows the pool at work: a live terminal view while
it runs, a summary at the end, and on request a chart (``--plot``) or the
metrics timeline as JSON lines (``--json``).

``event-collector worker MODULE:ATTR --redis URL --stream NAME`` runs the
collectors that ``MODULE:ATTR`` names as one worker of a fleet sharing a
Redis stream, until SIGTERM or SIGINT.

``event-collector top redis://HOST:PORT/DB --stream NAME`` shows that fleet
live: each worker's figures, the stream's backlog, and the number of
workers the load needs.

The terminal views need rich and the chart needs matplotlib; both come with
the ``cli`` extra (``pip install -e ".[cli]"`` from a checkout) and are imported
only when used; ``worker`` and ``top`` need the ``redis`` extra too.

This module holds the command line only: the demo's run is
:mod:`event_collector.demo`, whose names it re-exports; the demo's view,
summary and chart, the worker's run and the fleet view come from private
modules.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TextIO

from . import __version__
from ._cli_common import (
    CannotRun,
    Refused,
    is_terminal,
    non_negative,
    positive,
    positive_int,
)
from ._demo_output import (
    CLI_EXTRA,
    PLOT_FORMATS,
    LiveView,
    MissingExtra,
    plot_format,
    print_summary,
    require,
    rich_console,
    write_plot,
)
from ._top_cli import add_top_parser
from ._worker_cli import add_worker_parser
from .demo import (
    DEMO_AVG_LOAD_INTERVAL,
    DEMO_EVENT_WINDOW,
    DEMO_METRICS_WARMUP_INTERVAL,
    DEMO_METRICS_WINDOW,
    PROFILES,
    DemoConfig,
    DemoReport,
    Sample,
    arrival_times,
    profile_rate,
    run_demo,
)
from .demo import SimulatedFailure as SimulatedFailure

__all__ = [
    "DEMO_AVG_LOAD_INTERVAL",
    "DEMO_EVENT_WINDOW",
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

_PROFILE_HELP = {
    "steady": "the peak rate all along",
    "burst": "10%% of the peak, with bursts at the peak from 20-35%% and 60-75%% "
    "of the run",
    "ramp": "rises linearly from 10%% to 100%% of the peak",
    "wave": "two sine periods between 10%% and 100%% of the peak",
    "flow": "the burst load as readings of 20 devices, each device an ordering "
    "key, and 10%% alerts to a collector rate-limited to half their peak rate",
}


def _fraction(text: str) -> float:
    value: float = non_negative(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {text!r}")
    return value


def _plot_file(text: str) -> Path:
    # Checked while the arguments are parsed, so that a chart that cannot be
    # written is refused at once rather than after the whole run.
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, not a file")
    try:
        plot_format(path)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    folder = path.parent
    if not folder.exists():
        raise argparse.ArgumentTypeError(
            f"folder {str(folder)!r} does not exist (got {text!r})"
        )
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(
            f"{str(folder)!r} is not a folder (got {text!r})"
        )
    if not os.access(path if path.exists() else folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write to {text!r}: permission denied")
    return path


_DEFAULTS = DemoConfig()


# The numeric options of the demo as (option, type, help): each sets the
# DemoConfig field of the same name and defaults to that field's default.
_NUMBER_OPTIONS: tuple[tuple[str, Callable[[str], Any], str], ...] = (
    ("--rate", positive, "peak arrival rate, events/s"),
    ("--latency", non_negative, "mean handler time, seconds"),
    (
        "--spread",
        non_negative,
        "jitter of the handler time: each call sleeps a time drawn "
        "uniformly from latency +/- spread, seconds",
    ),
    ("--error-rate", _fraction, "share of events whose handler raises, 0 to 1"),
    ("--min-consumers", positive_int, "fewest consumers"),
    ("--max-consumers", positive_int, "most consumers"),
    ("--duration", positive, "seconds of load"),
    (
        "--interval",
        positive,
        "seconds between two samples of the metrics timeline",
    ),
)


def _build_parser() -> argparse.ArgumentParser:
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
    profiles = "; ".join(f"{name}: {text}" for name, text in _PROFILE_HELP.items())
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
    demo.set_defaults(demo_parser=demo, run=_demo)
    demo.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default=_DEFAULTS.profile,
        help=f"shape of the load over time (default: burst). {profiles}",
    )
    for option, kind, text in _NUMBER_OPTIONS:
        field = option.removeprefix("--").replace("-", "_")
        demo.add_argument(
            option,
            type=kind,
            default=getattr(_DEFAULTS, field),
            help=f"{text} (default: %(default)s)",
        )
    demo.add_argument(
        "--seed", type=int, default=None, help="random seed, for a repeatable load"
    )
    formats = ", ".join(f".{f}" for f in PLOT_FORMATS)
    demo.add_argument(
        "--plot",
        metavar="FILE",
        type=_plot_file,
        default=None,
        help="write a chart of the run to FILE, in the format its extension "
        f"names: {formats} (needs matplotlib)",
    )
    demo.add_argument(
        "--json",
        action="store_true",
        help="print the metrics timeline on stdout as JSON lines, one object "
        "per sample, and nothing else; the live view is then drawn on stderr "
        "if stderr is a terminal and stdout is not, and left out otherwise",
    )
    add_worker_parser(commands)
    add_top_parser(commands)
    return parser


def _config_from(args: argparse.Namespace) -> DemoConfig:
    # Every option but --plot and --json has the name of a DemoConfig field.
    return DemoConfig(
        **{
            field.name: getattr(args, field.name)
            for field in dataclasses.fields(DemoConfig)
        }
    )


_LIVE_VIEW = "the live terminal view"
"""What needs rich, as the missing-extra message names it."""


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
        require("matplotlib", feature="--plot")
    if args.json:
        # stdout carries the JSON lines only. The view may go to stderr, but
        # only when that is a terminal and stdout is not (demo --json > file):
        # when both are, they share one screen, and the view's redrawing
        # would overwrite the JSON lines.
        view_stream: TextIO | None = None
        if is_terminal(sys.stderr) and not is_terminal(sys.stdout):
            view_stream = sys.stderr
        if view_stream is not None:
            try:
                require("rich", feature=_LIVE_VIEW)
            except MissingExtra:
                view_stream = None
    else:
        require("rich", feature=_LIVE_VIEW)
        view_stream = sys.stdout

    console = rich_console(view_stream) if view_stream is not None else None
    out = sys.stdout

    def emit_json(sample: Sample) -> None:
        out.write(json.dumps(sample.as_dict()) + "\n")
        out.flush()

    if console is not None:
        with LiveView(config, console) as view:

            def on_sample(sample: Sample) -> None:
                view.update(sample)
                if args.json:
                    emit_json(sample)

            report = _run(run_demo(config, on_sample=on_sample))
        if not console.is_terminal:
            console.line()  # the last frame of the view ends without one
        print_summary(report, console)
    else:
        report = _run(run_demo(config, on_sample=emit_json if args.json else None))
        print(
            f"event-collector demo: sent {report.sent}, answered {report.answered} "
            f"({report.failed} errors), cancelled {report.cancelled}, "
            f"peak consumers {report.peak('consumers'):.0f}",
            file=sys.stderr,
        )
    if args.plot is not None:
        try:
            write_plot(report, args.plot)
        except OSError as exc:
            # Checked before the run, but the disk may fill or the folder go.
            print(
                f"event-collector: cannot write the chart to {str(args.plot)!r}: "
                f"{exc.strerror or exc}",
                file=sys.stderr,
            )
            return 1
        message = f"chart written to {args.plot}"
        if console is not None:
            console.print(message)
        else:
            print(message, file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``event-collector`` with ``argv`` (``sys.argv[1:]`` by default);
    return the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        run: Callable[[argparse.Namespace], int] = args.run
        return run(args)
    except (MissingExtra, CannotRun) as exc:
        print(exc, file=sys.stderr)
        return 1
    except Refused as exc:
        print(f"event-collector {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("event-collector: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
