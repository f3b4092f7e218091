"""Tests of the ``event-collector`` command."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from event_collector import __version__
from event_collector.cli import (
    PROFILES,
    DemoConfig,
    arrival_times,
    main,
    profile_rate,
    run_demo,
)

METRIC_FIELDS = {
    "timestamp",
    "qsize",
    "busy",
    "consumers",
    "load",
    "avg_load",
    "service_time",
    "wait_time",
    "arrival_rate",
    "departure_rate",
    "wip",
    "event_count",
}

# -- load profiles: pure functions of time -------------------------------------


def rate(profile: str, t: float) -> float:
    return profile_rate(profile, t, rate=200.0, duration=10.0)


def test_steady_is_constant() -> None:
    assert {rate("steady", t) for t in (0.0, 2.5, 9.99, 10.0)} == {200.0}


def test_burst_has_two_bursts_over_a_quiet_baseline() -> None:
    assert rate("burst", 1.0) == 20.0
    assert rate("burst", 2.0) == rate("burst", 3.4) == 200.0
    assert rate("burst", 3.5) == rate("burst", 5.0) == 20.0
    assert rate("burst", 6.0) == rate("burst", 7.4) == 200.0
    assert rate("burst", 7.5) == rate("burst", 9.9) == 20.0


def test_ramp_rises_linearly() -> None:
    assert rate("ramp", 0.0) == pytest.approx(20.0)
    assert rate("ramp", 5.0) == pytest.approx(110.0)
    assert rate("ramp", 10.0) == pytest.approx(200.0)
    values = [rate("ramp", t / 10) for t in range(101)]
    assert values == sorted(values)


def test_wave_has_two_periods() -> None:
    assert rate("wave", 0.0) == pytest.approx(20.0)
    assert rate("wave", 2.5) == pytest.approx(200.0)
    assert rate("wave", 5.0) == pytest.approx(20.0)
    assert rate("wave", 7.5) == pytest.approx(200.0)
    assert rate("wave", 1.0) == pytest.approx(rate("wave", 6.0))


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_profiles_stay_within_the_peak(profile: str) -> None:
    values = [rate(profile, t / 10) for t in range(101)]
    assert min(values) >= 0.1 * 200 - 1e-9
    assert max(values) <= 200.0 + 1e-9
    assert rate(profile, -0.1) == rate(profile, 10.1) == 0.0
    # The same time always gives the same rate.
    assert values == [rate(profile, t / 10) for t in range(101)]


def test_profile_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="profile="):
        profile_rate("square", 1.0, rate=1.0, duration=1.0)
    with pytest.raises(ValueError, match="duration="):
        profile_rate("steady", 1.0, rate=1.0, duration=0.0)
    with pytest.raises(ValueError, match="rate="):
        next(arrival_times("steady", rate=0.0, duration=1.0))


def test_arrivals_follow_the_profile() -> None:
    times = list(arrival_times("burst", rate=1000.0, duration=10.0, seed=7))
    assert times == list(arrival_times("burst", rate=1000.0, duration=10.0, seed=7))
    assert times == sorted(times)
    assert times[0] > 0.0
    assert times[-1] < 10.0
    # Expected: 7 s at 100/s and 3 s at 1000/s, 3700 events.
    assert 3400 < len(times) < 4000
    in_bursts = [t for t in times if 2.0 <= t < 3.5 or 6.0 <= t < 7.5]
    assert 2750 < len(in_bursts) < 3250


# -- running the demo ----------------------------------------------------------


@pytest.mark.slow
async def test_run_demo_reports_what_it_sent() -> None:
    config = DemoConfig(
        profile="steady",
        rate=150.0,
        latency=0.01,
        spread=0.005,
        error_rate=0.5,
        duration=1.0,
        interval=0.25,
        seed=3,
    )
    report = await run_demo(config)
    schedule = list(arrival_times("steady", rate=150.0, duration=1.0, seed=3))
    assert report.sent == len(schedule) > 0
    assert report.answered == report.sent
    assert report.cancelled == 0
    assert report.ok > 0
    assert report.failed > 0
    assert len(report.wait_times) == len(report.service_times) == report.sent
    assert min(report.service_times) >= 0.004
    assert [s.t for s in report.samples] == [0.25, 0.5, 0.75, 1.0]


@pytest.mark.slow
def test_demo_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(
        [
            "demo",
            "--duration",
            "1.5",
            "--rate",
            "200",
            "--latency",
            "0.02",
            "--spread",
            "0.01",
            "--interval",
            "0.25",
            "--seed",
            "1",
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert status == 0
    lines = out.splitlines()
    samples = [json.loads(line) for line in lines]
    assert len(samples) == 6
    for sample in samples:
        assert METRIC_FIELDS | {"t", "offered_rate", "sent"} <= set(sample)
        assert sample["consumers"] >= 1
    times = [s["t"] for s in samples]
    assert times == sorted(times)
    assert len(set(times)) == len(times)
    stamps = [s["timestamp"] for s in samples]
    assert stamps == sorted(stamps)
    assert samples[-1]["event_count"] > 0
    assert samples[-1]["sent"] >= samples[-1]["event_count"]
    # The rates are past the demo's 1 s warm-up at the end.
    assert samples[-1]["arrival_rate"] > 0
    assert "sent" in err


@pytest.mark.slow
def test_demo_plot_and_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "x.png"
    status = main(
        [
            "demo",
            "--duration",
            "1",
            "--rate",
            "100",
            "--latency",
            "0.01",
            "--interval",
            "0.25",
            "--profile",
            "wave",
            "--plot",
            str(png),
        ]
    )
    out, _ = capsys.readouterr()
    assert status == 0
    data = png.read_bytes()
    assert len(data) > 1000
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert "summary" in out
    assert "events sent" in out
    assert "chart written to" in out


@pytest.mark.parametrize(
    ("missing", "argv"),
    [
        ("rich", ["demo"]),
        ("matplotlib", ["demo", "--json", "--plot", "never.png"]),
    ],
)
def test_missing_extras_are_named(
    missing: str,
    argv: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)
    assert main(argv) == 1
    _, err = capsys.readouterr()
    assert missing in err
    assert 'pip install "event-collector[cli]"' in err
    assert not Path("never.png").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--min-consumers", "5", "--max-consumers", "2"],
        ["demo", "--rate", "0"],
        ["demo", "--duration", "-1"],
        ["demo", "--error-rate", "2"],
        ["demo", "--profile", "square"],
    ],
)
def test_bad_arguments_exit_with_usage(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage: event-collector demo" in capsys.readouterr().err


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "demo" in capsys.readouterr().err


def test_python_dash_m() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "event_collector", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"event-collector {__version__}"


def test_the_extras_are_imported_only_when_used() -> None:
    """The CLI modules import without rich, and without importing
    matplotlib: both are needed only when the demo draws or shows."""
    # structlog imports rich when it is installed, so rich is blocked here
    # (an import of it fails) while matplotlib is left importable (it must
    # not be imported).
    code = textwrap.dedent(
        """
        import sys
        sys.modules["rich"] = None
        import event_collector
        import event_collector.cli
        import event_collector.demo
        print(sorted(m for m in sys.modules if m.split(".")[0] == "matplotlib"))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
