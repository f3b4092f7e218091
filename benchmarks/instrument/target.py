"""The ``instrument`` target: what instrumentation costs, one round.

Six child processes (``benchmarks/_child.py``) measure the trivial-handler
throughput of the ``throughput`` target, one consumer, each set up its own
way: the code before the instrumentation seam (git ref :data:`BASE_REF`,
extracted from this clone) and, on this checkout's ``src/``, nothing
installed (``plain``), ``otel.instrument(queue)`` with no tracer provider
set (``otel-idle``), ``instrument`` with the OpenTelemetry SDK and an
exporter that drops the spans (``otel-sdk``), and
``sender_context.carry(queue)`` (``sender-context``), and
``prometheus.instrument(queue)`` (``prometheus``). They take turns,
``instrument_pairs`` times, the order reversed from one turn to the next,
so that a neighbour's load on this shared machine falls on every side
alike. Ratios are taken within each turn; the figures are their medians.

Goals: ``otel-idle`` at least 0.95x ``plain`` (tracing that is not turned
on costs nothing measurable), and ``plain`` at least 0.95x the base (the
seam costs nothing measurable when unused). The SDK's, the sender
context's and the Prometheus exporter's costs are reported per event, in
microseconds, as the time per event over ``plain``'s.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .._loops import LoopFactory
from ..flow._sides import ROOT, Side, SideFailed, base_source
from ..flow.target import _loop_name

if TYPE_CHECKING:
    from ..targets import Sizes, Verdict

__all__ = ["BASE_REF", "IDLE_GOAL", "SEAM_GOAL", "judge", "measure"]

BASE_REF = "69c5988"
"""The last commit before the instrumentation seam."""

IDLE_GOAL = 0.95
SEAM_GOAL = 0.95

CHILD = Path(__file__).parents[1] / "_child.py"
MODES = ("plain", "otel-idle", "otel-sdk", "sender-context", "prometheus")


def measure(
    factory: LoopFactory, sizes: Sizes, library_first: bool
) -> dict[str, float]:
    """One round of the target (see the module's docstring)."""
    loop = _loop_name(factory)
    events, turns = sizes.instrument_events, sizes.instrument_pairs
    base = base_source(BASE_REF)
    if base is None:
        print(
            f"instrument: git ref {BASE_REF} is not in this clone (a shallow "
            "clone?): the seam is not compared with the code before it",
            file=sys.stderr,
        )
    rates: dict[str, list[float]] = {}
    with contextlib.ExitStack() as stack:
        sides: dict[str, Side] = {}
        try:
            if base is not None:
                sides["base"] = Side(base, events, loop, child=CHILD)
            for mode in MODES:
                sides[mode] = Side(
                    ROOT / "src", events, loop, child=CHILD, args=("--mode", mode)
                )
            for side in sides.values():
                stack.callback(side.close)
            for side in sides.values():
                side.ready()
            names = list(sides)
            for turn in range(turns):
                order = names if (turn % 2 == 0) != library_first else names[::-1]
                for name in order:
                    rates.setdefault(name, []).append(sides[name].run()["events_per_s"])
        except SideFailed as exc:
            raise RuntimeError(f"instrument: a side failed: {exc}") from exc

    def ratio(top: str, bottom: str) -> float:
        if top not in rates or bottom not in rates:
            return math.nan
        return statistics.median(
            t / b for t, b in zip(rates[top], rates[bottom], strict=True)
        )

    def extra_us(name: str) -> float:
        return statistics.median(
            (1 / r - 1 / p) * 1e6
            for r, p in zip(rates[name], rates["plain"], strict=True)
        )

    figures = {
        f"{name.replace('-', '_')}_events_per_s": statistics.median(values)
        for name, values in rates.items()
    }
    figures.setdefault("base_events_per_s", math.nan)
    return figures | {
        "base_measured": 0.0 if base is None else 1.0,
        "idle_ratio": ratio("otel-idle", "plain"),
        "seam_ratio": ratio("plain", "base"),
        "sdk_ratio": ratio("otel-sdk", "plain"),
        "sdk_extra_us": extra_us("otel-sdk"),
        "sender_context_ratio": ratio("sender-context", "plain"),
        "sender_context_extra_us": extra_us("sender-context"),
        "prometheus_ratio": ratio("prometheus", "plain"),
        "prometheus_extra_us": extra_us("prometheus"),
    }


def judge(medians: dict[str, float]) -> Verdict:
    """Met when tracing that is installed but not turned on makes at least
    0.95x the throughput of no tracing, and the checkout with nothing
    installed at least 0.95x the base's (when it was measured)."""
    from ..targets import Verdict

    idle, seam = medians["idle_ratio"], medians["seam_ratio"]
    parts = [f"otel installed, no provider: {idle:.3f}x plain"]
    met = idle >= IDLE_GOAL
    if medians["base_measured"] > 0 and not math.isnan(seam):
        parts.append(f"plain {seam:.3f}x {BASE_REF}")
        met = met and seam >= SEAM_GOAL
    else:
        parts.append(f"seam: not compared ({BASE_REF} not in this clone)")
    parts.append(
        f"SDK tracing +{medians['sdk_extra_us']:.1f} us/event "
        f"({medians['sdk_ratio']:.2f}x)"
    )
    parts.append(
        f"sender context +{medians['sender_context_extra_us']:.1f} us/event "
        f"({medians['sender_context_ratio']:.2f}x)"
    )
    parts.append(
        f"Prometheus +{medians['prometheus_extra_us']:.1f} us/event "
        f"({medians['prometheus_ratio']:.2f}x)"
    )
    return Verdict(idle, "; ".join(parts), met)
