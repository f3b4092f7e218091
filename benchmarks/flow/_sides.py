"""The two sides of the ``flow`` target's first part: the code before flow
control, taken from git, and this checkout, each run by
``benchmarks/_child.py`` in a process of its own, the two processes' runs
alternated."""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = [
    "BASE_REF",
    "ROOT",
    "Side",
    "SideFailed",
    "alternate",
    "base_source",
]

ROOT = Path(__file__).resolve().parents[2]
"""The checkout: the directory that holds ``benchmarks/`` and ``src/``."""

BASE_REF = "18a27f1"
"""The last commit before flow control."""

CHILD = Path(__file__).parents[1] / "_child.py"

_extracted: dict[str, Path | None] = {}


class SideFailed(RuntimeError):
    """A child process failed, or imported the wrong ``event_collector``."""


def base_source(ref: str = BASE_REF) -> Path | None:
    """The ``src/`` directory of ``ref``, extracted once per process into a
    temporary directory (removed at exit); ``None`` when this clone does
    not have ``ref`` (a shallow clone) or git is missing."""
    if ref in _extracted:
        return _extracted[ref]
    source: Path | None = None
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", ref, "src"],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        archive = b""
    if archive:
        folder = Path(tempfile.mkdtemp(prefix="ec-flow-base-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            if hasattr(tarfile, "data_filter"):  # 3.11.4 and later
                tar.extractall(folder, filter="data")
            else:  # pragma: no cover
                tar.extractall(folder)  # this repository's own archive
        source = folder / "src"
    _extracted[ref] = source
    return source


class Side:
    """A ``benchmarks/_child.py`` process (or ``child``, given ``args`` too) importing
    ``event_collector`` from ``source`` (a ``src/`` directory), ready to
    measure runs of ``events`` events on ``loop``.

    :raises SideFailed: it failed to start, or imported ``event_collector``
        from somewhere else.
    """

    def __init__(
        self,
        source: Path,
        events: int,
        loop: str,
        *,
        child: Path = CHILD,
        args: Sequence[str] = (),
    ) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(source), *filter(None, [env.get("PYTHONPATH")])]
        )
        self.source = source
        # Closed by close(), which every Side gets (see alternate).
        self._errors: IO[str] = tempfile.TemporaryFile("w+")  # noqa: SIM115
        self._popen = subprocess.Popen(
            [
                sys.executable,
                str(child),
                "--events",
                str(events),
                "--loop",
                loop,
                *args,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._errors,
            env=env,
            text=True,
        )

    def ready(self) -> None:
        """Wait for the warm-up run; check what the child imported."""
        module = Path(self._read()["module"]).resolve()
        if not module.is_relative_to(self.source.resolve()):
            raise SideFailed(f"{self.source}: the child imported {module}")

    def run(self) -> dict[str, float]:
        """Measure one run: events per second of wall and of CPU time."""
        stdin = self._popen.stdin
        assert stdin is not None
        stdin.write("run\n")
        stdin.flush()
        return self._read()

    def _read(self) -> dict[str, Any]:
        stdout = self._popen.stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            self._popen.wait(timeout=60)
            self._errors.seek(0)
            raise SideFailed(
                f"{self.source}: exit status {self._popen.returncode}\n"
                + self._errors.read()
            )
        figures: dict[str, Any] = json.loads(line)
        return figures

    def close(self) -> None:
        """End the child (its stdin closes) and wait for it."""
        with contextlib.suppress(OSError):
            if self._popen.stdin is not None:
                self._popen.stdin.close()
        try:
            self._popen.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._popen.kill()
            self._popen.wait()
        if self._popen.stdout is not None:
            self._popen.stdout.close()
        self._errors.close()


@contextlib.contextmanager
def _sides(*sources: Path, events: int, loop: str) -> Iterator[list[Side]]:
    started: list[Side] = []
    try:
        for source in sources:
            started.append(Side(source, events, loop))
        for side in started:
            side.ready()
        yield started
    finally:
        for side in started:
            side.close()


def alternate(
    base: Path,
    checkout: Path,
    *,
    events: int,
    pairs: int,
    loop: str,
    checkout_first: bool,
) -> dict[str, float]:
    """``pairs`` pairs of runs, one of each side, the order of the two
    swapped from one pair to the next (the checkout first in the first
    pair if ``checkout_first``). Returns each side's median rate and the
    median of the pairs' ratios (checkout over base), of wall and of CPU
    time."""
    rates: dict[str, list[float]] = {"base": [], "head": []}
    cpu: dict[str, list[float]] = {"base": [], "head": []}
    with _sides(base, checkout, events=events, loop=loop) as (old, new):
        for index in range(pairs):
            order = [("base", old), ("head", new)]
            if checkout_first != (index % 2 == 1):
                order.reverse()
            for name, side in order:
                figures = side.run()
                rates[name].append(figures["events_per_s"])
                cpu[name].append(figures["cpu_events_per_s"])

    def ratios(values: dict[str, list[float]]) -> float:
        pairs_ = zip(values["head"], values["base"], strict=True)
        return statistics.median(h / b for h, b in pairs_)

    return {
        "base_events_per_s": statistics.median(rates["base"]),
        "head_events_per_s": statistics.median(rates["head"]),
        "unused_ratio": ratios(rates),
        "unused_cpu_ratio": ratios(cpu),
    }
