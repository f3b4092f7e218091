"""Starting the processes of one measurement, reading their protocol
lines with a deadline, and stopping them."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = ["Interpreter", "MeasurementFailed", "Process", "measure_with"]

ROOT = Path(__file__).resolve().parents[2]
"""The checkout: the directory that holds ``benchmarks/`` and ``src/``."""

_READY_SECONDS = 60.0


class MeasurementFailed(RuntimeError):
    """A process of a measurement failed, or did not answer in time."""


@dataclasses.dataclass(frozen=True, slots=True)
class Interpreter:
    """The Python a side runs on, and the directories it imports from
    (besides its own environment's)."""

    python: str
    path: tuple[Path, ...] = (ROOT,)

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        extra = [str(p) for p in self.path]
        if env.get("PYTHONPATH"):
            extra.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(extra)
        return env


class Process:
    """One child process: its protocol lines on a pipe, its standard error
    in a temporary file (shown when it fails)."""

    def __init__(
        self, interpreter: Interpreter, args: Sequence[str], name: str
    ) -> None:
        self.name = name
        # Closed by stop(), which every Process gets (see _started).
        self._errors: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self._popen = subprocess.Popen(
            [interpreter.python, "-m", "benchmarks.redis_bench", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._errors,
            env=interpreter.environment(),
            cwd=ROOT,
        )
        self._buffer = b""

    def read_line(self, deadline: float, watch: Sequence[Process] = ()) -> str:
        """The next line the process says.

        :raises MeasurementFailed: it exited, one of ``watch`` exited, or it
            said nothing by ``deadline`` (``time.monotonic``).
        """
        stdout = self._popen.stdout
        assert stdout is not None
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise MeasurementFailed(
                    f"{self.name}: no answer in time{self.errors()}"
                )
            readable, _, _ = select.select([stdout], [], [], min(left, 0.5))
            for other in watch:
                if not other.running():
                    raise MeasurementFailed(f"{other.name} died{other.errors()}")
            if readable:
                chunk = os.read(stdout.fileno(), 65536)
                if not chunk:
                    self._popen.wait()
                    raise MeasurementFailed(
                        f"{self.name} exited with {self._popen.returncode}"
                        f"{self.errors()}"
                    )
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def expect(self, word: str, deadline: float, watch: Sequence[Process] = ()) -> str:
        """The rest of the next line, which must start with ``word``."""
        line = self.read_line(deadline, watch)
        head, _, rest = line.partition(" ")
        if head != word:
            raise MeasurementFailed(f"{self.name} said {line!r}, not {word!r}")
        return rest

    def say(self, line: str) -> None:
        stdin = self._popen.stdin
        assert stdin is not None
        stdin.write(line.encode() + b"\n")
        stdin.flush()

    def running(self) -> bool:
        return self._popen.poll() is None

    def errors(self, tail: int = 3000) -> str:
        """The end of what the process wrote to standard error, if anything."""
        self._errors.seek(0)
        text = self._errors.read().decode(errors="replace").strip()
        return f"; its stderr ends:\n{text[-tail:]}" if text else ""

    def stop(self) -> None:
        """Kill the process (``SIGKILL``): the measurement is over, and how
        a side shuts down is not part of it (the round's server is flushed
        before the next one)."""
        if self._popen.poll() is None:
            self._popen.kill()
        self._popen.wait()
        for pipe in (self._popen.stdin, self._popen.stdout):
            if pipe is not None:
                pipe.close()
        self._errors.close()


@contextlib.contextmanager
def _started(processes: list[Process]) -> Iterator[list[Process]]:
    try:
        yield processes
    finally:
        for process in processes:
            process.stop()


def measure_with(
    interpreter: Interpreter,
    side: str,
    *,
    url: str,
    stream: str,
    loop: str,
    workers: int,
    publisher_args: Sequence[str],
    time_limit: float,
) -> dict[str, Any]:
    """Start ``workers`` worker processes of ``side`` and its publisher; once
    all are ready, let the publisher measure; return its result (the JSON
    of a :class:`~benchmarks.redis_bench._drive.Run`); stop them all."""
    common = ["--url", url, "--stream", stream, "--loop", loop]
    processes = [
        Process(
            interpreter,
            [side, "worker", *common, "--consumer", f"w{k}"],
            f"{side} worker {k}",
        )
        for k in range(workers)
    ]
    processes.append(
        Process(
            interpreter,
            [
                side,
                "publisher",
                *common,
                "--time-limit",
                str(time_limit),
                *publisher_args,
            ],
            f"{side} publisher",
        )
    )
    with _started(processes):
        deadline = time.monotonic() + _READY_SECONDS
        for process in processes:
            process.expect("ready", deadline)
        publisher = processes[-1]
        publisher.say("go")
        serving = processes[:-1]
        result = publisher.expect(
            "result", time.monotonic() + time_limit + 10, watch=serving
        )
        answer: dict[str, Any] = json.loads(result)
        return answer
