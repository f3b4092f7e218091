"""Tests of ``event-collector worker``: what it refuses, and a real worker
process on a real Redis, stopped by a signal."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import textwrap
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from event_collector import Ok
from event_collector.cli import main
from event_collector.redis import RedisTransport
from redis_server import RedisServer, redis_server  # noqa: F401

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

# The application module the worker runs in these tests. Its handler
# doubles a number; "hold" marks itself started in Redis and waits there
# until the test sets the release key, then answers its attempt number.
HANDLERS = textwrap.dedent(
    """
    import asyncio
    import os

    import redis.asyncio as aioredis

    from event_collector import Collector

    URL = os.environ["EC_TEST_REDIS"]


    async def work(payload, ctx):
        if payload.value != "hold":
            return payload.value * 2
        client = aioredis.Redis.from_url(URL)
        try:
            await client.set("test:started", payload.attempt)
            while not await client.exists("test:release"):
                await asyncio.sleep(0.02)
        finally:
            await client.aclose()
        return {"attempt": payload.attempt}


    collectors = [Collector("work", work)]
    """
)


# -- what the command refuses ----------------------------------------------------

TARGETS = textwrap.dedent(
    """
    from event_collector import Collector


    async def handle(payload, ctx):
        return payload.value


    class Echo(Collector):
        key = "echo"

        async def process(self, payload):
            return payload.value


    number = 3
    empty = []
    mixed = [Collector("a", handle), "not a collector"]
    one = Collector("one", handle)
    listed = [Echo]


    def factory_of_nothing():
        return 3


    async def async_factory():
        return [Echo]
    """
)


@pytest.fixture
def targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module of good and bad ATTRs, importable from the current folder;
    yields its name."""
    name = f"worker_targets_{os.getpid()}"
    (tmp_path / f"{name}.py").write_text(TARGETS)
    (tmp_path / f"{name}_broken.py").write_text("raise RuntimeError('broken app')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        yield name
    finally:
        for module in (name, f"{name}_broken"):
            sys.modules.pop(module, None)


NOWHERE = "redis://127.0.0.1:1/0"  # never connected to: refused before


@pytest.mark.parametrize(
    ("attr", "message"),
    [
        (None, "MODULE:ATTR must name a module and an attribute in it"),
        ("", "MODULE:ATTR must name a module and an attribute in it"),
        ("number", "is not a list of collectors"),
        ("missing", "has no attribute 'missing'"),
        ("empty", "does not name collectors: collectors must not be empty"),
        ("mixed", "must hold Collector instances or subclasses"),
        ("factory_of_nothing", "factory_of_nothing() returned int is not a list"),
    ],
)
def test_a_target_that_names_no_collectors_is_refused(
    attr: str | None,
    message: str,
    targets: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = targets if attr is None else f"{targets}:{attr}"
    status = main(["worker", target, "--redis", NOWHERE, "--stream", "s"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("event-collector worker: ")
    assert message in err
    assert "Traceback" not in err


def test_a_missing_module_is_refused(
    targets: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(
        ["worker", "no_such_app.handlers:c", "--redis", NOWHERE, "--stream", "s"]
    )
    err = capsys.readouterr().err
    assert status == 2
    assert "no module named 'no_such_app'" in err


def test_an_exception_in_the_application_module_propagates(targets: str) -> None:
    # The application's own error, with its traceback (exit status 1 when
    # run as a command), not a usage error.
    with pytest.raises(RuntimeError, match="broken app"):
        main(["worker", f"{targets}_broken:c", "--redis", NOWHERE, "--stream", "s"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--redis", "http://127.0.0.1/"], "--redis must be a redis://"),
        (["--redis", NOWHERE, "--max-consumers", "1", "--min-consumers", "2"], None),
        (["--redis", NOWHERE, "--visibility-timeout", "0"], None),
        (["--redis", NOWHERE, "--queue-type", "lifo"], None),
    ],
)
def test_bad_options_are_refused(
    options: list[str],
    message: str | None,
    targets: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["worker", f"{targets}:listed", "--stream", "s", *options]
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own refusals
        status = int(str(exc.code))
    err = capsys.readouterr().err
    assert status == 2
    if message is not None:
        assert message in err


def test_the_help_names_every_option(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # no line breaks in names
    with pytest.raises(SystemExit) as exit_:
        main(["worker", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in (
        "--redis URL",
        "--stream NAME",
        "--group",
        "--queue-type",
        "--min-consumers",
        "--max-consumers",
        "--consumer-shutdown-timeout",
        "--visibility-timeout",
        "--max-deliveries",
        "--prometheus-port",
        "SIGTERM",
    ):
        assert option in text


def test_the_help_gives_the_transports_defaults(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # no line breaks in names
    # The options the command leaves to the transport say its defaults.
    import inspect

    defaults = inspect.signature(RedisTransport).parameters
    with pytest.raises(SystemExit):
        main(["worker", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default: {defaults['group'].default})" in text
    assert f"(default: {defaults['visibility_timeout'].default:g})" in text
    assert f"(default: {defaults['max_deliveries'].default})" in text


# -- a real worker ----------------------------------------------------------------


class Worker:
    """``event-collector worker`` as a child process, its log lines read as
    they come."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._more = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            self.lines.append(ANSI.sub("", raw.decode(errors="replace")).rstrip())
            self._more.set()
        self._more.set()

    async def line(self, text: str, *, guard: float = 30.0) -> str:
        """The first log line holding ``text``; ``guard`` seconds fail the
        test."""
        return await self._first(lambda line: text in line, text, guard)

    async def event(self, name: str, *, guard: float = 30.0) -> str:
        """The first log line of the event ``name`` (not of one whose name
        only contains it); ``guard`` seconds fail the test."""
        pattern = re.compile(rf"\] {re.escape(name)}(\s\s|$)")
        return await self._first(lambda line: bool(pattern.search(line)), name, guard)

    async def _first(self, match: Any, text: str, guard: float) -> str:
        try:
            async with asyncio.timeout(guard):
                while True:
                    for line in self.lines:
                        if match(line):
                            return line
                    if self._reader.done():
                        break
                    self._more.clear()
                    await self._more.wait()
        except TimeoutError:
            pass
        pytest.fail(f"no log line with {text!r}; the log:\n" + self.log)

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    async def exit_status(self, *, guard: float = 30.0) -> int:
        try:
            async with asyncio.timeout(guard):
                status = await self.process.wait()
                await self._reader
        except TimeoutError:
            pytest.fail(f"the worker still runs after {guard} s; the log:\n{self.log}")
        return status


@contextlib.asynccontextmanager
async def worker(
    server: RedisServer, folder: Path, *options: str
) -> AsyncIterator[Worker]:
    """Run ``event-collector worker handlers:collectors`` on stream ``w`` of
    ``server``; kill it if the test left it running."""
    (folder / "handlers.py").write_text(HANDLERS)
    env = {**os.environ, "EC_TEST_REDIS": server.url}
    env.pop("FORCE_COLOR", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "event_collector",
        "worker",
        "handlers:collectors",
        "--redis",
        server.url,
        "--stream",
        "w",
        *options,
        cwd=folder,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    running = Worker(process)
    try:
        yield running
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        running._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running._reader


async def until(condition: Any, *, guard: float = 30.0) -> None:
    """Wait until ``condition()`` holds (it may block: it runs in a thread);
    ``guard`` seconds fail the test."""
    async with asyncio.timeout(guard):
        # Polled: the condition is a key another process sets in Redis.
        while not await asyncio.to_thread(condition):  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text: str = r.read().decode()
    return text


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_worker_answers_and_drains_on_a_signal(
    signum: signal.Signals,
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    client = redis_server.client()
    async with (
        worker(
            redis_server,
            tmp_path,
            "--max-consumers",
            "4",
            "--consumer-shutdown-timeout",
            "60",
            "--prometheus-port",
            "0",
        ) as running,
        RedisTransport(redis_server.url, stream="w").publisher() as publisher,
    ):
        ready = await running.event("worker ready")
        assert "stream=w" in ready
        assert "group=event-collector" in ready
        consumer = re.search(r"consumer=(\S+)", ready)
        assert consumer is not None
        assert consumer.group(1).split(":")[1] == str(running.process.pid)
        port = re.search(r"metrics_port=(\d+)", ready)
        assert port is not None

        events = [await publisher.send(n) for n in range(5)]
        answers = [await event.wait(timeout=30) for event in events]
        assert [list(a) for a in answers] == [[Ok(2 * n)] for n in range(5)]
        metrics = await asyncio.to_thread(scrape, int(port.group(1)))
        assert 'event_collector_events_processed_total{queue="w"} 5.0' in metrics

        held = await publisher.send("hold")
        await until(lambda: client.exists("test:started"))
        running.process.send_signal(signum)
        await running.event("worker shutting down")
        # The handler runs on after the signal: released, it answers.
        client.set("test:release", 1)
        answer = await held.wait(timeout=30)
        assert list(answer) == [Ok({"attempt": 1})]
        assert await running.exit_status() == 0
    assert "worker stopped" in running.log
    assert "Traceback" not in running.log
    assert client.xpending("w", "event-collector")["pending"] == 0
    assert client.xlen("w") == 0


@pytest.mark.slow
async def test_a_second_signal_hurries_the_shutdown(
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    client = redis_server.client()
    options = ("--visibility-timeout", "2", "--consumer-shutdown-timeout", "600")
    async with (
        worker(redis_server, tmp_path, *options) as first,
        RedisTransport(redis_server.url, stream="w").publisher() as publisher,
    ):
        await first.event("worker ready")
        held = await publisher.send("hold")
        await until(lambda: client.exists("test:started"))
        first.process.send_signal(signal.SIGTERM)
        await first.event("worker shutting down")
        first.process.send_signal(signal.SIGTERM)
        await first.line("worker shutting down now")
        # Well within the drain's 600 s: the running handler was cancelled.
        assert await first.exit_status(guard=60) == 0
        assert "Traceback" not in first.log
        # Not answered as cancelled: left in the group for another worker.
        assert client.xpending("w", "event-collector")["pending"] == 1
        assert not held.is_done()

        client.set("test:release", 1)
        async with worker(redis_server, tmp_path, *options) as second:
            await second.event("worker ready")
            answer = await held.wait(timeout=60)
            assert list(answer) == [Ok({"attempt": 2})]
            second.process.send_signal(signal.SIGINT)
            assert await second.exit_status() == 0


@pytest.mark.slow
async def test_a_signal_before_the_worker_is_ready_stops_it(tmp_path: Path) -> None:
    # Redis is not there: the worker waits for it, and a signal ends the wait.
    server = RedisServer(tmp_path / "redis-server")  # never started
    async with worker(server, tmp_path) as waiting:
        await waiting.line("redis not reachable; retrying")
        waiting.process.send_signal(signal.SIGTERM)
        assert await waiting.exit_status() == 0
    assert "worker stopped before it was ready" in waiting.log
    assert "worker ready" not in waiting.log
    assert "Traceback" not in waiting.log
