"""The reclaim measurement (``python -m benchmarks.redis_bench.reclaim``):
its verdict, and one short real run with a killed worker."""

from __future__ import annotations

import pytest
from benchmarks.redis_bench import reclaim

from redis_server import require_redis_server

pytestmark = pytest.mark.slow


def figures(delays: list[list[float]], **more: int) -> dict[str, object]:
    return {
        "kills": len(delays),
        "visibility_timeout_s": 2.0,
        "sent": 100,
        "lost": 0,
        "errors": 0,
        "reclaimed": sum(len(d) for d in delays),
        "delays_s": delays,
        **more,
    }


def test_the_verdict_wants_every_kill_reclaimed_in_time_and_nothing_lost() -> None:
    table, met = reclaim.summary(figures([[2.1, 2.3], [3.9]]))
    assert met
    assert "worst 3.90 s" in table
    assert not reclaim.summary(figures([[2.1], [4.1]]))[1]  # too late
    assert not reclaim.summary(figures([[2.1], []]))[1]  # a kill with nothing
    assert not reclaim.summary(figures([[2.1]], lost=1))[1]
    assert not reclaim.summary(figures([[2.1]], errors=1))[1]


def test_a_killed_workers_events_are_answered_by_the_other() -> None:
    require_redis_server()
    vt = 1.0
    got = reclaim.measure(kills=1, visibility_timeout=vt, rate=300.0, handler_ms=20.0)
    assert (got["lost"], got["errors"]) == (0, 0)
    assert got["sent"] > 300
    (delays,) = got["delays_s"]
    assert delays, "nothing the killed worker held was answered again"
    # Not before its lease ran out (renewed every vt / 3 until the kill);
    # the upper bound is a wide guard, the measured figure is the report's.
    assert all(vt - vt / 3 - 0.1 < d < vt + 10 for d in delays), delays
