"""Faults on the Redis Streams transport, with real worker processes.

Each test runs its own ``redis-server`` and worker processes
(:mod:`redis_fleet`), does something to them that production does (SIGKILL
a worker mid-handler or between its handler's return and its
acknowledgement, kill or freeze Redis, pause its clients, drop their
connections, kill a publisher, write garbage into the stream), and then
counts, in the ledger the handlers append to, what was done: every
accepted event answered, duplicates only where a worker died holding the
event, reclaims within ``visibility_timeout`` plus a couple of seconds.

The figures each test measured are printed (run with ``-s`` to see them).
Every wait is bounded: answers by ``wait(timeout=...)``, processes by
their guards in :mod:`redis_fleet`.

``EVENT_COLLECTOR_REDIS_SOAK`` sets the soak's size in events: 200,000 by
default (about 20 s here), fewer for a quick look.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import random
import signal
import statistics
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from event_collector import (
    DeliveryExhausted,
    Error,
    EventLost,
    Ok,
    QueueClosed,
    RemoteError,
    ResultList,
)
from event_collector.redis import RedisPublisher, RedisTransport
from event_collector.redis._batches import answers as answers_of
from redis_fleet import Fleet, pending_of
from redis_server import RedisServer, redis_server, require_redis_server  # noqa: F401

pytestmark = pytest.mark.slow

STREAM = "faults"
GROUP = "event-collector"
SOAK_EVENTS = int(os.environ.get("EVENT_COLLECTOR_REDIS_SOAK", "200000"))


def report(name: str, **figures: Any) -> None:
    """Print what a test measured (seen with ``pytest -s``)."""
    text = " ".join(f"{k}={v}" for k, v in figures.items())
    print(f"\n[{name}] {text}")


def publisher(url: str, **options: Any) -> RedisPublisher:
    return RedisTransport(url, stream=STREAM, **options).publisher()


@pytest.fixture
def fleet_dir(tmp_path: Path) -> Path:
    return tmp_path / "fleet"


@contextlib.asynccontextmanager
async def running(fleet: Fleet) -> AsyncIterator[Fleet]:
    """Kill what is left of ``fleet`` on the way out; show its logs if the
    body failed."""
    try:
        yield fleet
    except BaseException:
        print(fleet.logs())
        raise
    finally:
        fleet.close()


@dataclasses.dataclass
class Tally:
    """What a publisher saw: events accepted, answered, and when."""

    accepted: int = 0
    ok: int = 0
    errors: dict[str, ResultList] = dataclasses.field(default_factory=dict)
    hung: list[str] = dataclasses.field(default_factory=list)
    answered_at: list[float] = dataclasses.field(default_factory=list)
    """``time.time()`` of every answer, in the order they came."""
    accepted_at: list[float] = dataclasses.field(default_factory=list)
    values: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Entry id -> the value of an Ok answer."""


async def pump(
    sender: RedisPublisher,
    make: Callable[[int], Any],
    *,
    count: int,
    window: int,
    wait_timeout: float,
    more: Callable[[], bool] = lambda: False,
) -> Tally:
    """Send ``count`` events (and more while ``more()``), at most ``window``
    unanswered at a time, and wait for every answer."""
    tally = Tally()
    room = asyncio.Semaphore(window)
    waits: set[asyncio.Task[None]] = set()

    async def answer(event: Any) -> None:
        try:
            results = await event.wait(timeout=wait_timeout)
        except TimeoutError:
            tally.hung.append(event.payload.event_id)
        else:
            tally.answered_at.append(time.time())
            if all(isinstance(r, Ok) for r in results):
                tally.ok += 1
                tally.values[event.payload.event_id] = results[0].value
            else:
                tally.errors[event.payload.event_id] = results
        finally:
            room.release()

    n = 0
    while n < count or more():
        await room.acquire()
        event = await sender.send(make(n))
        tally.accepted += 1
        tally.accepted_at.append(time.time())
        task = asyncio.create_task(answer(event))
        waits.add(task)
        task.add_done_callback(waits.discard)
        n += 1
    await asyncio.gather(*list(waits))
    return tally


def keys_bytes(client: Any) -> int:
    """What every key takes (MEMORY USAGE, every element counted): Redis's
    used_memory also counts the clients' buffers, which it shrinks at its
    own pace, 100-300 kB either way between two looks."""
    return sum(client.memory_usage(k, samples=0) or 0 for k in client.scan_iter())


def settled(client: redis.Redis) -> tuple[int, int]:
    """The work stream's length and its pending count."""
    length = client.xlen(STREAM)
    pending = client.xpending(STREAM, GROUP)["pending"]
    return int(length), int(pending)


async def until(condition: Callable[[], bool], *, guard: float, what: str) -> float:
    """Wait until ``condition()``; return the seconds it took. The guard
    fails the test."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > guard:
            raise AssertionError(f"not within {guard} s: {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


# -- 1. SIGKILL workers under load ---------------------------------------------


@dataclasses.dataclass
class Kill:
    at: float
    pid: int
    held: list[str]
    """The entries the worker held (pending under its name) when it died."""


async def test_sigkill_workers_under_load(
    redis_server: RedisServer,  # noqa: F811
    fleet_dir: Path,
) -> None:
    """A random worker of three is SIGKILLed every 1.5 s, 30 times, and
    replaced; handlers take 50-200 ms. Every accepted event is answered,
    none hangs, only events a killed worker held ran twice, and each of
    those started again within visibility_timeout + 2 s of the kill."""
    vt, cycles, every, events = 2.0, 30, 1.5, 10_000
    fleet = Fleet(
        fleet_dir,
        redis_server.url,
        stream=STREAM,
        visibility_timeout=vt,
        max_consumers=10,
    )
    admin: Any = redis_server.client()
    rng = random.Random(1)
    kills: list[Kill] = []
    async with running(fleet):
        await fleet.start_many(3)

        async def killer() -> None:
            for _ in range(cycles):
                await asyncio.sleep(every)
                victim = rng.choice(fleet.alive())
                at = fleet.kill(victim)
                held = pending_of(admin, STREAM, GROUP, victim.consumer)
                kills.append(Kill(at, victim.pid, held))
                await fleet.start()

        killing = asyncio.create_task(killer())
        started = time.monotonic()
        async with publisher(redis_server.url, visibility_timeout=vt) as sender:
            tally = await pump(
                sender,
                lambda n: {"n": n, "mode": "sleep", "ms": rng.randint(50, 200)},
                count=events,
                window=100,
                wait_timeout=60.0,
                more=lambda: not killing.done(),
            )
        await killing
        elapsed = time.monotonic() - started
        stream_len, pending = settled(admin)

    # Kept beside the ledger and the workers' logs, to read after a failure.
    (fleet_dir / "kills.json").write_text(
        json.dumps([dataclasses.asdict(k) for k in kills])
    )
    calls = fleet.ledger.by_event()
    ends = fleet.ledger.ends()
    in_flight = {eid for kill in kills for eid in kill.held}
    duplicated = {eid for eid, n in ends.items() if n > 1}
    delays = reclaim_delays(kills, calls)
    report(
        "sigkill",
        events=tally.accepted,
        answered_ok=tally.ok,
        errors=len(tally.errors),
        hung=len(tally.hung),
        kills=len(kills),
        held_at_kills=sum(len(k.held) for k in kills),
        duplicated=len(duplicated),
        reclaims=len(delays),
        max_reclaim_s=round(max(delays), 2),
        p90_reclaim_s=round(sorted(delays)[len(delays) * 9 // 10], 2),
        median_reclaim_s=round(statistics.median(delays), 2),
        seconds=round(elapsed, 1),
    )
    assert len(kills) == cycles
    assert tally.accepted >= events
    assert tally.hung == []
    assert tally.errors == {}
    assert tally.ok == tally.accepted
    assert len(calls) == tally.accepted  # every answered event is in the ledger
    assert duplicated <= in_flight, duplicated - in_flight
    assert max(delays) <= vt + 2.0, sorted(delays)[-5:]
    assert (stream_len, pending) == (0, 0)


def reclaim_delays(kills: list[Kill], calls: dict[str, list[Any]]) -> list[float]:
    """For each entry a killed worker held: seconds from the kill to the
    next start of a handler for it. An entry whose next holder was killed
    too before starting it is counted from that later kill."""
    delays = []
    for kill in kills:
        for eid in kill.held:
            starts = [c.at for c in calls.get(eid, []) if c.phase == "start"]
            later = [at for at in starts if at > kill.at]
            assert later, f"{eid} held by the killed {kill.pid} never ran again"
            next_start = min(later)
            if any(
                k.at > kill.at and k.at < next_start and eid in k.held for k in kills
            ):
                continue
            delays.append(next_start - kill.at)
    return delays


# -- 2. SIGKILL between the handler's return and the acknowledgement ----------


async def test_sigkill_between_return_and_ack(
    redis_server: RedisServer,  # noqa: F811
    fleet_dir: Path,
) -> None:
    """A worker that dies after its handler returned and before the answer
    was acknowledged: another worker handles the event again (attempt 2)
    and the publisher gets that one answer."""
    vt, rounds = 2.0, 3
    fleet = Fleet(fleet_dir, redis_server.url, stream=STREAM, visibility_timeout=vt)
    admin: Any = redis_server.client()
    async with running(fleet):
        await fleet.start_many(2)
        async with publisher(redis_server.url, visibility_timeout=vt) as sender:
            for round_ in range(rounds):
                victims = fleet.alive()
                started = time.monotonic()
                event = await sender.send({"n": round_, "mode": "kill_after"})
                results = await event.wait(timeout=vt + 15)
                took = time.monotonic() - started
                eid = event.payload.event_id
                dead = [w for w in victims if not w.alive]
                assert len(dead) == 1, fleet.workers
                assert dead[0].process.returncode == -signal.SIGKILL
                calls = fleet.ledger.by_event()[eid]
                assert [(c.attempt, c.pid, c.phase) for c in calls] == [
                    (1, dead[0].pid, "start"),
                    (1, dead[0].pid, "end"),
                    (2, calls[2].pid, "start"),
                    (2, calls[2].pid, "end"),
                ]
                assert calls[2].pid != dead[0].pid
                assert results == ResultList(
                    [Ok({"n": round_, "pid": calls[2].pid, "attempt": 2})]
                )
                report("kill-before-ack", round=round_, answered_after_s=round(took, 2))
                await fleet.start()
        assert settled(admin) == (0, 0)

        # Once more with an entry whose answers go to a stream no publisher
        # reads (and deletes), to count them: one, from the second attempt.
        probe = f"{STREAM}:reply:probe"
        document = json.dumps({"v": {"n": 99, "mode": "kill_after"}}).encode()
        fields = {b"d": document, b"r": probe.encode(), b"c": b"json"}
        eid = admin.xadd(STREAM, fields).decode()
        await until(
            lambda: settled(admin) == (0, 0), guard=vt + 15, what="probe acknowledged"
        )
        replies = admin.xrange(probe)
        assert len(replies) == 1, replies
        assert replies[0][1][b"e"] == eid.encode()
        [(status, value, collector)] = json.loads(replies[0][1][b"a"])
        assert (status, value["n"], value["attempt"]) == ("ok", 99, 2)
        assert collector == "work"
        assert [c.attempt for c in fleet.ledger.by_event()[eid]] == [1, 1, 2, 2]
        assert admin.xlen(f"{STREAM}:dead") == 0


# -- 3. Redis killed and restarted under load ----------------------------------


async def test_redis_restarts_under_load(tmp_path: Path, fleet_dir: Path) -> None:
    """Redis (appendfsync always) is SIGKILLed and restarted ten times while
    events flow: none accepted is lost, and the publisher and each worker
    are back within 2 s of each restart. Then it comes back empty: the
    waiting events are answered Error(EventLost), the group is recreated,
    a worker logs it, and new sends work."""
    require_redis_server()
    vt, restarts = 2.0, 10
    server = RedisServer(tmp_path / "redis", aof=True)
    with server:
        fleet = Fleet(fleet_dir, server.url, stream=STREAM, visibility_timeout=vt)
        async with running(fleet):
            workers = await fleet.start_many(2)
            restarted: list[float] = []

            async def restarter() -> None:
                for _ in range(restarts):
                    await asyncio.sleep(1.5)
                    server.kill()
                    await asyncio.to_thread(server.start)
                    restarted.append(time.time())
                await asyncio.sleep(2.5)  # events flow after the last one too

            restarting = asyncio.create_task(restarter())
            async with publisher(server.url, visibility_timeout=vt) as sender:
                tally = await pump(
                    sender,
                    lambda n: {"n": n, "mode": "sleep", "ms": 20},
                    count=2000,
                    window=50,
                    wait_timeout=30.0,
                    more=lambda: not restarting.done(),
                )
                await restarting

                calls = fleet.ledger.calls()
                answer_gaps, send_gaps, worker_gaps = [], [], []
                for at in restarted:
                    answer_gaps.append(min(t for t in tally.answered_at if t > at) - at)
                    send_gaps.append(min(t for t in tally.accepted_at if t > at) - at)
                    for worker in workers:
                        # The first handler this worker started for an entry
                        # that Redis accepted after the restart: the worker
                        # fetched from the new server.
                        worker_gaps.append(
                            min(
                                c.at
                                for c in calls
                                if c.pid == worker.pid
                                and c.phase == "start"
                                and int(c.event_id.split("-")[0]) / 1000 > at
                            )
                            - at
                        )
                report(
                    "redis-restarts",
                    events=tally.accepted,
                    ok=tally.ok,
                    errors=len(tally.errors),
                    hung=len(tally.hung),
                    restarts=len(restarted),
                    max_answer_after_restart_s=round(max(answer_gaps), 2),
                    max_send_after_restart_s=round(max(send_gaps), 2),
                    max_worker_fetch_after_restart_s=round(max(worker_gaps), 2),
                )
                assert tally.hung == []
                assert tally.errors == {}
                assert tally.ok == tally.accepted
                assert max(answer_gaps) <= 2.0, answer_gaps
                assert max(send_gaps) <= 2.0, send_gaps
                assert max(worker_gaps) <= 2.0, worker_gaps

                # Now a restart that loses everything, with events waiting.
                slow = await sender.send_many(
                    [{"n": n, "mode": "sleep", "ms": 1500} for n in range(40)]
                )
                await until(
                    lambda: len(fleet.ledger.calls()) > len(calls),
                    guard=10,
                    what="the slow events started",
                )
                await asyncio.to_thread(server.restart, True)
                answers = await asyncio.gather(*(e.wait(timeout=vt + 10) for e in slow))
                lost = [
                    r
                    for r in answers
                    if isinstance(r[0], Error) and isinstance(r[0].err, EventLost)
                ]
                others = [r for r in answers if r not in lost]
                report(
                    "redis-empty",
                    waiting=len(slow),
                    lost=len(lost),
                    answered_before=len(others),
                )
                assert lost, answers
                assert all(r[0].ok() for r in others), others
                admin: Any = server.client()
                groups = admin.xinfo_groups(STREAM)
                assert [g["name"] for g in groups] == [GROUP.encode()]
                after = await pump(
                    sender,
                    lambda n: {"n": n, "mode": "sleep", "ms": 5},
                    count=50,
                    window=50,
                    wait_timeout=vt + 10,
                )
                assert (after.ok, after.hung, after.errors) == (50, [], {})
            logs = "".join(w.log_text() for w in workers)
            assert "recreated" in logs, logs[-3000:]


# -- 4. Paused, sleeping Redis and dropped connections -------------------------


async def test_paused_sleeping_and_disconnected_redis(
    tmp_path: Path, fleet_dir: Path
) -> None:
    """CLIENT PAUSE and DEBUG SLEEP longer than visibility_timeout, and
    CLIENT KILL of every client, while events flow: no event whose worker
    lived is delivered twice.

    Redis stays frozen for 5.7 s, past the heartbeat connection's 5 s read
    timeout: the renewal a worker had queued is dropped with its
    connection, so for a moment after Redis wakes no renewal is on its way
    while every entry looks idle. A reclaim that trusted one look then
    takes live workers' events (it did, with the check turned off: 14
    events delivered twice).
    """
    require_redis_server()
    vt, frozen = 2.0, 5.7
    server = RedisServer(tmp_path / "redis", extra=["--enable-debug-command", "local"])
    with server:
        admin: Any = server.client()
        fleet = Fleet(fleet_dir, server.url, stream=STREAM, visibility_timeout=vt)
        async with running(fleet):
            await fleet.start_many(2)
            done: list[str] = []

            async def disturb() -> None:
                await asyncio.sleep(1.0)
                admin.execute_command("CLIENT", "PAUSE", str(int(frozen * 1000)), "ALL")
                done.append("pause")
                await asyncio.sleep(frozen + 2.0)
                sleeper = server.client(socket_timeout=frozen + 10)
                await asyncio.to_thread(
                    sleeper.execute_command, "DEBUG", "SLEEP", str(frozen)
                )
                done.append("sleep")
                await asyncio.sleep(2.0)
                admin.execute_command("CLIENT", "KILL", "TYPE", "normal")
                done.append("kill")
                await asyncio.sleep(2.0)

            disturbing = asyncio.create_task(disturb())
            async with publisher(server.url, visibility_timeout=vt) as sender:
                tally = await pump(
                    sender,
                    lambda n: {"n": n, "mode": "sleep", "ms": 300},
                    count=200,
                    window=30,
                    wait_timeout=30.0,
                    more=lambda: not disturbing.done(),
                )
            await disturbing
            assert all(w.alive for w in fleet.workers)
        calls = fleet.ledger.calls()
        retried = [c for c in calls if c.attempt > 1]
        ends = fleet.ledger.ends()
        twice = [eid for eid, n in ends.items() if n > 1]
        report(
            "pause-sleep-kill",
            events=tally.accepted,
            ok=tally.ok,
            retried=len(retried),
            duplicated=len(twice),
            # Delivered while a worker's read timed out, taken back by it.
            recovered=sum(w.log_text().count("event recovered") for w in fleet),
            steps=done,
        )
        assert done == ["pause", "sleep", "kill"]
        assert (tally.hung, tally.errors) == ([], {})
        assert tally.ok == tally.accepted
        assert retried == []
        assert twice == []


# -- 5. Long handlers keep their lease ------------------------------------------


async def test_long_and_blocking_handlers_keep_their_lease(
    redis_server: RedisServer,  # noqa: F811
    fleet_dir: Path,
) -> None:
    """A handler ten times longer than visibility_timeout, and two that
    block their worker's event loop (time.sleep, a busy loop) for three
    times as long, each run once while another worker looks for dead
    workers' events."""
    vt = 1.0
    fleet = Fleet(fleet_dir, redis_server.url, stream=STREAM, visibility_timeout=vt)
    admin: Any = redis_server.client()
    async with running(fleet):
        await fleet.start_many(2)
        async with publisher(redis_server.url, visibility_timeout=vt) as sender:
            started = time.monotonic()
            events = await sender.send_many(
                [
                    {"n": 0, "mode": "sleep", "ms": int(vt * 10_000)},
                    {"n": 1, "mode": "block", "seconds": vt * 3},
                    {"n": 2, "mode": "spin", "seconds": vt * 3},
                ]
            )
            answers = [await e.wait(timeout=vt * 10 + 20) for e in events]
            took = time.monotonic() - started
        # SIGTERM: each shuts its queue down, leaves the group, exits 0.
        exits = await asyncio.gather(*(fleet.terminate(w) for w in fleet.alive()))
        consumers = admin.xinfo_consumers(STREAM, GROUP)
    calls = fleet.ledger.calls()
    report(
        "long-handlers",
        seconds=round(took, 1),
        attempts=sorted({c.attempt for c in calls}),
    )
    assert exits == [0, 0]
    assert consumers == []
    for n, answer in enumerate(answers):
        assert isinstance(answer[0], Ok), answer
        assert answer[0].value["n"] == n
        assert answer[0].value["attempt"] == 1
    assert sorted((c.event_id, c.phase) for c in calls) == sorted(
        (e.payload.event_id, phase) for e in events for phase in ("start", "end")
    )
    assert {c.attempt for c in calls} == {1}


# -- 6. A poison event -----------------------------------------------------------


async def test_poison_event_is_dead_lettered(
    redis_server: RedisServer,  # noqa: F811
    fleet_dir: Path,
) -> None:
    """An event whose handler kills its worker every time: exactly
    max_deliveries attempts, then the dead-letter stream holds it and its
    publisher gets one Error(DeliveryExhausted)."""
    vt, deliveries = 1.0, 3
    fleet = Fleet(
        fleet_dir,
        redis_server.url,
        stream=STREAM,
        visibility_timeout=vt,
        max_deliveries=deliveries,
    )
    admin: Any = redis_server.client()
    async with running(fleet):
        await fleet.start_many(2)
        stop = asyncio.Event()

        async def keeper() -> None:
            while not stop.is_set():
                if len(fleet.alive()) < 2:
                    assert len(fleet.workers) < 10, "too many restarts"
                    await fleet.start()
                await asyncio.sleep(0.05)

        keeping = asyncio.create_task(keeper())
        try:
            async with publisher(
                redis_server.url, visibility_timeout=vt, max_deliveries=deliveries
            ) as sender:
                poison = await sender.send({"n": 0, "mode": "poison"})
                fine = await sender.send_many(
                    [{"n": n, "mode": "sleep", "ms": 10} for n in range(1, 20)]
                )
                answer = await poison.wait(timeout=(vt + 3) * deliveries + 10)
                rest = [await e.wait(timeout=10) for e in fine]
        finally:
            stop.set()
            await keeping
    eid = poison.payload.event_id
    starts = [c for c in fleet.ledger.by_event()[eid] if c.phase == "start"]
    dead = admin.xrange(f"{STREAM}:dead")
    report(
        "poison",
        attempts=[c.attempt for c in starts],
        dead_letters=len(dead),
        answer=answer,
        workers_started=len(fleet.workers),
    )
    assert [c.attempt for c in starts] == list(range(1, deliveries + 1))
    assert len({c.pid for c in starts}) == deliveries
    assert len(answer) == 1
    assert isinstance(answer[0], Error)
    assert isinstance(answer[0].err, DeliveryExhausted)
    assert answer[0].err.attempts == deliveries
    assert len(dead) == 1
    fields = dead[0][1]
    assert fields[b"dead:entry"] == eid.encode()
    assert fields[b"dead:attempts"] == str(deliveries).encode()
    assert b"delivered" in fields[b"dead:reason"]
    assert all(r[0].ok() for r in rest)
    assert settled(admin) == (0, 0)


# -- 7. A publisher killed while it waits -------------------------------------


async def test_killed_publisher_leaves_nothing_behind(
    redis_server: RedisServer,  # noqa: F811
    fleet_dir: Path,
) -> None:
    """A publisher process SIGKILLed while its events run: the workers
    finish them, their answers expire with the reply stream after
    reply_ttl, and the memory the keys take comes back down."""
    vt, ttl, count, size = 2.0, 2.0, 40, 20_000
    fleet = Fleet(
        fleet_dir, redis_server.url, stream=STREAM, visibility_timeout=vt, reply_ttl=ttl
    )
    admin: Any = redis_server.client()

    def keys_memory() -> tuple[set[bytes], int, int]:
        """The keys, the bytes they take, and Redis's used_memory (for the
        report; see keys_bytes)."""
        return set(admin.keys()), keys_bytes(admin), admin.info("memory")["used_memory"]

    async with running(fleet):
        await fleet.start_many(2)
        await until(
            lambda: admin.zcard(f"{STREAM}:workers") == 2,
            guard=10,
            what="both workers reported",
        )
        keys_before, before, used_before = keys_memory()
        sender = fleet.spawn(
            "publish",
            count=count,
            value={"mode": "big", "size": size, "ms": 1000},
            reply_ttl=ttl,
        )
        assert await fleet.first_line(sender, "SENT ") == str(count)
        fleet.kill(sender)
        assert fleet.ledger.ends() == {}  # it died before any answer came

        def answers() -> list[str]:
            return [k.decode() for k in admin.scan_iter(f"{STREAM}:reply:*")]

        await until(lambda: bool(answers()), guard=20, what="a reply stream")
        [reply_key] = answers()

        def answered() -> int:
            # A worker writes a batch's answers to one publisher in one entry.
            entries = admin.xrange(reply_key)
            return sum(len(answers_of(fields)) for _, fields in entries)

        await until(lambda: answered() == count, guard=20, what="all answered")
        _, peak, used_peak = keys_memory()
        queued = answered()
        ttl_left = admin.pttl(reply_key) / 1000
        gone = await until(
            lambda: not admin.exists(reply_key), guard=ttl + 10, what="reply expired"
        )
        keys_after, after, used_after = keys_memory()
        stream_len, pending = settled(admin)
    report(
        "killed-publisher",
        answers_left=queued,
        ttl_left_s=ttl_left,
        reply_gone_after_s=round(gone, 2),
        keys_bytes_before=before,
        keys_bytes_peak=peak,
        keys_bytes_after=after,
        used_memory_before=used_before,
        used_memory_peak=used_peak,
        used_memory_after=used_after,
    )
    assert queued == count
    assert 0 < ttl_left <= ttl
    assert (stream_len, pending) == (0, 0)
    assert peak - before > count * size  # the answers were there...
    # ...and left with the reply stream: no key is left, and the keys take
    # what they took before, give or take a stream node's worth (4 kB).
    assert keys_after == keys_before
    assert abs(after - before) < 16_000


# -- 8. Soak ---------------------------------------------------------------------


async def test_soak_stream_memory_and_consumers_stay_flat(
    redis_server: RedisServer,  # noqa: F811
    fleet_dir: Path,
) -> None:
    """SOAK_EVENTS trivial events through two workers, sent in pipelined
    batches with a bounded window: the stream's length, Redis's memory and
    the group's consumers do not grow from the first quarter to the last."""
    window, batch = 2000, 500
    fleet = Fleet(
        fleet_dir,
        redis_server.url,
        stream=STREAM,
        visibility_timeout=5.0,
        max_consumers=16,
    )
    admin: Any = redis_server.client()
    # answered, XLEN, the keys' bytes, consumers in the group, keys,
    # used_memory (reported only: it counts the clients' buffers too)
    samples: list[tuple[int, int, int, int, int, int]] = []
    async with running(fleet):
        await fleet.start_many(2)
        async with publisher(redis_server.url, visibility_timeout=5.0) as sender:
            answered = 0
            outstanding: list[Any] = []
            started = time.monotonic()
            next_sample = 0
            for first in range(0, SOAK_EVENTS, batch):
                values = [
                    {"n": n} for n in range(first, min(first + batch, SOAK_EVENTS))
                ]
                outstanding.extend(await sender.send_many(values))
                while len(outstanding) > window - batch:
                    done, outstanding = outstanding[:batch], outstanding[batch:]
                    for event in done:
                        results = await event.wait(timeout=30)
                        assert results[0].ok(), results
                    answered += len(done)
                if answered >= next_sample:
                    next_sample += max(batch, SOAK_EVENTS // 100)
                    info = admin.xinfo_groups(STREAM)[0]
                    samples.append(
                        (
                            answered,
                            admin.xlen(STREAM),
                            keys_bytes(admin),
                            info["consumers"],
                            admin.dbsize(),
                            admin.info("memory")["used_memory"],
                        )
                    )
            for event in outstanding:
                assert (await event.wait(timeout=30))[0].ok()
            elapsed = time.monotonic() - started
        assert settled(admin) == (0, 0)
    quarter = len(samples) // 4
    first_q, last_q = samples[:quarter], samples[-quarter:]
    mem_first = statistics.median(s[2] for s in first_q)
    mem_last = statistics.median(s[2] for s in last_q)
    between = statistics.median(s[0] for s in last_q) - statistics.median(
        s[0] for s in first_q
    )
    growth_per_event = (mem_last - mem_first) / between
    report(
        "soak",
        events=SOAK_EVENTS,
        seconds=round(elapsed, 1),
        events_per_s=round(SOAK_EVENTS / elapsed),
        xlen_max_first=max(s[1] for s in first_q),
        xlen_max_last=max(s[1] for s in last_q),
        keys_bytes_median_first=mem_first,
        keys_bytes_median_last=mem_last,
        growth_bytes_per_event=round(growth_per_event, 3),
        used_memory_median_first=statistics.median(s[5] for s in first_q),
        used_memory_median_last=statistics.median(s[5] for s in last_q),
        consumers={s[3] for s in samples},
        keys={s[4] for s in samples},
    )
    # XLEN counts undelivered + pending entries: never more than the window.
    assert max(s[1] for s in samples) <= window
    # Memory: the smallest leak an event could cause (its work entry or its
    # reply entry left in a stream, a key left behind) costs 50 bytes or
    # more; what the keys take moves with the window (up to 2,000 entries
    # of about 100 bytes), under 1 byte per event between the quarters.
    assert growth_per_event < 4.0
    assert {s[3] for s in last_q} == {s[3] for s in first_q} == {2}
    assert max(s[4] for s in last_q) <= max(s[4] for s in first_q)


# -- 9. Bad input ----------------------------------------------------------------


async def test_malformed_entries_oversize_and_acl(
    redis_server: RedisServer,  # noqa: F811
    fleet_dir: Path,
) -> None:
    """Entries written by hand that no worker can read are dead-lettered
    with the reason; payloads over max_payload_bytes are refused at send and
    a result over it is answered with an Error saying so; a user without
    the right to add gets a clear error at send. The workers go on."""
    limit = 10_000
    fleet = Fleet(
        fleet_dir,
        redis_server.url,
        stream=STREAM,
        visibility_timeout=2.0,
        max_payload_bytes=limit,
    )
    admin: Any = redis_server.client()
    async with running(fleet):
        workers = await fleet.start_many(2)
        async with publisher(redis_server.url, max_payload_bytes=limit) as sender:
            # The group exists now; write what no publisher would.
            probe = f"{STREAM}:reply:probe"
            bad = {
                "no payload": {b"r": probe.encode(), b"c": b"json"},
                "garbage": {b"d": b"\xff\xfe\x00garbage", b"r": probe.encode()},
                "other codec": {b"d": b'{"v": 1}', b"c": b"msgpack"},
                "not a document": {b"d": b"[1, 2, 3]", b"c": b"json"},
                "bad routing": {b"d": b'{"v": 1, "m": "nowhere"}'},
            }
            ids = {
                name: admin.xadd(STREAM, fields).decode()
                for name, fields in bad.items()
            }
            await until(
                lambda: admin.xlen(f"{STREAM}:dead") == len(bad),
                guard=10,
                what="the bad entries dead-lettered",
            )
            dead = {
                f[b"dead:entry"].decode(): f for _, f in admin.xrange(f"{STREAM}:dead")
            }
            assert set(dead) == set(ids.values())
            for name, eid in ids.items():
                reason = dead[eid][b"dead:reason"].decode()
                assert "cannot be decoded" in reason, (name, reason)
            assert "msgpack" in dead[ids["other codec"]][b"dead:reason"].decode()
            probe_replies = admin.xrange(probe)
            assert len(probe_replies) == 2  # the two bad entries that named it

            # Too large, both ways.
            with pytest.raises(ValueError, match="max_payload_bytes"):
                await sender.send({"s": "x" * limit})
            with pytest.raises(ValueError, match="value 2"):
                await sender.send_many([{"n": 0}, {"n": 1}, {"s": "x" * limit}])
            big = await sender.send({"n": 0, "mode": "big", "size": limit * 2})
            answer = await big.wait(timeout=10)
            assert isinstance(answer[0], Error)
            assert "max_payload_bytes" in str(answer[0].err), answer

            # A user who may read but not add.
            url = redis_server.acl_user(
                "reader", "secret", [f"~{STREAM}*", "+@all", "-xadd", "-evalsha"]
            )
            async with publisher(url) as restricted:
                with pytest.raises(QueueClosed, match=r"no permissions.*xadd"):
                    await restricted.send({"n": 1})
                with pytest.raises(QueueClosed, match=r"no permissions.*xadd"):
                    await restricted.send({"n": 2})

            # No password that works, no rights at all: refused at once, by
            # the publisher and by a worker (which exits), not retried.
            wrong = url.replace(":secret@", ":wrong@")
            nobody = redis_server.acl_user("nobody", "secret", [])
            with pytest.raises(redis.AuthenticationError, match="password"):
                async with asyncio.timeout(10), publisher(wrong):
                    pass
            with pytest.raises(redis.ResponseError, match="no permissions"):
                async with asyncio.timeout(10), publisher(nobody):
                    pass
            for refused, why in ((wrong, "password"), (nobody, "no permissions")):
                worker = fleet.spawn("worker", url=refused)
                assert await fleet.wait_exit(worker, guard=20) != 0
                assert why in worker.log_text()

            # The workers went on.
            after = await pump(
                sender,
                lambda n: {"n": n, "mode": "sleep", "ms": 1},
                count=50,
                window=50,
                wait_timeout=10,
            )
            assert (after.ok, after.hung, after.errors) == (50, [], {})
            raised = await sender.send({"n": 7, "mode": "raise"})
            err = (await raised.wait(timeout=10))[0]
            assert isinstance(err, Error)
            assert isinstance(err.err, RemoteError)
            assert err.err.type == "ValueError"
        assert all(w.alive for w in workers)
        report("bad-input", dead_letters=len(dead), big_answer=answer[0])
