"""The benchmark runner works and returns sane figures (no timing asserted),
and each target's judge draws the line where its goal says."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
from benchmarks import QUICK, TARGETS, Outcome, main, run_target
from benchmarks._loops import LoopFactory
from benchmarks.runner import format_by_loop, format_table
from benchmarks.targets import Sizes, Target, Verdict, pair, percentile

# Smaller still than --quick: this only checks that every workload runs.
TINY = dataclasses.replace(
    QUICK,
    throughput_events=300,
    io_events=200,
    io_workers=50,
    io_latency=0.001,
    idle_seconds=0.02,
    idle_burst=20,
    memory_events=500,
    burst_events=40,
    burst_latency=0.02,
    burst_max_consumers=80,
    burst_consumers_goal=20,
    latency_events=40,
    flow_events=300,
    flow_pairs=1,
    flow_keyed_events=300,
    flow_keys=30,
    flow_burst_events=20,
    instrument_events=300,
    instrument_pairs=1,
)

RATE_KEYS = {
    "bare_events_per_s",
    "library_events_per_s",
    "ratio",
    "cpu_ratio",
    "bare_gc_pct",
    "library_gc_pct",
}
MEDIAN_KEYS = {
    "throughput": RATE_KEYS,
    "io": RATE_KEYS,
    "idle": {"empty_loop_cpu_pct", "library_cpu_pct", "after_burst_cpu_pct"},
    "memory": {"bare_bytes_per_event", "library_bytes_per_event"},
    "scaleup": {
        "bare_completion_x",
        "library_completion_x",
        "library_time_to_goal_ms",
        "goal_seen_by_poller_ms",
        "goal_handlers_started_ms",
        "monitor_interval_ms",
        "consumers_goal",
    },
    "latency": {
        "bare_p50_ms",
        "bare_p99_ms",
        "library_p50_ms",
        "library_p99_ms",
        "p99_extra_ms",
    },
    # Quick sizes: the peers (taskiq-redis, arq) are measured in full runs
    # only, from virtual environments of their own.
    "redis": {
        "floor_events_per_s",
        "library_events_per_s",
        "ratio",
        "floor_p50_ms",
        "library_p50_ms",
        "half_load_events_per_s",
        "floor_half_p50_ms",
        "library_half_p50_ms",
        "half_p50_extra_ms",
        "library_1w_events_per_s",
        "library_2w_events_per_s",
        "library_4w_events_per_s",
        "peers_measured",
        "redis_version",
    },
    "flow": {
        "base_measured",
        "base_events_per_s",
        "head_events_per_s",
        "unused_ratio",
        "unused_cpu_ratio",
        "unkeyed_events_per_s",
        "keyed_events_per_s",
        "keyed_ratio",
        "keys",
        "burst_events",
        "burst_peak_consumers",
        "burst_seconds",
        "burst_x_serial",
        "unkeyed_burst_peak_consumers",
    },
    "instrument": {
        "base_measured",
        "base_events_per_s",
        "plain_events_per_s",
        "otel_idle_events_per_s",
        "otel_sdk_events_per_s",
        "sender_context_events_per_s",
        "idle_ratio",
        "seam_ratio",
        "sdk_ratio",
        "sdk_extra_us",
        "sender_context_ratio",
        "sender_context_extra_us",
        "prometheus_events_per_s",
        "prometheus_ratio",
        "prometheus_extra_us",
    },
}

# Figures a target leaves NaN when what they compare with is not there: the
# flow target's base side in a clone without the commit before flow control.
UNMEASURED = {
    "flow": (
        "base_measured",
        {"base_events_per_s", "unused_ratio", "unused_cpu_ratio"},
    ),
    "instrument": ("base_measured", {"base_events_per_s", "seam_ratio"}),
}


@pytest.mark.parametrize("name", ["throughput", "io", "memory", "scaleup", "latency"])
def test_each_target_runs_with_the_library_first(name: str) -> None:
    """A second round measures the library first; it gives the same figures."""
    outcome = run_target(TARGETS[name], "asyncio", TINY, repeat=2)
    assert len(outcome.rounds) == 2
    assert set(outcome.rounds[1]) == MEDIAN_KEYS[name]
    assert all(math.isfinite(v) for v in outcome.rounds[1].values())


@pytest.mark.parametrize("name", list(TARGETS))
def test_each_target_measures_both_sides(name: str) -> None:
    target = TARGETS[name]
    outcome = run_target(target, "asyncio", TINY, repeat=1)
    assert outcome.target == name
    assert outcome.loop == "asyncio"
    assert len(outcome.rounds) == 1
    assert outcome.medians == outcome.rounds[0]
    assert outcome.baseline == outcome.medians[target.baseline_key]
    assert outcome.library == outcome.medians[target.library_key]
    medians = outcome.medians
    assert set(medians) == MEDIAN_KEYS[name]
    flag, optional = UNMEASURED.get(name, ("", set()))
    for key, value in medians.items():
        if key in optional and not medians[flag]:
            assert math.isnan(value), key
        else:
            assert math.isfinite(value), key
    # The outcome carries its judge's verdict on these medians.
    verdict = Verdict(outcome.figure, outcome.verdict, outcome.met)
    assert verdict == target.judge(medians)
    # Figures derived from others within the round.
    if name in ("throughput", "io"):
        assert medians["ratio"] == pytest.approx(
            medians["library_events_per_s"] / medians["bare_events_per_s"]
        )
    if name == "scaleup":
        assert medians["library_time_to_goal_ms"] == min(
            medians["goal_seen_by_poller_ms"], medians["goal_handlers_started_ms"]
        )
    if name == "flow":
        assert medians["keyed_ratio"] == pytest.approx(
            medians["keyed_events_per_s"] / medians["unkeyed_events_per_s"]
        )
        # Not a timing: the events behind their key make the pool grow by
        # nothing, where the same burst without a key grows it.
        assert medians["burst_peak_consumers"] == 1
        assert medians["unkeyed_burst_peak_consumers"] > 1
    if name == "instrument":
        assert medians["idle_ratio"] > 0
        assert medians["sdk_extra_us"] == pytest.approx(
            1e6 / medians["otel_sdk_events_per_s"] - 1e6 / medians["plain_events_per_s"]
        )
    if name == "latency":
        assert medians["bare_p50_ms"] <= medians["bare_p99_ms"]
        assert medians["library_p50_ms"] <= medians["library_p99_ms"]
        assert medians["p99_extra_ms"] == pytest.approx(
            medians["library_p99_ms"] - medians["bare_p99_ms"]
        )


def test_medians_over_rounds() -> None:
    outcome = run_target(TARGETS["memory"], "asyncio", TINY, repeat=3)
    assert len(outcome.rounds) == 3
    values = sorted(r["library_bytes_per_event"] for r in outcome.rounds)
    assert outcome.medians["library_bytes_per_event"] == values[1]
    # A queued event costs something, and not kilobytes.
    assert 16 < outcome.library < 4096


def test_idle_rounds_are_capped() -> None:
    outcome = run_target(TARGETS["idle"], "asyncio", TINY, repeat=5)
    assert len(outcome.rounds) == TINY.max_idle_rounds
    assert set(outcome.medians) == {
        "empty_loop_cpu_pct",
        "library_cpu_pct",
        "after_burst_cpu_pct",
    }


def test_main_writes_json_and_tables(tmp_path: Path) -> None:
    lines: list[str] = []
    out = tmp_path / "bench.json"
    outcomes = main(
        [
            "--quick",
            "--loop",
            "asyncio",
            "--only",
            "memory",
            "--repeat",
            "1",
            "--json",
            str(out),
        ],
        echo=lines.append,
    )
    assert [o.target for o in outcomes] == ["memory"]
    text = "\n".join(lines)
    assert "## loop: asyncio" in text
    assert "4. memory per queued event" in text
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["repeat"] == 1
    assert document["sizes"]["memory_events"] == QUICK.memory_events
    assert document["machine"]["cpu_count"] >= 1
    assert document["machine"]["python"].count(".") == 2
    [result] = document["results"]
    assert result["target"] == "memory"
    assert result["loop"] == "asyncio"
    assert result["library"] > 0


def test_main_rejects_a_bad_repeat(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--repeat", "0"])
    assert info.value.code == 2
    assert "--repeat must be >= 1" in capsys.readouterr().err


def _outcome(target: str, loop: str, met: bool) -> Outcome:
    return Outcome(
        target=target,
        title=target,
        loop=loop,
        goal="goal",
        unit="u",
        rounds=[{"a": 1.0}],
        medians={"a": 1.0},
        baseline=2.0,
        library=1234.5,
        figure=0.5,
        verdict="0.50x",
        met=met,
    )


def test_tables() -> None:
    table = format_table([_outcome("t", "asyncio", met=False)])
    assert "| t | goal | 2.000 | 1,234 | u | 0.50x | NO |" in table
    by_loop = format_by_loop(
        [_outcome("t", "asyncio", met=True), _outcome("t", "uvloop", met=False)],
        ["asyncio", "uvloop"],
    )
    assert "| t | 0.50x (met) | 0.50x (not met) |" in by_loop


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 0.5) == 50.0
    assert percentile([3.0], 0.99) == 3.0


# -- the judges: at, just inside and just outside each goal --------------------


@pytest.mark.parametrize(
    ("name", "ratio", "text", "met"),
    [
        ("throughput", 0.5, "0.50x (CPU time: 0.75x)", True),
        ("throughput", 0.51, "0.51x (CPU time: 0.75x)", True),
        ("throughput", 0.49, "0.49x (CPU time: 0.75x)", False),
        ("io", 0.8, "0.80x (CPU time: 0.75x)", True),
        ("io", 0.81, "0.81x (CPU time: 0.75x)", True),
        ("io", 0.79, "0.79x (CPU time: 0.75x)", False),
    ],
)
def test_rate_judges_want_at_least_their_ratio(
    name: str, ratio: float, text: str, met: bool
) -> None:
    """Throughput: >= 0.5x bare; I/O: >= 0.8x the bare workers."""
    verdict = TARGETS[name].judge({"ratio": ratio, "cpu_ratio": 0.75})
    assert verdict == Verdict(ratio, text, met)


@pytest.mark.parametrize(
    ("pct", "text", "met"),
    [
        (0.3, "0.300% of a core", True),
        (0.29, "0.290% of a core", True),
        (0.31, "0.310% of a core", False),
    ],
)
def test_idle_judge_allows_three_tenths_of_a_percent(
    pct: float, text: str, met: bool
) -> None:
    """Only the library's idle CPU is judged, not the empty loop's."""
    medians = {"empty_loop_cpu_pct": 5.0, "library_cpu_pct": pct}
    assert TARGETS["idle"].judge(medians) == Verdict(pct, text, met)


@pytest.mark.parametrize(
    ("size", "text", "met"),
    [
        (250.0, "250 B/event", True),
        (249.0, "249 B/event", True),
        (251.0, "251 B/event", False),
    ],
)
def test_memory_judge_allows_250_bytes_per_event(
    size: float, text: str, met: bool
) -> None:
    """Only the library's bytes are judged, not the bare baseline's."""
    medians = {"bare_bytes_per_event": 1000.0, "library_bytes_per_event": size}
    assert TARGETS["memory"].judge(medians) == Verdict(size, text, met)


@pytest.mark.parametrize(
    ("completion", "reach", "met"),
    [
        (1.15, 5.0, True),
        (1.149, 5.0, True),
        (1.151, 5.0, False),
        (1.0, 10.0, True),  # the goal reached at the monitor interval
        (1.0, 9.9, True),
        (1.0, 10.1, False),
        (1.151, 10.1, False),
    ],
)
def test_scaleup_judge_wants_both_completion_and_reach(
    completion: float, reach: float, met: bool
) -> None:
    """At most 1.15x the handler latency, and the consumer goal reached
    within one monitor interval (10 ms here)."""
    medians = {
        "library_completion_x": completion,
        "library_time_to_goal_ms": reach,
        "monitor_interval_ms": 10.0,
        "consumers_goal": 500,
    }
    verdict = TARGETS["scaleup"].judge(medians)
    assert (verdict.figure, verdict.met) == (completion, met)


def test_scaleup_verdict_text() -> None:
    """The text gives the completion, when the consumer goal (the sizes')
    was reached and the monitor interval."""
    medians = {
        "library_completion_x": 1.1234,
        "library_time_to_goal_ms": 7.31,
        "monitor_interval_ms": 10.0,
        "consumers_goal": 20,
    }
    assert TARGETS["scaleup"].judge(medians).text == (
        "1.123x latency; 20 consumers after 7.3 ms (monitor interval 10 ms)"
    )


@pytest.mark.parametrize(
    ("extra", "text", "met"),
    [
        (1.0, "p99 +1.000 ms vs bare", True),
        (0.99, "p99 +0.990 ms vs bare", True),
        (1.01, "p99 +1.010 ms vs bare", False),
        (-0.5, "p99 -0.500 ms vs bare", True),
    ],
)
def test_latency_judge_allows_one_millisecond_over_bare(
    extra: float, text: str, met: bool
) -> None:
    """The figure is the median of the rounds' library p99 minus bare p99;
    the p50s, and the p99s' own medians, are not judged."""
    medians = {
        "bare_p50_ms": 1.0,
        "bare_p99_ms": 2.0,
        "library_p50_ms": 9.0,
        "library_p99_ms": 9.0,
        "p99_extra_ms": extra,
    }
    verdict = TARGETS["latency"].judge(medians)
    assert verdict.figure == pytest.approx(extra)
    assert (verdict.text, verdict.met) == (text, met)


@pytest.mark.parametrize("library_first", [False, True])
def test_pair_runs_the_asked_side_first_and_answers_in_one_order(
    library_first: bool,
) -> None:
    """Whichever side runs first, the answer is (baseline, library)."""
    ran: list[str] = []

    def side(name: str) -> Callable[[], str]:
        def measure() -> str:
            ran.append(name)
            return name

        return measure

    assert pair(side("bare"), side("lib"), library_first) == ("bare", "lib")
    assert ran == (["lib", "bare"] if library_first else ["bare", "lib"])


def test_rounds_alternate_which_side_goes_first() -> None:
    """Round 0 measures the baseline first, round 1 the library, and so on."""
    flags: list[bool] = []

    def measure(
        factory: LoopFactory, sizes: Sizes, library_first: bool
    ) -> dict[str, float]:
        flags.append(library_first)
        return {"bare": 1.0, "lib": 2.0}

    def judge(medians: dict[str, float]) -> Verdict:
        return Verdict(medians["lib"], "", True)

    fake = Target("fake", "fake", "none", "bare", "lib", "x", measure, judge)
    run_target(fake, "asyncio", TINY, repeat=4)
    assert flags == [False, True, False, True]


def _flow_medians(**figures: float) -> dict[str, float]:
    medians = {
        "base_measured": 1.0,
        "unused_ratio": 0.95,
        "unused_cpu_ratio": 1.0,
        "keyed_ratio": 0.7,
        "keys": 1000.0,
        "burst_events": 1000.0,
        "burst_peak_consumers": 1.0,
        "burst_x_serial": 1.1,
        "unkeyed_burst_peak_consumers": 1000.0,
    }
    return medians | figures


@pytest.mark.parametrize(
    ("figures", "met"),
    [
        ({}, True),
        ({"unused_ratio": 0.949}, False),
        ({"keyed_ratio": 0.69}, False),
        ({"burst_peak_consumers": 2.0}, False),
        # Without the base, the other two parts decide.
        ({"base_measured": 0.0, "unused_ratio": math.nan}, True),
        ({"base_measured": 0.0, "unused_ratio": math.nan, "keyed_ratio": 0.6}, False),
    ],
)
def test_flow_judge_wants_every_part(figures: dict[str, float], met: bool) -> None:
    """Unused: >= 0.95x the code before flow control (when it was measured);
    1000 keys: >= 0.7x unkeyed; a one-key burst: one consumer."""
    verdict = TARGETS["flow"].judge(_flow_medians(**figures))
    assert verdict.met is met


def test_flow_verdict_text() -> None:
    assert TARGETS["flow"].judge(_flow_medians()).text == (
        "unused 0.950x 18a27f1 (CPU time: 1.000x); 1000 keys 0.70x unkeyed; "
        "burst of 1000 on one key: 1 consumer(s) at most, 1.10x serial handler "
        "time (unkeyed: 1000)"
    )
    skipped = _flow_medians(base_measured=0.0, unused_ratio=math.nan)
    assert (
        TARGETS["flow"]
        .judge(skipped)
        .text.startswith(
            "unused: not compared (18a27f1 not in this clone); 1000 keys 0.70x"
        )
    )


def test_flow_target_skips_the_base_in_a_clone_without_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A shallow clone lacks the commit before flow control: that part is
    left out, said so, and the rest is measured."""
    import benchmarks.flow.target as flow_target

    monkeypatch.setattr(flow_target, "base_source", lambda: None)
    outcome = run_target(TARGETS["flow"], "asyncio", TINY, repeat=1)
    medians = outcome.medians
    assert medians["base_measured"] == 0
    assert math.isnan(medians["base_events_per_s"])
    assert math.isnan(medians["unused_ratio"])
    assert medians["head_events_per_s"] > 0
    assert medians["keyed_events_per_s"] > 0
    assert outcome.verdict.startswith("unused: not compared")
    assert "is not in this clone" in capsys.readouterr().err


def test_flow_base_source_is_the_code_before_flow_control() -> None:
    """The base side imports the commit before flow control, which has no
    flow module; this checkout has one."""
    from benchmarks.flow._sides import ROOT, base_source

    base = base_source()
    if base is None:
        pytest.skip("this clone does not have the commit before flow control")
    assert (base / "event_collector" / "queue.py").is_file()
    assert not (base / "event_collector" / "flow.py").exists()
    assert (ROOT / "src" / "event_collector" / "flow.py").is_file()
