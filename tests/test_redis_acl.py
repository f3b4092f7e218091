"""The Redis transport under a least-privilege ACL: a worker, a publisher and
the fleet view that have only :func:`event_collector.redis.acl_rules` do
the whole flow, Redis refuses them nothing, and every command granted is
used; a user missing a command gets an error that names it instead of a
silent hang. The scaling-out guide shows the same rules."""

from __future__ import annotations

import asyncio
import gc
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from conftest import wait_for
from event_collector import (
    Collector,
    CollectorQueue,
    Context,
    Error,
    Ok,
    Payload,
    QueueClosed,
    RemoteError,
)
from event_collector.redis import RedisTransport, acl_rules
from event_collector.redis._acl import COMMANDS, Role
from redis_server import RedisServer, redis_server  # noqa: F401

STREAM = "orders"
GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guide" / "scaling-out.rst"

pytestmark = pytest.mark.slow


class ListLogger:
    """Keeps every log call, to look for the errors a worker reports."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def _log(self, level: str, event: str, *args: Any, **kw: Any) -> None:
        self.lines.append((level, event, kw))

    def debug(self, event: str, *args: Any, **kw: Any) -> None:
        self._log("debug", event, **kw)

    def info(self, event: str, *args: Any, **kw: Any) -> None:
        self._log("info", event, **kw)

    def warning(self, event: str, *args: Any, **kw: Any) -> None:
        self._log("warning", event, **kw)

    def error(self, event: str, *args: Any, **kw: Any) -> None:
        self._log("error", event, **kw)

    def errors(self) -> list[tuple[str, dict[str, Any]]]:
        return [(event, kw) for level, event, kw in self.lines if level == "error"]


class Admin:
    """The default user, looking at the server from outside; it counts the
    granted commands it sends itself, so that they are not taken for the
    transport's."""

    def __init__(self, server: RedisServer) -> None:
        self.client = server.client()
        self.used: Counter[str] = Counter()

    def length(self, key: str) -> int:
        """Entries in the stream ``key``, 0 if there is none."""
        if not self.client.exists(key):
            return 0
        return int(self.client.xinfo_stream(key)["length"])

    def pending(self, key: str) -> list[dict[str, Any]]:
        self.used["xpending"] += 1
        found: list[dict[str, Any]] = self.client.xpending_range(
            key, "event-collector", "-", "+", 100
        )
        return found

    def add(self, key: str, fields: dict[str, bytes]) -> None:
        self.used["xadd"] += 1
        self.client.xadd(key, fields)  # type: ignore[arg-type]

    def letters(self, key: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
        entries: Any = self.client.xrange(key)
        return list(entries)

    def calls(self) -> dict[str, int]:
        """Calls of each command since the server started, less the
        admin's own."""
        stats = self.client.info("commandstats")
        return {
            name.removeprefix("cmdstat_"): int(value["calls"]) - self.used[name[8:]]
            for name, value in stats.items()
        }

    def denials(self) -> list[dict[str, Any]]:
        """What the ACL refused: commands, keys. ``CLIENT SETINFO``, which
        redis-py sends on connecting to Redis 7.2 and later and whose
        refusal it ignores, is left out."""
        log: list[dict[str, Any]] = self.client.acl_log()
        return [e for e in log if e.get("object") != "client|setinfo"]


# -- the handlers --------------------------------------------------------------

held = asyncio.Event()
"""Set by ``work`` when it starts holding an event."""
seen: list[tuple[str, int]] = []
"""The (event id, attempt) of every delivery of a held event."""


async def work(payload: Payload[Any], ctx: Context) -> Any:
    value = payload.value
    if value == "hold":
        seen.append((payload.event_id, payload.attempt))
        if payload.attempt == 1:
            held.set()
            await asyncio.Event().wait()  # until the shutdown cancels it
        return f"done on attempt {payload.attempt}"
    if isinstance(value, int) and value < 0:
        raise ValueError(f"negative: {value}")
    return value * 2


def has_xackdel(server: RedisServer) -> bool:
    """Whether the server knows ``XACKDEL`` (Redis 8.2 and later)."""
    client: Any = server.client()
    return bool(client.execute_command("COMMAND INFO", "XACKDEL")[0])


def worker_queue(url: str, **options: Any) -> CollectorQueue:
    transport = RedisTransport(
        url, stream=STREAM, maxsize=3, visibility_timeout=1.0, **options
    )
    return CollectorQueue(
        [Collector("work", work)],
        transport=transport,
        consumer_shutdown_timeout=0.2,
        logging=False,
    )


async def test_least_privilege_users_run_the_whole_flow(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    # A server with XACKDEL (Redis 8.2 and later) gets the rules for it.
    xackdel = has_xackdel(redis_server)
    worker_url = redis_server.acl_user(
        "orders-worker", "w-secret", acl_rules(STREAM, xackdel=xackdel)
    )
    web_url = redis_server.acl_user(
        "orders-web", "p-secret", acl_rules(STREAM, role="publisher")
    )
    top_url = redis_server.acl_user(
        "orders-top", "t-secret", acl_rules(STREAM, role="viewer")
    )
    admin = Admin(redis_server)
    held.clear()
    seen.clear()
    web = RedisTransport(web_url, stream=STREAM, maxsize=3)
    async with asyncio.timeout(60), web.publisher() as publisher:
        # No worker yet: the publisher creates the group, and maxsize holds
        # the backlog at three entries.
        first = [await publisher.send(n) for n in (1, 2, 3)]
        fourth = asyncio.create_task(publisher.send(4))
        base = admin.calls().get("evalsha", 0)
        # The script has refused the fourth entry at least twice.
        await wait_for(lambda: admin.calls().get("evalsha", 0) >= base + 2)
        assert not fourth.done()
        assert admin.length(STREAM) == 3

        queue = worker_queue(worker_url)
        async with queue:
            transport = queue.transport
            assert isinstance(transport, RedisTransport)
            await fourth
            events = [*first, fourth.result()]
            answers = [await e.wait(timeout=10) for e in events]
            assert [a.first() for a in answers] == [Ok(2), Ok(4), Ok(6), Ok(8)]

            failed = await (await publisher.send(-1)).wait(timeout=10)
            match failed.first():
                case Error(RemoteError() as err):
                    assert err.type == "ValueError"
                    assert str(err) == "negative: -1"
                case other:
                    pytest.fail(f"not a RemoteError: {other!r}")

            # Something else wrote an entry the codec cannot read.
            admin.add(STREAM, {"d": b"{not json", "c": b"json"})
            await wait_for(lambda: admin.length(f"{STREAM}:dead") == 1)
            ((_, dead),) = admin.letters(f"{STREAM}:dead")
            assert dead[b"dead:reason"].startswith(b"the entry cannot be decoded")
            assert dead[b"d"] == b"{not json"

            # A handler that runs past visibility_timeout: its lease is
            # renewed (the entry's idle time falls back) by the heartbeat.
            hold = await publisher.send("hold")
            await held.wait()
            idle: list[int] = []

            def renewed() -> bool:
                (entry,) = admin.pending(STREAM)
                idle.append(int(entry["time_since_delivered"]))
                return len(idle) > 1 and idle[-1] < idle[-2]

            await wait_for(renewed, poll=0.05)
            assert max(idle) < 1000

            # The figures a worker reports for the fleet view.
            report = f"{STREAM}:worker:{transport.consumer}"
            await wait_for(lambda: admin.client.hget(report, "held") == b"1")
            assert admin.client.zscore(f"{STREAM}:workers", transport.consumer)
            # The fleet view, as a user that may only read.
            top = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "event_collector", "top", top_url),
                *("--stream", STREAM, "--once"),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            shown, _ = await top.communicate()
            assert top.returncode == 0, shown.decode(errors="replace")
            assert transport.consumer.encode() in shown
            # The sweep of long-gone consumers runs every 30 s at most
            # often; run it once here.
            worker = transport._worker
            assert worker is not None
            await worker._sweep_consumers(worker._client)
        # The graceful shutdown cancelled the held handler and handed its
        # event back to the group, unanswered.
        assert not hold.is_done()
        (pending,) = admin.pending(STREAM)
        assert pending["consumer"].decode() == transport.consumer

        # Another worker takes it, as its second delivery.
        async with worker_queue(worker_url):
            answer = await hold.wait(timeout=20)
        assert answer.first() == Ok("done on attempt 2")
        assert seen == [(hold.payload.event_id, 1), (hold.payload.event_id, 2)]
        assert admin.pending(STREAM) == []
    # Acknowledged entries are deleted; the reply stream went with its
    # publisher.
    assert admin.length(STREAM) == 0
    assert admin.client.keys(f"{STREAM}:reply:*") == []

    assert admin.denials() == []
    calls = admin.calls()
    granted = {c for commands in COMMANDS.values() for c in commands}
    if xackdel:
        granted.add("xackdel")
    unused = sorted(c for c in granted if calls.get(c, 0) <= 0)
    assert unused == [], "granted and never used"


async def test_a_publisher_missing_a_command_is_refused_by_name(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    rules = [r for r in acl_rules(STREAM, role="publisher") if r != "+xadd"]
    url = redis_server.acl_user("no-xadd", "secret", rules)
    async with (
        asyncio.timeout(20),
        RedisTransport(url, stream=STREAM).publisher() as publisher,
    ):
        # Refused inside the batch script, whose error names the command
        # and the key (Redis 7.0 and Redis 8 word the refusal differently).
        refused = r"XADD orders: .*(can.t run this command|no permissions to run)"
        with pytest.raises(QueueClosed, match=refused):
            await publisher.send(1)


# A start that Redis refuses leaves its connections to the garbage
# collector (they are not closed on that path): collected here, so that the
# warning does not land in another test.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_a_worker_missing_a_command_does_not_start(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    rules = [r for r in acl_rules(STREAM) if r != "+xgroup|create"]
    url = redis_server.acl_user("no-group", "secret", rules)
    queue = worker_queue(url)
    async with asyncio.timeout(20):
        with pytest.raises(
            redis.exceptions.NoPermissionError,
            match=re.escape("no permissions to run the 'xgroup|create' command"),
        ):
            await queue.__aenter__()
    assert not queue.is_running
    gc.collect()


async def test_a_worker_refused_its_fetch_says_so(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    rules = [r for r in acl_rules(STREAM) if r != "+xreadgroup"]
    url = redis_server.acl_user("no-fetch", "secret", rules)
    log = ListLogger()
    async with asyncio.timeout(20), worker_queue(url, logger=log):
        await wait_for(lambda: bool(log.errors()))
    event, fields = log.errors()[0]
    assert event == "redis refused the fetch"
    assert "no permissions to run the 'xreadgroup' command" in fields["error"]


# -- the rules themselves --------------------------------------------------------


def test_the_rules_cover_the_stream_and_its_keys_only() -> None:
    rules = acl_rules("shop*orders")
    assert rules[:2] == ["~shop\\*orders", "~shop\\*orders:*"]
    assert "+@all" not in rules
    assert all(r.startswith("+") and "@" not in r for r in rules[2:])
    for role, commands in COMMANDS.items():
        assert acl_rules("orders", role=role) == [  # type: ignore[arg-type]
            "~orders",
            "~orders:*",
            *(f"+{c}" for c in commands),
        ]
    assert set(COMMANDS["publisher"]) < set(COMMANDS["worker"])
    assert acl_rules("orders", dead_letter_stream="dead-orders")[:3] == [
        "~orders",
        "~orders:*",
        "~dead-orders",
    ]
    assert acl_rules("orders", dead_letter_stream="orders:graveyard")[2] == (
        "+xgroup|create"
    )
    # XACKDEL, for a server that has it, is a worker's command alone.
    assert acl_rules("orders", xackdel=True) == [*acl_rules("orders"), "+xackdel"]
    others: tuple[Role, ...] = ("publisher", "viewer")
    for role in others:
        assert acl_rules("orders", role=role, xackdel=True) == acl_rules(
            "orders", role=role
        )
    with pytest.raises(ValueError, match="stream"):
        acl_rules("")
    with pytest.raises(ValueError, match="role must be one of"):
        acl_rules("orders", role="admin")  # type: ignore[arg-type]


def test_the_guide_shows_the_rules_the_code_needs() -> None:
    text = GUIDE.read_text()
    shown = {
        found[1]: found[2].split()
        for found in re.finditer(r"ACL SETUSER (\S+) reset on >\S+ (.+)", text)
    }
    assert shown == {
        "orders-worker": acl_rules("orders"),
        "orders-web": acl_rules("orders", role="publisher"),
        "orders-top": acl_rules("orders", role="viewer"),
    }
