"""Tests for the clock-injected measurement primitives."""

import itertools
import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import FakeClock
from event_collector._metrics import LoadAverage, RateMeter, ServiceWindow

# --------------------------------------------------------------------------
# ServiceWindow


@pytest.mark.parametrize("size", [0, -1, -100])
def test_service_window_rejects_non_positive_size(size: int) -> None:
    with pytest.raises(ValueError, match="size"):
        ServiceWindow(size)


def test_service_window_empty() -> None:
    window = ServiceWindow(3)
    assert window.size == 3
    assert len(window) == 0
    assert window.mean() == 0.0


def test_service_window_partial_fill_then_eviction() -> None:
    window = ServiceWindow(4)
    for value in (1.0, 2.0, 3.0):
        window.add(value)
    assert len(window) == 3
    assert window.mean() == 2.0
    window.add(4.0)
    assert len(window) == 4
    assert window.mean() == 2.5
    window.add(5.0)  # evicts 1.0
    assert len(window) == 4
    assert window.mean() == 3.5
    for value in (10.0, 10.0, 10.0):
        window.add(value)  # evicts 2.0, 3.0, 4.0
    assert window.mean() == (5.0 + 30.0) / 4
    assert len(window) == 4


def test_service_window_size_one_keeps_latest() -> None:
    window = ServiceWindow(1)
    for value in (3.0, 7.5, 0.25):
        window.add(value)
        assert window.mean() == value
        assert len(window) == 1


def test_service_window_size_is_read_only() -> None:
    window = ServiceWindow(2)
    with pytest.raises(AttributeError):
        window.size = 5  # type: ignore[misc]
    assert window.size == 2


@pytest.mark.parametrize("size", [1, 7, 100, 1000])
def test_service_window_no_drift_over_a_million_adds(size: int) -> None:
    window = ServiceWindow(size)
    add = window.add
    for _ in range(1_000_000):
        add(0.1)
    assert window.mean() == pytest.approx(0.1, rel=0, abs=1e-12)


def test_service_window_tiny_after_huge_is_exact() -> None:
    window = ServiceWindow(4)
    for _ in range(4):
        window.add(1e16)
    for _ in range(4):
        window.add(1.0)
    # A running sum without exact resummation would be off by whole units here.
    assert window.mean() == 1.0


def test_service_window_tiny_after_huge_unaligned() -> None:
    window = ServiceWindow(5)
    for _ in range(3):
        window.add(0.5)
    for _ in range(12):
        window.add(1e17)
    for _ in range(10):
        window.add(1e-3)
    assert window.mean() == pytest.approx(1e-3, rel=1e-12)
    # The mean must keep tracking after the recovery, not just at one instant.
    window.add(2e-3)
    assert window.mean() == pytest.approx(6e-3 / 5, rel=1e-12)


@given(
    size=st.integers(min_value=1, max_value=20),
    values=st.lists(
        st.floats(min_value=0.0, max_value=1e6, allow_nan=False), max_size=200
    ),
)
def test_service_window_matches_reference(size: int, values: list[float]) -> None:
    window = ServiceWindow(size)
    for value in values:
        window.add(value)
    tail = values[-size:]
    assert len(window) == len(tail)
    expected = statistics.fmean(tail) if tail else 0.0
    assert window.mean() == pytest.approx(expected, rel=1e-9, abs=1e-9)


# --------------------------------------------------------------------------
# RateMeter


@pytest.mark.parametrize("window", [0.0, -1.0, math.nan, math.inf])
def test_rate_meter_rejects_bad_window(window: float) -> None:
    with pytest.raises(ValueError, match="window"):
        RateMeter(window, clock=FakeClock())


@pytest.mark.parametrize("resolution", [0.0, -0.1, math.nan])
def test_rate_meter_rejects_bad_resolution(resolution: float) -> None:
    with pytest.raises(ValueError, match="resolution"):
        RateMeter(1.0, clock=FakeClock(), resolution=resolution)


def test_rate_meter_defaults() -> None:
    clock = FakeClock(42.0)
    meter = RateMeter(2.0, clock=clock)
    assert meter.window == 2.0
    assert meter.resolution == pytest.approx(0.01)
    assert meter.count == 0
    assert meter.checkpoints == ((42.0, 0),)
    assert meter.rate() == 0.0


def _run_steady(
    meter: RateMeter,
    clock: FakeClock,
    ticks: range,
    *,
    event_every_ms: int = 4,
    sample_every_ms: int = 10,
) -> None:
    """Drive ``meter`` over integer milliseconds ``ticks`` (250 events/s default)."""
    # Integer milliseconds keep the simulated schedule free of float drift.
    for tick in ticks:
        clock.now = tick / 1000
        if tick % event_every_ms == 0:
            meter.count += 1
        if tick % sample_every_ms == 0:
            meter.sample()


@pytest.mark.parametrize(
    ("window", "resolution"), [(1.0, None), (10.0, None), (1.0, 0.1)]
)
def test_rate_meter_steady_load(window: float, resolution: float | None) -> None:
    clock = FakeClock()
    meter = RateMeter(window, clock=clock, resolution=resolution)
    _run_steady(meter, clock, range(501))
    for stop in range(1000, 12_001, 500):
        _run_steady(meter, clock, range(stop - 499, stop + 1))
        if clock.now >= window:
            assert meter.rate() == pytest.approx(250.0, rel=0.01)
    assert clock.now == 12.0


def test_rate_meter_rate_between_samples_is_stable() -> None:
    clock = FakeClock()
    meter = RateMeter(1.0, clock=clock)
    _run_steady(meter, clock, range(3001))
    for offset in (0.001, 0.003, 0.007, 0.0099):
        assert meter.rate(3.0 + offset) == pytest.approx(250.0, rel=0.01)


def test_rate_meter_before_full_window_uses_covered_time() -> None:
    clock = FakeClock(100.0)
    meter = RateMeter(10.0, clock=clock)
    for tick in range(1, 501):
        clock.now = 100.0 + tick / 1000
        if tick % 4 == 0:
            meter.count += 1
        if tick % 10 == 0:
            meter.sample()
    assert meter.count == 125
    # Over the window length this would read 12.5 events/s.
    assert meter.rate() == pytest.approx(250.0, rel=1e-9)
    assert meter.rate(100.0) == 0.0


def test_rate_meter_burst_slides_out_of_window() -> None:
    clock = FakeClock()
    meter = RateMeter(1.0, clock=clock)
    for tick in range(3001):
        clock.now = tick / 1000
        if tick == 505:
            meter.count += 1000
        if tick % 10 == 0:
            meter.sample()
        if tick == 600:
            assert meter.rate() == pytest.approx(1000 / 0.6)
        if tick == 1500:
            assert meter.rate() == pytest.approx(1000.0)
    assert meter.rate() == 0.0
    assert meter.rate(1.52) == 0.0


def test_rate_meter_long_idle_gap_without_samples() -> None:
    clock = FakeClock()
    meter = RateMeter(1.0, clock=clock)
    _run_steady(meter, clock, range(2001))
    assert meter.rate() == pytest.approx(250.0, rel=0.01)
    # Nothing at all happens for 100 s: no events and no sample() calls.
    clock.now = 102.0
    assert meter.rate() == 0.0
    # Events counted right after the gap belong to the current window only.
    meter.count += 50
    assert meter.rate() == pytest.approx(50.0)
    meter.sample()
    assert meter.rate() == pytest.approx(50.0)
    assert len(meter.checkpoints) == 2


def test_rate_meter_recovers_after_idle_gap() -> None:
    clock = FakeClock()
    meter = RateMeter(1.0, clock=clock)
    _run_steady(meter, clock, range(2001))
    _run_steady(meter, clock, range(60_001, 60_501))
    # Half of the last second had traffic at 250 events/s.
    assert meter.rate() == pytest.approx(125.0, rel=0.01)
    _run_steady(meter, clock, range(60_501, 62_001))
    assert meter.rate() == pytest.approx(250.0, rel=0.01)


def test_rate_meter_reset_forgets_history_but_keeps_count() -> None:
    clock = FakeClock()
    meter = RateMeter(1.0, clock=clock)
    _run_steady(meter, clock, range(2001))
    count = meter.count
    meter.reset()
    assert meter.count == count
    assert meter.checkpoints == ((2.0, count),)
    assert meter.rate() == 0.0
    meter.count += 10
    assert meter.rate(2.5) == pytest.approx(20.0)
    meter.reset(3.0)
    assert meter.rate(3.0) == 0.0
    assert meter.rate(4.0) == 0.0


def test_rate_meter_coalesces_checkpoints() -> None:
    clock = FakeClock()
    meter = RateMeter(1.0, clock=clock, resolution=0.1)
    longest = 0
    for tick in range(1, 20_001):  # a sample every millisecond for 20 s
        clock.now = tick / 1000
        meter.count += 1
        meter.sample()
        longest = max(longest, len(meter.checkpoints))
    # One checkpoint per resolution inside the window plus the one before it.
    assert longest <= 12
    times = [t for t, _ in meter.checkpoints]
    assert all(b - a >= 0.1 * (1 - 1e-6) for a, b in itertools.pairwise(times))
    assert meter.rate() == pytest.approx(1000.0, rel=0.1)


def test_rate_meter_sampling_at_resolution_is_not_halved_by_float_noise() -> None:
    clock = FakeClock()
    meter = RateMeter(2.0, clock=clock)  # resolution 0.01
    for _ in range(100):
        clock.now += 0.01  # accumulates binary rounding error on purpose
        meter.sample()
    assert len(meter.checkpoints) == 101


def test_rate_meter_memory_bounded_over_long_run() -> None:
    clock = FakeClock()
    meter = RateMeter(1.0, clock=clock)
    for tick in range(1, 100_001):
        clock.now = tick / 100  # sampled every 10 ms for 1000 s
        meter.count += 3
        meter.sample()
    assert len(meter.checkpoints) <= 1.0 / meter.resolution + 2
    assert meter.rate() == pytest.approx(300.0, rel=0.01)


@given(
    window=st.floats(min_value=0.01, max_value=1.0),
    steps=st.lists(
        st.tuples(
            st.floats(min_value=0.001, max_value=0.05),
            st.integers(min_value=0, max_value=20),
        ),
        min_size=1,
        max_size=300,
    ),
    gap=st.floats(min_value=0.0, max_value=2.0),
)
def test_rate_meter_matches_reference(
    window: float, steps: list[tuple[float, int]], gap: float
) -> None:
    clock = FakeClock(5.0)
    # A resolution below every step makes each sample() a checkpoint, so the
    # full history is a valid reference for the pruned one.
    meter = RateMeter(window, clock=clock, resolution=1e-4)
    history: list[tuple[float, int]] = [(5.0, 0)]
    for dt, events in steps:
        clock.now += dt
        meter.count += events
        meter.sample()
        history.append((clock.now, meter.count))
    now = clock.now + gap
    start = max(now - window, history[0][0])
    base = [c for t, c in history if t <= start][-1]
    expected = (meter.count - base) / (now - start)
    assert meter.rate(now) == pytest.approx(expected, rel=1e-9)


# --------------------------------------------------------------------------
# LoadAverage


@pytest.mark.parametrize("window", [0.0, -2.0, math.nan, math.inf])
def test_load_average_rejects_bad_window(window: float) -> None:
    with pytest.raises(ValueError, match="window"):
        LoadAverage(window, clock=FakeClock())


def test_load_average_nothing_observed() -> None:
    clock = FakeClock(7.0)
    average = LoadAverage(5.0, clock=clock)
    assert average.window == 5.0
    assert average.mean() == 0.0
    clock.now = 9.0
    assert average.mean() == 0.0


def test_load_average_time_weighting_two_adds() -> None:
    clock = FakeClock()
    average = LoadAverage(10.0, clock=clock)
    average.add(1.0, 1.0)
    average.add(0.0, 4.0)
    assert average.mean(4.0) == pytest.approx(0.25)


def test_load_average_time_weighting_fine_grained() -> None:
    clock = FakeClock()
    average = LoadAverage(4.0, clock=clock)
    for tick in range(1, 401):
        clock.now = tick / 100
        average.add(1.0 if tick <= 100 else 0.0)
    assert average.mean() == pytest.approx(0.25, abs=1e-9)


def test_load_average_uses_covered_time_before_full_window() -> None:
    clock = FakeClock(50.0)
    average = LoadAverage(10.0, clock=clock)
    clock.now = 52.0
    average.add(0.5)
    # Divided by the whole window this would read 0.1.
    assert average.mean() == pytest.approx(0.5)


def test_load_average_idle_gap_counts_as_the_reported_load() -> None:
    clock = FakeClock()
    average = LoadAverage(20.0, clock=clock)
    for tick in range(1, 101):
        average.add(1.0, tick / 100)
    average.add(0.0, 11.0)  # a single report after 10 idle seconds
    assert average.mean(11.0) == pytest.approx(1.0 / 11.0)
    average.add(0.0, 31.0)
    assert average.mean(31.0) == 0.0


def test_load_average_huge_gap_does_not_spoil_precision() -> None:
    clock = FakeClock()
    average = LoadAverage(1.0, clock=clock)
    start = 1e12
    average.add(3.0, start)  # one report after a gap of 10**12 s
    assert average.mean(start) == pytest.approx(3.0)
    for tick in range(1, 201):
        average.add(0.5, start + tick / 100)
    # Weighting the whole gap would leave rounding noise of order 1e-4 behind.
    assert average.mean(start + 2.0) == pytest.approx(0.5, abs=1e-9)


def test_load_average_window_slides() -> None:
    clock = FakeClock()
    average = LoadAverage(1.0, clock=clock)
    for tick in range(1, 201):
        average.add(1.0, tick / 100)
    assert average.mean(2.0) == pytest.approx(1.0)
    for tick in range(201, 251):
        average.add(0.0, tick / 100)
    assert average.mean(2.5) == pytest.approx(0.5, abs=1 / 256)
    for tick in range(251, 301):
        average.add(0.0, tick / 100)
    assert average.mean(3.0) == pytest.approx(0.0, abs=1e-12)


def test_load_average_mean_ignores_time_after_last_add() -> None:
    clock = FakeClock()
    average = LoadAverage(10.0, clock=clock)
    average.add(0.8, 1.0)
    assert average.mean(5.0) == pytest.approx(0.8)
    # The latest observation has left the window: nothing is known any more.
    assert average.mean(11.5) == 0.0


def test_load_average_mean_after_stale_segments() -> None:
    clock = FakeClock()
    average = LoadAverage(1.0, clock=clock)
    for tick in range(1, 101):
        average.add(2.0 if tick <= 50 else 1.0, tick / 100)
    # Without further adds, (0.5, 1.5] only saw the second half at load 1.0.
    assert average.mean(1.5) == pytest.approx(1.0, abs=2 / 256)


def test_load_average_memory_bounded() -> None:
    clock = FakeClock()
    average = LoadAverage(10.0, clock=clock)
    for tick in range(1, 100_001):
        clock.now = tick / 100
        average.add(0.7 if tick % 2 else 0.3)
        assert average.segments <= 258
    # Exactly 0.5 but for the merged segment straddling the window start.
    assert average.mean() == pytest.approx(0.5, abs=0.4 / 256)


@given(
    window=st.floats(min_value=0.1, max_value=5.0),
    steps=st.lists(
        st.tuples(
            st.floats(min_value=1e-3, max_value=1.0),
            st.floats(min_value=0.0, max_value=3.0),
        ),
        min_size=1,
        max_size=200,
    ),
    later=st.floats(min_value=0.0, max_value=1.0),
)
def test_load_average_matches_reference(
    window: float, steps: list[tuple[float, float]], later: float
) -> None:
    clock = FakeClock(3.0)
    average = LoadAverage(window, clock=clock)
    pieces: list[tuple[float, float, float]] = []
    for dt, load in steps:
        start = clock.now
        clock.now += dt
        average.add(load)
        pieces.append((start, clock.now, load))
    now = clock.now + later * window
    cutoff = now - window
    observed = clock.now - max(cutoff, 3.0)
    if observed <= 0:
        assert average.mean(now) == 0.0
        return
    integral = math.fsum(
        load * max(0.0, end - max(start, cutoff)) for start, end, load in pieces
    )
    max_load = max(load for _, _, load in pieces)
    # Merging within a cell of window/256 may misplace up to two cells of weight
    # at the window start.
    tolerance = 2 * max_load * (window / 256) / observed + 1e-9
    assert average.mean(now) == pytest.approx(integral / observed, abs=tolerance)
