"""The shutdown recipes of the docs (``docs/guide/shutdown.rst``), run for real.

Each program runs in a subprocess and gets a real signal. The tests order
themselves on what the programs print (and, under uvicorn, on what the
server answers), never on sleeps; ``GUARD`` bounds every wait and fails the
test when it runs out.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

GUARD = 60.0
"""Seconds a whole test may take; a test that needs them has hung."""

pytestmark = pytest.mark.slow


@asynccontextmanager
async def running(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run ``python *args`` from the repository root; kill it if the test
    leaves while it still runs."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(GUARD):
            yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()


async def read_line(stream: asyncio.StreamReader | None) -> str:
    assert stream is not None
    line = await stream.readline()
    if not line:
        pytest.fail("the program closed its output early")
    return line.decode()


async def read_until(
    stream: asyncio.StreamReader | None, pattern: str
) -> re.Match[str]:
    """Read lines until one matches ``pattern``; return the match."""
    while True:
        found = re.search(pattern, await read_line(stream))
        if found:
            return found


@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"]
)
async def test_producer_loop_stops_on_a_signal_with_every_event_answered(
    signum: signal.Signals,
) -> None:
    async with running(str(EXAMPLES / "producer_loop.py")) as proc:
        assert (await read_line(proc.stdout)).startswith("running as process")
        # Some answers first, so that events were sent, and more are in
        # flight (the handler is slower than the sender), when it arrives.
        before = [await read_line(proc.stdout) for _ in range(5)]
        proc.send_signal(signum)
        rest, err = await proc.communicate()

    assert proc.returncode == 0, err.decode()
    assert err == b""  # no traceback, nothing else either
    *answers, last = before + rest.decode().splitlines()
    stopped = re.fullmatch(r"stopped after sending (\d+) events", last)
    assert stopped, last
    sent = int(stopped[1])
    assert sent >= 5
    # Every event sent before the signal has its answer, each one once.
    pairs = sorted(tuple(map(int, a.split(" -> "))) for a in answers)
    assert pairs == [(n, 2 * n) for n in range(sent)]


async def test_uvicorn_finishes_requests_then_the_lifespan_drains_the_queue() -> None:
    """``examples/starlette_app.py`` under uvicorn, stopped with SIGTERM."""
    assert importlib.util.find_spec("uvicorn"), "uvicorn comes with the test extra"
    args = ["-m", "uvicorn", "--app-dir", "examples", "starlette_app:app"]
    async with running(*args, "--host", "127.0.0.1", "--port", "0") as proc:
        # Port 0: the system picks a free port, and uvicorn says which.
        ready = await read_until(proc.stderr, r"running on http://127\.0\.0\.1:(\d+)")
        port = int(ready[1])
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base) as client:
            first = await client.post("/events", json={"order": 1})
        assert first.status_code == 200
        assert first.json()["results"]["count"] == {"ok": True, "value": 1}

        # A request in flight: its headers are in, and the 100 Continue
        # says the application is waiting for the body.
        body = json.dumps({"order": 2, "items": 3}).encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(body)
        )
        await writer.drain()
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100 ")

        proc.send_signal(signal.SIGTERM)
        # The server has stopped listening and waits for the request...
        await read_until(proc.stderr, "Waiting for connections to close")
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        # ... which the queue, still running, answers in full.
        writer.write(body)
        await writer.drain()
        response = await reader.read()  # the server closes it after answering
        writer.close()
        await writer.wait_closed()
        out, err = await proc.communicate()

    head, _, payload = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), response
    assert json.loads(payload) == {
        "results": {
            "store": {"ok": True, "value": {"stored": {"order": 2, "items": 3}}},
            "count": {"ok": True, "value": 2},
        }
    }
    # After a graceful stop uvicorn raises the signal again, so that its
    # parent sees a process that SIGTERM ended; older versions exit with 0.
    assert proc.returncode in (0, -signal.SIGTERM), err.decode()
    log = out.decode() + err.decode()
    assert "Traceback" not in log
    assert "Application shutdown complete" in err.decode()
    # The lifespan's exit shut the queue down (the app's structlog lines).
    assert "collector queue shut down" in out.decode()
