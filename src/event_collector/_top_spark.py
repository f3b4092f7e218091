"""Sparklines for ``event-collector top``: the recent history of one figure
(:class:`Series`) and its drawing in unicode blocks (:func:`sparkline`)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

__all__ = ["BLOCKS", "Series", "sparkline"]

BLOCKS = "▁▂▃▄▅▆▇█"
"""The eight heights of a sparkline, lowest first: the lowest is zero."""


def sparkline(values: Iterable[float | None], *, top: float | None = None) -> str:
    """``values`` as one block each: ``▁`` for zero (or less), and the seven
    higher blocks for seven equal bands of ``(0, top]`` (``(0, top/7]`` is
    ``▂``, ``(6 top/7, top]`` is ``█``); a space for ``None`` (no sample)
    or a value that is not finite.

    :param top: the value of the highest block (a value above it gets the
        highest block too); the largest of ``values`` by default.
    """
    points = list(values)
    if top is None:
        top = max(
            (v for v in points if v is not None and math.isfinite(v)), default=0.0
        )
    bands = len(BLOCKS) - 1
    out = []
    for value in points:
        if value is None or not math.isfinite(value):
            out.append(" ")
        elif value <= 0 or top <= 0:
            out.append(BLOCKS[0])
        else:
            # Rounded first, so that 3 of 7 is the third band, not the
            # fourth by a rounding error; any activity stands above zero.
            band = math.ceil(round(value * bands / top, 9))
            out.append(BLOCKS[max(1, min(bands, band))])
    return "".join(out)


class Series:
    """The samples of one figure over the last ``window`` seconds, drawn as
    ``width`` blocks of ``window / width`` seconds each.

    The blocks are aligned on multiples of their length on the clock that
    stamps the samples, so that a block keeps its place from one frame to
    the next and only the newest one, on the right, is still filling.

    :param window: seconds of history kept and drawn.
    :param width: blocks in a sparkline.
    """

    __slots__ = ("_samples", "step", "width", "window")

    def __init__(self, window: float, width: int) -> None:
        if not (window > 0 and math.isfinite(window)):
            raise ValueError(
                f"window must be a positive number (got window={window!r})"
            )
        if width < 1:
            raise ValueError(f"width must be >= 1 (got width={width!r})")
        self.window = window
        """Seconds of history kept."""
        self.width = width
        """Blocks in a sparkline."""
        self.step = window / width
        """Seconds each block covers."""
        self._samples: deque[tuple[float, float]] = deque()

    def _first_block(self, now: float) -> int:
        return math.floor(now / self.step) - self.width + 1

    def add(self, at: float, value: float) -> None:
        """Record ``value`` sampled at ``at`` (seconds on the caller's clock,
        never earlier than the sample before), and forget the samples that
        no longer fall in a block."""
        self._samples.append((at, value))
        start = self._first_block(at) * self.step
        while self._samples and self._samples[0][0] < start:
            self._samples.popleft()

    def values(self) -> list[float]:
        """The samples kept, oldest first."""
        return [value for _, value in self._samples]

    def peak(self) -> float | None:
        """The largest sample kept, or ``None`` if there is none."""
        return max(self.values(), default=None)

    def blocks(self, now: float) -> list[float | None]:
        """The mean of the samples in each block, oldest first, the last
        block holding ``now``; ``None`` for a block without a sample."""
        first = self._first_block(now)
        sums = [0.0] * self.width
        counts = [0] * self.width
        for at, value in self._samples:
            index = math.floor(at / self.step) - first
            if 0 <= index < self.width:
                sums[index] += value
                counts[index] += 1
        return [s / c if c else None for s, c in zip(sums, counts, strict=True)]

    def sparkline(self, now: float) -> str:
        """:meth:`blocks` drawn by :func:`sparkline`, scaled to
        :meth:`peak`: the highest block stands for the largest sample, so a
        block reaches it only if every sample in it was that large."""
        return sparkline(self.blocks(now), top=self.peak())

    def __repr__(self) -> str:
        return (
            f"<Series window={self.window:g}s width={self.width} "
            f"samples={len(self._samples)}>"
        )
