"""The benchmark runner works and returns sane figures (no timing asserted)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
from benchmarks import QUICK, TARGETS, Outcome, main, run_target
from benchmarks.runner import format_by_loop, format_table
from benchmarks.targets import percentile

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
)


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
    for key, value in outcome.medians.items():
        assert math.isfinite(value), key
        assert value >= 0, key
    assert isinstance(outcome.met, bool)
    assert outcome.verdict


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
