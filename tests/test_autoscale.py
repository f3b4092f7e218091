"""Tests for the pool-sizing policy."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from event_collector._autoscale import (
    REDUCTION_THRESHOLD,
    load_ratio,
    next_pool_size,
    scale_down_target,
    scale_up_target,
)

counts = st.integers(min_value=0, max_value=10_000)
margins = st.floats(min_value=0.0, max_value=2.0)
loads = st.floats(min_value=0.0, max_value=5.0)
wips = st.floats(min_value=0.0, max_value=20_000.0)


def test_reduction_threshold_value() -> None:
    assert REDUCTION_THRESHOLD == 0.75


@pytest.mark.parametrize(
    ("qsize", "busy", "consumers", "expected"),
    [
        (0, 0, 4, 0.0),
        (3, 1, 2, 2.0),
        (1, 2, 4, 0.75),
        (5, 5, 0, 0.0),
        (5, 5, -3, 0.0),
    ],
)
def test_load_ratio(qsize: int, busy: int, consumers: int, expected: float) -> None:
    assert load_ratio(qsize, busy, consumers) == expected


@pytest.mark.parametrize(
    ("demand", "margin", "expected"),
    [
        (10, 0.15, 12),  # 1.5 extra -> 2
        (20, 0.15, 23),  # 3.0 extra -> 3
        (100, 0.15, 115),  # 15 extra, not 16
        (100, 0.07, 107),  # 100 * 0.07 == 7.000000000000001 in binary floats
        (100, 0.14, 114),  # 100 * 0.14 == 14.000000000000002
        (100, 0.55, 155),  # 100 * 0.55 == 55.00000000000001
        (7, 0.0, 7),
        (0, 0.5, 0),
    ],
)
def test_scale_up_margin_rounding(demand: int, margin: float, expected: int) -> None:
    target = scale_up_target(
        qsize=demand, busy=0, consumers=0, max_consumers=1000, wip_margin=margin
    )
    assert target == expected
    # Splitting the demand between queue and busy handlers changes nothing.
    split = scale_up_target(
        qsize=demand // 2,
        busy=demand - demand // 2,
        consumers=0,
        max_consumers=1000,
        wip_margin=margin,
    )
    assert split == expected


def test_scale_up_capped_by_max_consumers() -> None:
    target = scale_up_target(
        qsize=90, busy=10, consumers=50, max_consumers=64, wip_margin=0.15
    )
    assert target == 64


def test_scale_up_never_shrinks() -> None:
    target = scale_up_target(
        qsize=2, busy=2, consumers=10, max_consumers=20, wip_margin=0.15
    )
    assert target == 10


def test_scale_down_unchanged_when_average_load_high() -> None:
    common = {"qsize": 0, "busy": 1, "consumers": 10, "min_consumers": 1}
    assert scale_down_target(**common, avg_load=0.75, wip=0.0, wip_margin=0.15) == 10
    assert scale_down_target(**common, avg_load=0.74, wip=0.0, wip_margin=0.15) == 2
    # A custom threshold moves the boundary.
    assert (
        scale_down_target(
            **common, avg_load=0.5, wip=0.0, wip_margin=0.15, threshold=0.5
        )
        == 10
    )


def test_scale_down_unchanged_when_currently_overloaded() -> None:
    target = scale_down_target(
        qsize=6,
        busy=4,
        consumers=10,
        min_consumers=1,
        avg_load=0.1,
        wip=0.0,
        wip_margin=0.15,
    )
    assert target == 10


def test_scale_down_to_demand_plus_margin() -> None:
    target = scale_down_target(
        qsize=2,
        busy=8,
        consumers=40,
        min_consumers=1,
        avg_load=0.3,
        wip=3.0,
        wip_margin=0.15,
    )
    assert target == 12


def test_scale_down_respects_min_consumers() -> None:
    target = scale_down_target(
        qsize=0,
        busy=0,
        consumers=40,
        min_consumers=4,
        avg_load=0.0,
        wip=0.0,
        wip_margin=0.15,
    )
    assert target == 4


@pytest.mark.parametrize(
    ("wip", "margin", "expected"),
    [
        (10.0, 0.15, 12),  # 11.5 -> 12
        (100.0, 0.1, 110),  # 100 * 1.1 == 110.00000000000001 in binary floats
        (100.0, 0.14, 114),  # 100 * 1.14 == 114.00000000000001
        (50.0, 0.1, 55),  # 50 * 1.1 == 55.00000000000001
        (20.0, 0.0, 20),
        (0.4, 0.0, 1),
    ],
)
def test_scale_down_keeps_littles_law_floor(
    wip: float, margin: float, expected: int
) -> None:
    target = scale_down_target(
        qsize=0,
        busy=1,
        consumers=500,
        min_consumers=1,
        avg_load=0.1,
        wip=wip,
        wip_margin=margin,
    )
    assert target == expected


def test_scale_down_unchanged_when_wip_floor_exceeds_pool() -> None:
    target = scale_down_target(
        qsize=0,
        busy=1,
        consumers=8,
        min_consumers=1,
        avg_load=0.1,
        wip=10.0,
        wip_margin=0.15,
    )
    assert target == 8


@pytest.mark.parametrize("wip", [math.nan, -3.0])
def test_scale_down_ignores_meaningless_wip(wip: float) -> None:
    target = scale_down_target(
        qsize=0,
        busy=1,
        consumers=8,
        min_consumers=1,
        avg_load=0.1,
        wip=wip,
        wip_margin=0.15,
    )
    assert target == 2


def test_scale_down_infinite_wip_keeps_pool() -> None:
    target = scale_down_target(
        qsize=0,
        busy=1,
        consumers=8,
        min_consumers=1,
        avg_load=0.1,
        wip=math.inf,
        wip_margin=0.15,
    )
    assert target == 8


def test_next_pool_size_grows_when_overloaded() -> None:
    size = next_pool_size(
        qsize=12,
        busy=8,
        consumers=10,
        min_consumers=1,
        max_consumers=100,
        avg_load=0.2,
        wip=1.0,
        wip_margin=0.15,
    )
    assert size == 23


def test_next_pool_size_shrinks_when_underused() -> None:
    size = next_pool_size(
        qsize=0,
        busy=3,
        consumers=10,
        min_consumers=1,
        max_consumers=100,
        avg_load=0.2,
        wip=1.0,
        wip_margin=0.15,
    )
    assert size == 4


def test_next_pool_size_holds_when_average_is_high() -> None:
    size = next_pool_size(
        qsize=0,
        busy=3,
        consumers=10,
        min_consumers=1,
        max_consumers=100,
        avg_load=0.9,
        wip=1.0,
        wip_margin=0.15,
    )
    assert size == 10


def test_next_pool_size_restarts_an_empty_pool() -> None:
    size = next_pool_size(
        qsize=3,
        busy=0,
        consumers=0,
        min_consumers=0,
        max_consumers=100,
        avg_load=0.0,
        wip=0.0,
        wip_margin=0.15,
    )
    assert size == 4
    idle = next_pool_size(
        qsize=0,
        busy=0,
        consumers=0,
        min_consumers=0,
        max_consumers=100,
        avg_load=0.0,
        wip=0.0,
        wip_margin=0.15,
    )
    assert idle == 0


@given(
    qsize=counts,
    busy=counts,
    consumers=st.integers(min_value=0, max_value=500),
    extra=st.integers(min_value=0, max_value=500),
    margin=margins,
)
def test_scale_up_bounds(
    qsize: int, busy: int, consumers: int, extra: int, margin: float
) -> None:
    max_consumers = consumers + extra
    target = scale_up_target(
        qsize=qsize,
        busy=busy,
        consumers=consumers,
        max_consumers=max_consumers,
        wip_margin=margin,
    )
    assert consumers <= target <= max_consumers
    demand = qsize + busy
    if consumers <= demand <= max_consumers:
        assert target >= demand


@given(
    qsize=counts,
    busy=counts,
    min_consumers=st.integers(min_value=0, max_value=50),
    extra=st.integers(min_value=0, max_value=20_000),
    avg_load=loads,
    wip=wips,
    margin=margins,
)
def test_scale_down_bounds(
    qsize: int,
    busy: int,
    min_consumers: int,
    extra: int,
    avg_load: float,
    wip: float,
    margin: float,
) -> None:
    consumers = min_consumers + extra
    target = scale_down_target(
        qsize=qsize,
        busy=busy,
        consumers=consumers,
        min_consumers=min_consumers,
        avg_load=avg_load,
        wip=wip,
        wip_margin=margin,
    )
    assert min_consumers <= target <= consumers
    wip_floor = math.ceil(round(wip * (1 + margin), 9))
    if wip_floor > consumers:
        assert target == consumers
    else:
        assert target >= wip_floor
    if avg_load >= REDUCTION_THRESHOLD or qsize + busy >= consumers > 0:
        assert target == consumers


@given(
    qsize=counts,
    busy=counts,
    min_consumers=st.integers(min_value=0, max_value=50),
    extra_min=st.integers(min_value=0, max_value=500),
    extra_max=st.integers(min_value=0, max_value=500),
    avg_load=loads,
    wip=wips,
    margin=margins,
)
def test_next_pool_size_stays_in_bounds(
    qsize: int,
    busy: int,
    min_consumers: int,
    extra_min: int,
    extra_max: int,
    avg_load: float,
    wip: float,
    margin: float,
) -> None:
    consumers = min_consumers + extra_min
    max_consumers = consumers + extra_max
    size = next_pool_size(
        qsize=qsize,
        busy=busy,
        consumers=consumers,
        min_consumers=min_consumers,
        max_consumers=max_consumers,
        avg_load=avg_load,
        wip=wip,
        wip_margin=margin,
    )
    assert min_consumers <= size <= max_consumers
    overloaded = load_ratio(qsize, busy, consumers) >= 1 or (
        consumers == 0 and qsize + busy > 0
    )
    if overloaded:
        assert size >= consumers
    else:
        assert size <= consumers


@given(
    demand=st.integers(min_value=0, max_value=10_000),
    percent=st.integers(min_value=0, max_value=200),
)
def test_scale_up_margin_matches_integer_arithmetic(demand: int, percent: int) -> None:
    target = scale_up_target(
        qsize=demand,
        busy=0,
        consumers=0,
        max_consumers=10**9,
        wip_margin=percent / 100,
    )
    # Exact ceiling of demand * percent / 100, free of any binary rounding.
    assert target == demand + -(-demand * percent // 100)
