"""Worker processes and their ledger, for the Redis fault tests.

:class:`Fleet` starts worker processes (``tests/redis_worker_app.py``) on a
test's Redis server, waits for each to say it is ready, kills them with
SIGKILL or stops them with SIGTERM. Every worker dies with the test process
(``PR_SET_PDEATHSIG``) and :meth:`Fleet.close` kills what is left, so no
test leaves one behind.

:class:`Ledger` reads what the workers' handlers wrote: one line per
handler call as it starts and one as it ends, kept across SIGKILLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from redis_server import _die_with_parent

APP = Path(__file__).with_name("redis_worker_app.py")
SRC = Path(__file__).resolve().parent.parent / "src"
READY_GUARD = 30.0
"""Seconds a worker may take to start (imports and connecting) before the
test fails: a guard, far above the second it takes."""


@dataclasses.dataclass(frozen=True, slots=True)
class Call:
    """One line of the ledger."""

    event_id: str
    attempt: int
    collector: str
    pid: int
    phase: str  # "start" or "end"
    at: float  # time.time()


class Ledger:
    """The file the handlers of every worker process append to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    def calls(self) -> list[Call]:
        calls = []
        for line in self.path.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) != 6:  # not possible with one write per line
                raise AssertionError(f"torn ledger line: {line!r}")
            eid, attempt, collector, pid, phase, at = parts
            calls.append(Call(eid, int(attempt), collector, int(pid), phase, float(at)))
        return calls

    def by_event(self) -> dict[str, list[Call]]:
        events: dict[str, list[Call]] = defaultdict(list)
        for call in self.calls():
            events[call.event_id].append(call)
        return events

    def ends(self) -> dict[str, int]:
        """Completed handler calls per event."""
        counts: dict[str, int] = defaultdict(int)
        for call in self.calls():
            if call.phase == "end":
                counts[call.event_id] += 1
        return counts


class WorkerProcess:
    """One worker process of a :class:`Fleet`."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process = process
        self.log = log
        self.consumer = ""
        """Its name in the consumer group, once it is ready."""

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def __repr__(self) -> str:
        state = "alive" if self.alive else f"exited {self.process.returncode}"
        return f"<WorkerProcess pid={self.pid} {self.consumer} {state}>"


class Fleet:
    """Worker processes sharing one stream, and the ledger they write."""

    def __init__(self, directory: Path, url: str, **options: Any) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(directory / "ledger.tsv")
        self.options: dict[str, Any] = {
            "url": url,
            "ledger": str(self.ledger.path),
            **options,
        }
        self.workers: list[WorkerProcess] = []
        """Every worker started, dead or alive, in order."""

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(SRC), str(APP.parent), env.get("PYTHONPATH", "")]
        )
        env.pop("PYTHONASYNCIODEBUG", None)  # a worker is not a test
        return env

    def spawn(self, role: str, **overrides: Any) -> WorkerProcess:
        """Start a process of ``role`` (``worker`` or ``publish``) without
        waiting for it."""
        options = {**self.options, **overrides}
        log = self.directory / f"{role}-{len(self.workers)}.log"
        with open(log, "ab") as err:
            process = subprocess.Popen(
                [sys.executable, str(APP), role, json.dumps(options)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                env=self._env(),
                preexec_fn=_die_with_parent(),
            )
        worker = WorkerProcess(process, log)
        self.workers.append(worker)
        return worker

    async def first_line(self, worker: WorkerProcess, prefix: str) -> str:
        """The first line ``worker`` prints, which must start with ``prefix``;
        fails the test if it exits or says nothing for READY_GUARD seconds."""
        stdout = worker.process.stdout
        assert stdout is not None
        try:
            async with asyncio.timeout(READY_GUARD):
                line = (await asyncio.to_thread(stdout.readline)).decode()
        except TimeoutError:
            worker.process.kill()
            raise AssertionError(
                f"{worker} said nothing in {READY_GUARD} s\n{worker.log_text()}"
            ) from None
        if not line.startswith(prefix):
            raise AssertionError(
                f"{worker} printed {line!r}, not {prefix}...\n{worker.log_text()}"
            )
        return line[len(prefix) :].strip()

    async def start(self, **overrides: Any) -> WorkerProcess:
        """Start a worker and wait until it takes events."""
        worker = self.spawn("worker", **overrides)
        worker.consumer = await self.first_line(worker, "READY ")
        return worker

    async def start_many(self, count: int, **overrides: Any) -> list[WorkerProcess]:
        workers = [self.spawn("worker", **overrides) for _ in range(count)]
        names = await asyncio.gather(*(self.first_line(w, "READY ") for w in workers))
        for worker, name in zip(workers, names, strict=True):
            worker.consumer = name
        return workers

    def alive(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.alive]

    def kill(self, worker: WorkerProcess) -> float:
        """SIGKILL ``worker``, wait until it is gone; return when it was killed
        (``time.time()``)."""
        at = time.time()
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait(timeout=10)
        return at

    async def terminate(self, worker: WorkerProcess, guard: float = 30.0) -> int:
        """SIGTERM ``worker`` and wait for its exit code."""
        worker.process.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(worker.process.wait, guard)

    async def wait_exit(self, worker: WorkerProcess, guard: float) -> int:
        return await asyncio.to_thread(worker.process.wait, guard)

    def close(self) -> None:
        """Kill every worker still running."""
        for worker in self.workers:
            if worker.alive:
                with contextlib.suppress(OSError):
                    worker.process.kill()
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                worker.process.wait(timeout=10)
            if worker.process.stdout is not None:
                worker.process.stdout.close()

    def logs(self) -> str:
        """Every process's log, for a failure message."""
        return "\n".join(
            f"--- {w.log.name} (pid {w.pid}) ---\n{w.log_text()[-4000:]}"
            for w in self.workers
        )

    def __iter__(self) -> Iterator[WorkerProcess]:
        return iter(self.workers)


def pending_of(client: Any, stream: str, group: str, consumer: str) -> list[str]:
    """The entry ids the group's pending list holds under ``consumer``."""
    rows = client.xpending_range(stream, group, "-", "+", 10_000, consumername=consumer)
    return [row["message_id"].decode() for row in rows]
