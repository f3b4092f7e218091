"""Tests of the ``event-collector`` command."""

from __future__ import annotations

import datetime
import io
import json
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

import event_collector.cli
from event_collector import __version__
from event_collector._demo_flow import FLOW_KEYS, alert_limit
from event_collector._demo_output import LiveView, plot_format, print_summary
from event_collector.cli import (
    DEMO_METRICS_WARMUP_INTERVAL,
    PROFILES,
    DemoConfig,
    DemoReport,
    Sample,
    arrival_times,
    main,
    profile_rate,
    run_demo,
)
from event_collector.demo import FlowStats
from event_collector.queue import Metrics

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


def make_metrics(**figures: Any) -> Metrics:
    """A metrics snapshot: zeros, but for the ``figures`` given."""
    fields: dict[str, Any] = {
        "timestamp": datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
        "qsize": 0,
        "busy": 0,
        "consumers": 1,
        "load": 0.0,
        "avg_load": 0.0,
        "service_time": 0.0,
        "wait_time": 0.0,
        "arrival_rate": 0.0,
        "departure_rate": 0.0,
        "wip": 0.0,
        "event_count": 0,
    }
    return Metrics(**(fields | figures))


def make_report(config: DemoConfig, **measured: Any) -> DemoReport:
    """A report of a run that sent nothing, but for what ``measured`` says."""
    fields: dict[str, Any] = {
        "samples": [],
        "sent": 0,
        "ok": 0,
        "failed": 0,
        "cancelled": 0,
        "elapsed": config.duration,
        "wait_times": [],
        "service_times": [],
        "queue_delays": [],
    }
    return DemoReport(config=config, **(fields | measured))


def table_rows(text: str) -> dict[str, list[str]]:
    """The rows of the rich tables in ``text``: the first cell of each row,
    mapped to the others."""
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if len(cells) > 1:
            rows[cells[0]] = cells[1:]
    return rows


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
    # Each t is a due time on the loop's clock minus the start: 0.25 up to
    # the rounding of the clock's reading, whatever it is on this machine.
    assert [s.t for s in report.samples] == pytest.approx([0.25, 0.5, 0.75, 1.0])


@pytest.mark.slow
async def test_run_demo_measures_the_queue_delay() -> None:
    # One consumer offered about as much as it can take: events queue.
    config = DemoConfig(
        profile="steady",
        rate=100.0,
        latency=0.01,
        spread=0.0,
        max_consumers=1,
        duration=1.5,
        interval=0.3,
        seed=5,
    )
    report = await run_demo(config)
    assert report.answered > 0
    assert len(report.queue_delays) == len(report.wait_times) == report.answered
    for delay, service, wait in zip(
        report.queue_delays, report.service_times, report.wait_times, strict=True
    ):
        assert delay >= 0.0
        assert delay + service == pytest.approx(wait)
    assert max(report.queue_delays) > 0.0
    # The samples' queue delay is a mean over the same events as the queue's
    # wait and service times, and reads 0 during the warm-up like them.
    cold = [s for s in report.samples if s.t < DEMO_METRICS_WARMUP_INTERVAL]
    warm = [s for s in report.samples if s.t > DEMO_METRICS_WARMUP_INTERVAL]
    assert len(cold) == 3
    assert len(warm) == 2
    assert [s.queue_delay for s in cold] == [0.0] * 3
    for sample in warm:
        m = sample.metrics
        assert sample.queue_delay == pytest.approx(m.wait_time - m.service_time)
        assert sample.queue_delay > 0.0
        assert sample.as_dict()["queue_delay"] == sample.queue_delay


@pytest.mark.slow
async def test_flow_profile_keeps_each_device_in_order_under_its_rate_limit() -> None:
    """The flow profile: readings of each device one at a time and in send
    order, alerts never faster than their limit, and the pool sized by what
    can run, not by the held-back work."""
    config = DemoConfig(
        profile="flow",
        rate=400.0,
        latency=0.1,
        spread=0.02,
        duration=1.5,
        interval=0.25,
        seed=4,
    )
    report = await run_demo(config)
    flow = report.flow
    assert flow is not None
    assert report.answered == report.sent > 0
    assert report.cancelled == 0
    # Each event went to one collector, once.
    assert flow.readings + flow.alerts == report.sent
    assert flow.readings > 0
    assert flow.alerts > 0
    assert flow.keys == FLOW_KEYS
    assert flow.out_of_order == 0
    assert flow.most_per_key == 1
    # A bucket of one token gaining `limit` a second: the first call, and
    # one per 1/limit seconds after it.
    assert flow.alert_limit == alert_limit(400.0) == 20.0
    assert flow.alerts <= 1 + flow.alert_limit * report.elapsed
    # 400 events/s of 100 ms need some 40 consumers; over 20 keys, at most
    # 20 readings run, and a couple of alerts: the rest is held back.
    assert report.peak("consumers") <= FLOW_KEYS + 10
    held = [s.held for s in report.samples]
    assert all(h is not None and h >= 0 for h in held)
    assert max(h or 0 for h in held) > 0
    for sample in report.samples:
        figures = sample.as_dict()
        assert figures["held"] == sample.held
        assert figures["limited_rate"] == sample.limited_rate
        assert sample.limited_rate is not None
        assert sample.limited_rate >= 0


def test_other_profiles_have_no_flow_figures() -> None:
    sample = Sample(t=1.0, offered_rate=1.0, sent=1, metrics=make_metrics())
    assert sample.held is None
    assert sample.limited_rate is None
    assert not {"held", "limited_rate"} & set(sample.as_dict())
    assert make_report(DemoConfig()).flow is None


def test_the_flow_profile_is_a_demo_choice(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert PROFILES["flow"] is PROFILES["burst"]  # the same load shape
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "{burst,flow,ramp,steady,wave}" in help_text
    assert "flow: the burst load as readings of 20 devices" in help_text


ANSI_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Stream(io.StringIO):
    """A text stream that is, or is not, a terminal."""

    def __init__(self, *, terminal: bool) -> None:
        super().__init__()
        self._terminal = terminal

    def isatty(self) -> bool:
        return self._terminal


@pytest.mark.parametrize(
    ("stdout_terminal", "stderr_terminal", "view_shown"),
    [
        # Both on one screen: the view's redrawing would overwrite the JSON.
        (True, True, False),
        # demo --json > file: the view is on the terminal, the file has JSON.
        (False, True, True),
        (True, False, False),
        (False, False, False),
    ],
)
def test_demo_json_keeps_stdout_for_json_lines(
    stdout_terminal: bool,
    stderr_terminal: bool,
    view_shown: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # rich would take these over the streams' own isatty().
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    stdout = Stream(terminal=stdout_terminal)
    stderr = Stream(terminal=stderr_terminal)
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(sys, "stderr", stderr)
    status = main(
        ["demo", "--json", "--duration", "0.5", "--interval", "0.25", "--seed", "2"]
    )
    monkeypatch.undo()
    assert status == 0
    out, err = stdout.getvalue(), stderr.getvalue()
    assert "\x1b" not in out
    times = [json.loads(line)["t"] for line in out.splitlines()]
    assert times == pytest.approx([0.25, 0.5])
    if view_shown:
        seen = ANSI_CONTROL.sub("", err)
        assert "arrival rate (5 s avg)" in seen
        assert "queue delay (send → start)" in seen
        assert "event-collector demo: summary" in seen
    else:
        assert "\x1b" not in err
        assert "arrival rate" not in err
        assert err.startswith("event-collector demo: sent ")


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
        assert METRIC_FIELDS | {"t", "offered_rate", "sent", "queue_delay"} <= set(
            sample
        )
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


def is_svg(data: bytes) -> bool:
    return ET.fromstring(data).tag == "{http://www.w3.org/2000/svg}svg"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "is_format"),
    [
        ("x.png", lambda data: data.startswith(b"\x89PNG\r\n\x1a\n")),
        ("x.svg", is_svg),
        ("x.PDF", lambda data: data.startswith(b"%PDF")),
    ],
)
def test_demo_plot_and_summary(
    name: str,
    is_format: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    chart = tmp_path / name
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
            str(chart),
        ]
    )
    out, _ = capsys.readouterr()
    assert status == 0
    data = chart.read_bytes()
    assert len(data) > 1000
    # The file holds the format its extension names, whatever its case.
    assert is_format(data)
    assert "summary" in out
    assert "events sent" in out
    assert "chart written to" in out


def test_plot_format_follows_the_extension() -> None:
    assert plot_format("a/b.png") == "png"
    assert plot_format(Path("b.Svg")) == "svg"
    assert plot_format("b.pdf") == "pdf"
    with pytest.raises(
        ValueError, match=r"\.png, \.svg, \.pdf \(got extension '\.jpg'"
    ):
        plot_format("b.jpg")
    with pytest.raises(ValueError, match="got no extension"):
        plot_format("chart")


def never_run(config: DemoConfig, **kwargs: Any) -> DemoReport:
    raise AssertionError("the demo ran, but its arguments should have been refused")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing/x.png", "folder '{tmp}/missing' does not exist"),
        (
            "x.jpg",
            "the chart file must end in one of .png, .svg, .pdf (got extension '.jpg'",
        ),
        ("x", "the chart file must end in one of .png, .svg, .pdf (got no extension"),
        ("", "'{tmp}' is a folder, not a file"),
    ],
)
def test_a_chart_that_cannot_be_written_is_refused_before_the_run(
    name: str,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(event_collector.cli, "run_demo", never_run)
    target = str(tmp_path / name) if name else str(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["demo", "--duration", "0.1", "--plot", target])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: event-collector demo" in err
    assert f"error: argument --plot: {message.format(tmp=tmp_path)}" in err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_chart_that_fails_to_write_after_the_run_is_reported(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def fake_run(config: DemoConfig, **kwargs: Any) -> DemoReport:
        return make_report(config)

    def fail(report: DemoReport, path: str | Path) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(event_collector.cli, "run_demo", fake_run)
    monkeypatch.setattr(event_collector.cli, "write_plot", fail)
    chart = tmp_path / "x.png"
    assert main(["demo", "--json", "--plot", str(chart)]) == 1
    err = capsys.readouterr().err
    assert f"cannot write the chart to '{chart}': Permission denied" in err
    assert "Traceback" not in err


# -- what the view and the summary say ------------------------------------------


def test_live_view_says_what_its_figures_average() -> None:
    from rich.console import Console

    console = Console(record=True, file=io.StringIO(), width=100)
    config = DemoConfig(duration=10.0)
    burst = Sample(
        t=4.0,
        offered_rate=300.0,
        sent=900,
        metrics=make_metrics(
            arrival_rate=300.0, service_time=0.1, wait_time=0.4, event_count=800
        ),
        queue_delay=0.3,
    )
    after = Sample(
        t=5.0,
        offered_rate=30.0,
        sent=1000,
        metrics=make_metrics(
            arrival_rate=198.0, service_time=0.1, wait_time=0.25, event_count=990
        ),
        queue_delay=0.15,
    )
    with LiveView(config, console) as view:
        view.update(burst)
        view.update(after)
    text = console.export_text()
    rows = table_rows(text)
    # Each row: the latest figure, then the largest seen.
    assert rows["arrival rate (5 s avg)"] == ["198/s", "300/s"]
    assert rows["departure rate (5 s avg)"] == ["0/s", "0/s"]
    assert rows["queue delay (send → start)"] == ["150.0 ms", "300.0 ms"]
    assert rows["service time (handler)"] == ["100.0 ms", "100.0 ms"]
    assert rows["wait (send → answer)"] == ["250.0 ms", "400.0 ms"]
    assert rows["sent / answered"] == ["1000 / 990", ""]
    assert "rates: mean of the last 5 s" in text
    assert "times: mean of the last 500 answered events" in text


def test_summary_says_what_its_figures_measure() -> None:
    from rich.console import Console

    console = Console(record=True, file=io.StringIO(), width=100)
    config = DemoConfig(duration=10.0)
    report = make_report(
        config,
        samples=[
            Sample(t=t, offered_rate=300.0, sent=0, metrics=make_metrics(**m))
            for t, m in ((1.0, {"arrival_rate": 198.0}), (2.0, {"consumers": 3}))
        ],
        sent=4,
        ok=4,
        queue_delays=[0.01, 0.02, 0.03, 0.14],
        service_times=[0.1] * 4,
        wait_times=[0.11, 0.12, 0.13, 0.24],
    )
    print_summary(report, console)
    rows = table_rows(console.export_text())
    assert rows["peak arrival rate (5 s avg)"] == ["198.0 events/s"]
    assert rows["service time (handler): mean"] == ["100.0 ms"]
    assert rows["queue delay (send → start)"] == [
        "mean 50 / p50 20 / p95 140 / max 140 ms"
    ]
    assert rows["wait (send → answer)"] == ["mean 150 / p50 120 / p95 240 / max 240 ms"]


def test_the_flow_profile_shows_what_it_holds_back() -> None:
    from rich.console import Console

    console = Console(record=True, file=io.StringIO(), width=120)
    config = DemoConfig(profile="flow", rate=300.0, duration=10.0)
    samples = [
        Sample(
            t=t,
            offered_rate=300.0,
            sent=0,
            metrics=make_metrics(qsize=1),
            held=held,
            limited_rate=rate,
        )
        for t, held, rate in ((4.0, 120, 16.0), (5.0, 40, 15.0))
    ]
    with LiveView(config, console) as view:
        for sample in samples:
            view.update(sample)
    rows = table_rows(console.export_text())
    assert rows["held back (key, rate limit)"] == ["40", "120"]
    assert rows["alert calls (limit 15/s)"] == ["15.0/s", "16.0/s"]

    stats = FlowStats(
        keys=20,
        readings=900,
        out_of_order=0,
        most_per_key=1,
        alert_limit=15.0,
        alerts=100,
        peak_alert_rate=16.0,
    )
    console = Console(record=True, file=io.StringIO(), width=200)
    print_summary(make_report(config, samples=samples, flow=stats), console)
    rows = table_rows(console.export_text())
    assert rows["ordering keys"] == [
        "20 devices, 900 readings: at most 1 of a device at once, 0 out of order"
    ]
    assert rows["rate-limited collector"] == [
        "alert, limit 15/s: 100 calls, at most 16.0/s between two samples"
    ]
    assert rows["peak held back (key, rate limit)"] == ["120"]


# -- what goes wrong -----------------------------------------------------------


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
    assert 'pip install -e ".[cli]"' in err
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
