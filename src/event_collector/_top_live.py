"""The redrawing loop both ``event-collector top`` views share: a frame
read in a thread, drawn in place with rich's ``Live``, until Ctrl-C or
SIGTERM, which end it between two frames with no traceback."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

__all__ = ["Interrupts", "watch"]

T = TypeVar("T")

_TICK = 0.05
"""Seconds between two looks at the quit flag while waiting."""


class Interrupts:
    """While in its ``with`` block, SIGINT and SIGTERM set :attr:`quit`
    instead of raising ``KeyboardInterrupt`` or ending the process.

    The handler only sets a flag (no lock, so it cannot deadlock the thread
    it interrupts); the waits below look at it every few tens of ms.
    """

    __slots__ = ("_previous", "quit")

    def __init__(self) -> None:
        self.quit = False
        """Whether a signal asked to quit."""
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.quit = True

    def __enter__(self) -> Interrupts:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def call(self, function: Callable[[], T]) -> tuple[bool, T | None]:
        """Run ``function()`` in a thread of its own and wait for it, unless
        a signal comes first: a read that hangs (an endpoint that accepts
        the connection and never answers) does not hold up Ctrl-C.

        :returns: ``(True, its result)``, or ``(False, None)`` if a signal
            came first (the thread is a daemon, left to end on its own).
        :raises: what ``function`` raised.
        """
        done = threading.Event()
        outcome: list[tuple[T | None, BaseException | None]] = []

        def run() -> None:
            try:
                outcome.append((function(), None))
            except BaseException as exc:  # handed to the waiting thread
                outcome.append((None, exc))
            finally:
                done.set()

        threading.Thread(target=run, name="event-collector-top", daemon=True).start()
        while not done.wait(_TICK):
            if self.quit:
                return False, None
        if self.quit:
            return False, None
        value, error = outcome[0]
        if error is not None:
            raise error
        return True, value

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or less if a signal comes."""
        deadline = time.monotonic() + seconds
        while not self.quit:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, _TICK))


def watch(
    console: Console,
    frame: Callable[[], RenderableType],
    interval: float,
    interrupts: Interrupts,
    *,
    first: RenderableType | None = None,
) -> None:
    """Draw ``frame()`` in place on ``console`` every ``interval`` seconds
    until ``interrupts`` asks to quit; ``frame`` must draw its own errors
    rather than raise them.

    :param first: a frame already read, drawn before the first call.
    """
    from rich.live import Live

    with Live(console=console, auto_refresh=False, transient=False) as live:
        next_read = time.monotonic()
        if first is not None:
            live.update(first, refresh=True)
            next_read += interval
            interrupts.sleep(interval)
        while not interrupts.quit:
            ok, view = interrupts.call(frame)
            if not ok or view is None:
                break
            live.update(view, refresh=True)
            # A read starts every interval however long the last one took;
            # one that took longer is followed at once by the next.
            next_read = max(next_read + interval, time.monotonic())
            interrupts.sleep(next_read - time.monotonic())
