"""The command line: run the targets on each loop, print and save medians."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from ._loops import available_loops, loop_factory
from .targets import FULL, QUICK, TARGETS, Sizes, Target

__all__ = ["Outcome", "machine", "main", "run_target"]


@dataclasses.dataclass(slots=True)
class Outcome:
    """The rounds of one target on one loop, their medians and verdict."""

    target: str
    title: str
    loop: str
    goal: str
    unit: str
    rounds: list[dict[str, float]]
    medians: dict[str, float]
    baseline: float
    library: float
    figure: float
    verdict: str
    met: bool


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 0
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
    }


def run_target(target: Target, loop: str, sizes: Sizes, repeat: int) -> Outcome:
    """Run ``repeat`` rounds of ``target`` on ``loop`` (the baseline first
    in even rounds, the library first in odd ones), and judge the medians."""
    factory = loop_factory(loop)
    if target.name == "idle":
        repeat = max(1, min(repeat, sizes.max_idle_rounds))
    rounds = [target.measure(factory, sizes, i % 2 == 1) for i in range(repeat)]
    medians = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    verdict = target.judge(medians)
    return Outcome(
        target=target.name,
        title=target.title,
        loop=loop,
        goal=target.goal,
        unit=target.unit,
        rounds=rounds,
        medians=medians,
        baseline=medians[target.baseline_key],
        library=medians[target.library_key],
        figure=verdict.figure,
        verdict=verdict.text,
        met=verdict.met,
    )


def _number(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"


def format_table(outcomes: Sequence[Outcome]) -> str:
    """A Markdown table of ``outcomes``."""
    lines = [
        "| target | goal | baseline | library | unit | measured | met |",
        "| --- | --- | ---: | ---: | --- | --- | --- |",
    ]
    for o in outcomes:
        lines.append(
            f"| {o.title} | {o.goal} | {_number(o.baseline)} | "
            f"{_number(o.library)} | {o.unit} | {o.verdict} | "
            f"{'yes' if o.met else 'NO'} |"
        )
    return "\n".join(lines)


def format_details(outcomes: Sequence[Outcome]) -> str:
    """Every median, one line per target."""
    return "\n".join(
        f"- {o.target}: "
        + ", ".join(f"{k}={_number(v)}" for k, v in o.medians.items())
        + f" ({len(o.rounds)} rounds)"
        for o in outcomes
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=(
            "Measure event-collector against bare asyncio, alternating the two "
            "within each round, and report medians and ratios."
        ),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small workloads (about 12 s for both loops)",
    )
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop", "both"),
        default="both",
        help="event loop(s) to measure on (default: both, if uvloop is installed)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=sorted(TARGETS),
        metavar="NAME",
        help=f"run only these targets ({', '.join(TARGETS)})",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="rounds per target (default: 5, or 2 with --quick)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    args = parser.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        parser.error(f"--repeat must be >= 1 (got --repeat={args.repeat})")
    return args


def main(
    argv: Sequence[str] | None = None, *, echo: Callable[[str], None] = print
) -> list[Outcome]:
    """Run the suite as ``python -m benchmarks`` does; return the outcomes."""
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    repeat = args.repeat or (2 if args.quick else 5)
    names = args.only or list(TARGETS)
    try:
        loops = available_loops(args.loop)
    except ValueError as exc:
        echo(f"error: {exc}")
        raise SystemExit(2) from None
    info = machine()
    command = "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv)
    echo(f"$ {command.strip()}")
    echo(
        f"Python {info['python']} ({info['implementation']}), {info['platform']}, "
        f"{info['cpu_count']} CPUs ({info['usable_cpus']} usable), "
        f"loops: {', '.join(loops)}, rounds: {repeat}, "
        f"{'quick' if args.quick else 'full'} sizes"
    )
    outcomes: list[Outcome] = []
    started = time.perf_counter()
    for loop in loops:
        done: list[Outcome] = []
        for name in names:
            done.append(run_target(TARGETS[name], loop, sizes, repeat))
        echo(f"\n## loop: {loop}\n")
        echo(format_table(done))
        echo("")
        echo(format_details(done))
        outcomes.extend(done)
    if len(loops) > 1:
        echo("\n## library figures by loop\n")
        echo(format_by_loop(outcomes, loops))
    echo(f"\n{time.perf_counter() - started:.1f} s in all")
    if args.json:
        document = {
            "command": command.strip(),
            "machine": info,
            "sizes": dataclasses.asdict(sizes),
            "repeat": repeat,
            "results": [dataclasses.asdict(o) for o in outcomes],
        }
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=2)
            out.write("\n")
    return outcomes


def format_by_loop(outcomes: Sequence[Outcome], loops: Sequence[str]) -> str:
    """Target 7: the library's measured figure on each loop, side by side."""
    header = "| target | " + " | ".join(loops) + " |"
    lines = [header, "| --- |" + " --- |" * len(loops)]
    by_key = {(o.target, o.loop): o for o in outcomes}
    for name in dict.fromkeys(o.target for o in outcomes):
        cells = []
        for loop in loops:
            o = by_key.get((name, loop))
            cells.append(
                "-" if o is None else f"{o.verdict} ({'met' if o.met else 'not met'})"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
