"""Tests of the fleet view: ``read_fleet``'s snapshot of a Redis stream and
its workers, the Little's-law worker count, and ``event-collector top``."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from conftest import Gate
from event_collector import Collector, CollectorQueue
from event_collector._top_cli import render_fleet
from event_collector.cli import main
from event_collector.redis import RedisTransport
from event_collector.redis._common import DEFAULT_BANDS
from event_collector.redis._fleet import (
    FleetSnapshot,
    WorkerSnapshot,
    desired_workers,
    read_fleet,
)
from redis_server import RedisServer, redis_server  # noqa: F401

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def worker_snapshot(consumer: str, **figures: Any) -> WorkerSnapshot:
    """A worker's report: zeros, but for the ``figures`` given."""
    fields: dict[str, Any] = {
        "consumer": consumer,
        "consumers": 1,
        "busy": 0,
        "qsize": 0,
        "load": 0.0,
        "held": 0,
        "handled": 0,
        "reclaimed": 0,
        "dead_lettered": 0,
        "arrival_rate": 0.0,
        "departure_rate": 0.0,
        "service_time": 0.0,
        "wait_time": 0.0,
        "min_consumers": None,
        "max_consumers": None,
        "reported_at": 0.0,
    }
    return WorkerSnapshot(**(fields | figures))


def fleet_snapshot(*workers: WorkerSnapshot, **figures: Any) -> FleetSnapshot:
    fields: dict[str, Any] = {
        "stream": "orders",
        "group": "event-collector",
        "taken_at": 0.0,
        "workers": workers,
        "backlog": 0,
        "pending": 0,
        "lag": 0,
        "dead_letters": 0,
    }
    return FleetSnapshot(**(fields | figures))


def stream_rows(text: str) -> dict[str, str]:
    """The stream table of a rendered view: name -> value."""
    rows = {}
    for line in text.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) == 2:
            rows[cells[0]] = cells[1]
    return rows


def worker_rows(text: str, names: list[str]) -> dict[str, list[str]]:
    """The rows of the workers table for ``names``: name -> the other cells."""
    rows = {}
    for line in text.splitlines():
        cells = line.split()
        if cells and cells[0] in names:
            rows[cells[0]] = cells[1:]
    return rows


def rendered(snapshot: FleetSnapshot, *, url: str = "") -> str:
    console = Console(record=True, width=200, file=open(os.devnull, "w"))  # noqa: SIM115
    try:
        console.print(render_fleet(snapshot, url=url))
        return console.export_text()
    finally:
        console.file.close()


# -- the worker count ------------------------------------------------------------


def test_desired_workers_follows_littles_law() -> None:
    # 40 events/s x 0.5 s = 20 events in service; 8 consumers per worker.
    assert desired_workers(40.0, 0.5, 8, backlog=0) == 3
    assert desired_workers(32.0, 0.5, 8, backlog=0) == 2  # exactly 2, not 3
    assert desired_workers(0.0, 0.5, 8, backlog=0) == 0
    assert desired_workers(0.0, 0.5, 8, backlog=5) == 1  # work and no rate yet
    assert desired_workers(40.0, 0.5, None, backlog=5) == 1  # capacity unknown
    assert desired_workers(1.0, 0.01, 8, backlog=0) == 1


def test_the_fleet_adds_rates_and_weighs_service_times() -> None:
    fast = worker_snapshot(
        "a", departure_rate=30.0, arrival_rate=30.0, service_time=0.1, max_consumers=4
    )
    slow = worker_snapshot(
        "b", departure_rate=10.0, arrival_rate=12.0, service_time=0.5, max_consumers=2
    )
    fleet = fleet_snapshot(fast, slow, backlog=3)
    assert fleet.arrival_rate == pytest.approx(42.0)
    assert fleet.departure_rate == pytest.approx(40.0)
    # (30 x 0.1 + 10 x 0.5) / 40
    assert fleet.service_time == pytest.approx(0.2)
    assert fleet.capacity == pytest.approx(3.0)
    # 42 x 0.2 / 3 = 2.8
    assert fleet.desired_workers == 3
    assert fleet.worker("b") is slow
    with pytest.raises(KeyError):
        fleet.worker("c")


def test_capacity_falls_back_to_the_hint_then_the_pool_size() -> None:
    unreported = worker_snapshot("a", consumers=5)
    assert fleet_snapshot(unreported).capacity == 5
    assert fleet_snapshot(unreported, capacity_hint=20).capacity == 20
    assert fleet_snapshot().capacity is None
    assert fleet_snapshot(capacity_hint=20).capacity == 20
    # No worker has a rate yet: the plain mean of those that measured one.
    measured = worker_snapshot("b", service_time=0.3)
    assert fleet_snapshot(unreported, measured).service_time == pytest.approx(0.3)


def test_the_view_shows_what_the_snapshot_holds() -> None:
    fleet = fleet_snapshot(
        worker_snapshot(
            "host:1:aa",
            consumers=3,
            max_consumers=8,
            busy=2,
            load=0.75,
            held=3,
            departure_rate=12.5,
            reclaimed=4,
            dead_lettered=1,
            arrival_rate=20.0,
            service_time=0.6,
        ),
        worker_snapshot("host:2:bb", consumers=1, arrival_rate=5.0),
        backlog=9,
        pending=5,
        lag=4,
        dead_letters=2,
    )
    text = rendered(fleet, url="redis://user:secret@db.example:6380/2")
    assert "stream 'orders', group 'event-collector'" in text
    assert "redis://user:***@db.example:6380/2" in text
    assert "secret" not in text
    rows = stream_rows(text)
    assert rows["backlog"] == "9"
    assert rows["pending"] == "5"
    assert rows["lag"] == "4"
    assert rows["dead letters"] == "2"
    assert rows["arrival rate"] == "25.0/s"
    assert rows["live workers"] == "2"
    assert rows["consumers per worker"] == "8"
    # 25 events/s x 0.6 s / 8 = 1.9
    assert rows["desired workers"] == "2"
    workers = worker_rows(text, ["host:1:aa", "host:2:bb"])
    # consumers, busy, load, held, handled/s, reclaimed, dead
    assert workers["host:1:aa"] == ["3/8", "2", "0.75", "3", "12.5", "4", "1"]
    assert workers["host:2:bb"] == ["1", "0", "0.00", "0", "0.0", "0", "0"]


def test_the_view_says_when_no_worker_is_live() -> None:
    text = rendered(fleet_snapshot(backlog=3, lag=3))
    assert "no live worker" in text
    rows = stream_rows(text)
    assert rows["desired workers"] == "1"
    assert rows["consumers per worker"] == "unknown"


# -- a real fleet ------------------------------------------------------------------


async def until(
    condition: Callable[[], bool], *, guard: float = 30.0, what: str = ""
) -> None:
    """Wait until ``condition()`` (it may block: it runs in a thread) holds;
    ``guard`` seconds fail the test."""
    try:
        async with asyncio.timeout(guard):
            # Polled: the figures are what other tasks write to Redis.
            while not await asyncio.to_thread(condition):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"not within {guard} s: {what or condition}")


async def run_top(
    *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "event_collector",
        "top",
        *args,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def fleet(
    redis_server: RedisServer,  # noqa: F811
) -> AsyncIterator[tuple[Gate, list[RedisTransport]]]:
    """Two worker queues on stream ``t``, two consumers each, all held by one
    gate; the first reports its pool's limits (as every queue does), the
    second does not."""
    gate = Gate()
    transports = [RedisTransport(redis_server.url, stream="t") for _ in range(2)]
    queues = [
        CollectorQueue(
            [Collector("gate", gate)],
            autoscale=False,
            max_consumers=2,
            logging=False,
            transport=transport,
        )
        for transport in transports
    ]
    for queue in queues:
        await queue.init_queue()
    # A queue hands its pool's limits to its transport; the second worker
    # forgets them, to show how a worker that reports none is drawn.
    worker = transports[1]._worker
    assert worker is not None
    worker.pool_limits = None
    try:
        yield gate, transports
    finally:
        gate.open()
        for queue in queues:
            await queue.shut_down_queue()


@pytest.mark.slow
async def test_the_view_of_two_live_workers(
    fleet: tuple[Gate, list[RedisTransport]],
    redis_server: RedisServer,  # noqa: F811
) -> None:
    gate, transports = fleet
    names = [t.consumer for t in transports]
    client = redis_server.client()

    def read() -> FleetSnapshot:
        return read_fleet(client, "t")

    await until(lambda: len(read().workers) == 2, what="two workers report")
    # An entry that is not an event (no codec document): dead-lettered.
    client.xadd("t", {"x": "y"})
    await until(lambda: read().dead_letters == 1, what="a dead letter")
    async with transports[0].publisher() as publisher:
        events = [await publisher.send(n) for n in range(7)]
        # Each worker fetches for its two idle consumers only: 4 handled at
        # once, 3 left in the stream.
        await gate.until_running(4)

        def settled() -> bool:
            snap = read()
            return (snap.backlog, snap.pending, snap.lag) == (7, 4, 3) and all(
                (w.busy, w.held) == (2, 2) for w in snap.workers
            )

        await until(settled, what="4 events held, 3 waiting")
        snapshot = read()
        assert sorted(w.consumer for w in snapshot.workers) == sorted(names)
        assert sum(w.dead_lettered for w in snapshot.workers) == 1

        text = rendered(snapshot, url=redis_server.url)
        rows = stream_rows(text)
        assert rows["backlog"] == "7"
        assert rows["pending"] == "4"
        assert rows["lag"] == "3"
        assert rows["dead letters"] == "1"
        assert rows["live workers"] == "2"
        assert rows["consumers per worker"] == "2"
        # Nothing answered yet: no service time, but work waits.
        assert rows["desired workers"] == "1"
        workers = worker_rows(text, names)
        first, second = workers[names[0]], workers[names[1]]
        assert first[:2] == ["2/2", "2"]  # consumers now/most, busy
        assert second[:2] == ["2", "2"]  # no limits reported
        assert first[3] == second[3] == "2"  # held
        assert float(first[2]) >= 1.0  # load: two busy consumers of two
        assert [first[5], second[5]] == ["0", "0"]  # reclaimed
        assert sorted([first[6], second[6]]) == ["0", "1"]  # dead letters

        # The same, from the command, for a script.
        status, out, err = await run_top(redis_server.url, "--stream", "t", "--once")
        assert status == 0, err
        assert err == ""
        once = stream_rows(out)
        assert (once["backlog"], once["pending"], once["lag"]) == ("7", "4", "3")
        assert set(worker_rows(out, names)) == set(names)

        gate.open()
        answers = [await event.wait(timeout=30) for event in events]
        assert [a[0].unwrap() for a in answers] == list(range(7))


class Top:
    """``event-collector top`` drawing on what it takes for a terminal."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.out = ""

    async def shows(self, text: str, *, guard: float = 30.0) -> None:
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(guard):
                while text not in ANSI.sub("", self.out):
                    chunk = await self.process.stdout.read(4096)
                    if not chunk:
                        break
                    self.out += chunk.decode(errors="replace")
        except TimeoutError:
            pass
        if text not in ANSI.sub("", self.out):
            pytest.fail(f"top never showed {text!r}; it drew:\n{self.out}")

    async def interrupt(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            rest, err = await self.process.communicate()
        self.out += rest.decode(errors="replace")
        assert self.process.returncode is not None
        return self.process.returncode, err.decode()


async def start_top(url: str) -> Top:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "event_collector",
        "top",
        url,
        "--stream",
        "t",
        "--interval",
        "0.2",
        # rich draws in place only on a terminal; these make it take the
        # pipe for one.
        env={**os.environ, "FORCE_COLOR": "1", "TTY_COMPATIBLE": "1", "COLUMNS": "150"},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return Top(process)


@pytest.mark.slow
async def test_ctrl_c_quits_top_cleanly(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    redis_server.client().xadd("t", {"x": "y"})
    top = await start_top(redis_server.url)
    try:
        await top.shows("desired workers")
        await top.shows("no live worker")
        status, err = await top.interrupt()
    finally:
        if top.process.returncode is None:
            top.process.kill()
            await top.process.wait()
    assert status == 0
    assert "Traceback" not in err
    assert "KeyboardInterrupt" not in err


@pytest.mark.slow
async def test_top_waits_for_a_redis_that_is_away(tmp_path: Path) -> None:
    away = RedisServer(tmp_path / "redis-server")  # never started
    top = await start_top(away.url)
    try:
        await top.shows("cannot read redis://127.0.0.1:")
        await top.shows("trying again every 0.2 s")
        status, err = await top.interrupt()
    finally:
        if top.process.returncode is None:
            top.process.kill()
            await top.process.wait()
    assert status == 0
    assert "Traceback" not in err


@pytest.mark.slow
async def test_top_once_fails_on_a_redis_that_is_away(tmp_path: Path) -> None:
    away = RedisServer(tmp_path / "redis-server")  # never started
    status, out, err = await run_top(away.url, "--stream", "t", "--once")
    assert status == 1
    assert out == ""
    assert err.startswith(f"event-collector top: cannot read {away.url}: ")
    assert "Traceback" not in err


@pytest.mark.parametrize("url", ["127.0.0.1:6379", "localhost"])
def test_top_wants_a_redis_url(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["top", url, "--stream", "t", "--once"]) == 2
    err = capsys.readouterr().err
    assert "event-collector top: URL must be the workers' Redis" in err
    assert repr(url) in err


def test_the_help_gives_the_default_bands(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # no line breaks in the help
    with pytest.raises(SystemExit):
        main(["top", "--help"])
    bounds = ",".join(str(b) for b in DEFAULT_BANDS)
    assert f"(default: {bounds})" in capsys.readouterr().out


def test_top_checks_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    for options in (["--interval", "0"], ["--priority-bands", "100,50"]):
        with pytest.raises(SystemExit) as exit_:
            main(["top", "redis://127.0.0.1:1/0", "--stream", "t", *options])
        assert exit_.value.code == 2
    assert "must be increasing" in capsys.readouterr().err
