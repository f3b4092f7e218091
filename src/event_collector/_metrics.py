"""Clock-injected measurement primitives used by the collector queue.

Everything here is pure bookkeeping: no task, no timer, no I/O.  Time is always
read from an injected monotonic clock (in seconds), or passed explicitly, so the
queue can drive these objects from its event loop and tests can drive them from a
fake clock.  Updates on the per-event hot path are O(1).
"""

import math
from bisect import bisect_right
from collections import deque
from collections.abc import Callable

__all__ = ["Clock", "LoadAverage", "RateMeter", "ServiceWindow"]

Clock = Callable[[], float]
"""A monotonic clock returning seconds, such as ``loop.time`` or ``time.monotonic``."""

# Checkpoint spacing is compared against the resolution with this relative slack,
# so a monitor ticking at exactly the resolution is not halved by float jitter.
_RESOLUTION_SLACK = 1e-6

# Compacting the checkpoint lists only once the dead prefix is both sizeable and
# at least half of the list keeps the cost amortised O(1) per checkpoint.
_COMPACT_MIN = 64

# LoadAverage keeps one segment per grid cell of ``window / _LOAD_BUCKETS``.
_LOAD_BUCKETS = 256


def _check_positive(name: str, value: float) -> None:
    # ``not value > 0`` also rejects NaN, which would otherwise poison every mean.
    if not value > 0 or math.isinf(value):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


class ServiceWindow:
    """Mean of the last ``size`` samples (typically service times in seconds).

    Adding a sample is a bare ``deque.append`` on a deque bounded to ``size``
    (the oldest sample falls out by itself): the consumers call it once per
    event for each window, so it is the C method itself, with no Python
    frame around it. The mean is computed when asked for, exactly
    (:func:`math.fsum`), in O(size), by the monitor and the reporter; no
    running sum can drift.

    :param size: number of most recent samples averaged; must be at least 1.
    :raises ValueError: if ``size`` is smaller than 1.
    """

    __slots__ = ("_buf", "_size", "add")

    add: Callable[[float], None]
    """Record one sample (seconds, say), evicting the oldest once full."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size!r}")
        self._size = size
        self._buf: deque[float] = deque(maxlen=size)
        self.add = self._buf.append

    @property
    def size(self) -> int:
        """Capacity of the window, in samples."""
        return self._size

    def mean(self) -> float:
        """Arithmetic mean of the retained samples (same unit as the samples).

        :returns: the mean, or ``0.0`` when no sample has been added.
        """
        buf = self._buf
        return math.fsum(buf) / len(buf) if buf else 0.0

    def __len__(self) -> int:
        """Number of samples currently retained (at most :attr:`size`)."""
        return len(self._buf)

    def __repr__(self) -> str:
        return f"ServiceWindow(size={self._size}, len={len(self)}, mean={self.mean()})"


class RateMeter:
    """Events per second over a sliding time window, fed by a plain counter.

    The counter is ``meter.count``: incremented by its user, or set from a
    counter kept elsewhere (the queue copies its arrival and departure counts
    into it before sampling). A periodic caller (the queue's monitor) invokes
    :meth:`sample`, which stores a ``(time, count)`` checkpoint
    at most once per ``resolution`` seconds; :meth:`rate` then divides the count
    increase since the window start by the time covered.

    Between two checkpoints the counter's history is unknown, so events counted
    in between are attributed to the later checkpoint (the counter is treated as
    a step function that changes only at checkpoints).  On a steady load the
    result is therefore exact to within one ``resolution`` bucket of events,
    provided :meth:`sample` is called at least once per ``resolution``.

    The time arguments must be non-decreasing across calls, like the clock.

    :param window: length of the sliding window, in seconds (> 0).
    :param clock: monotonic clock in seconds, read when ``now`` is omitted.
    :param resolution: minimum spacing of checkpoints, in seconds (> 0);
        defaults to ``window / 200``.
    :raises ValueError: if ``window`` or ``resolution`` is not positive.
    """

    __slots__ = (
        "_clock",
        "_counts",
        "_head",
        "_min_gap",
        "_resolution",
        "_times",
        "_window",
        "count",
    )

    count: int
    """Total number of events counted so far."""

    def __init__(
        self, window: float, *, clock: Clock, resolution: float | None = None
    ) -> None:
        _check_positive("window", window)
        if resolution is None:
            resolution = window / 200.0
        else:
            _check_positive("resolution", resolution)
        self._window = float(window)
        self._resolution = float(resolution)
        self._min_gap = self._resolution * (1.0 - _RESOLUTION_SLACK)
        self._clock = clock
        self.count = 0
        # Two parallel lists plus a head offset rather than a deque: rate() needs
        # bisect, which on a deque would cost O(n) per probe.
        self._times: list[float] = [clock()]
        self._counts: list[int] = [0]
        self._head = 0

    @property
    def window(self) -> float:
        """Length of the sliding window, in seconds."""
        return self._window

    @property
    def resolution(self) -> float:
        """Minimum spacing between stored checkpoints, in seconds."""
        return self._resolution

    @property
    def checkpoints(self) -> tuple[tuple[float, int], ...]:
        """The retained ``(time in seconds, count)`` checkpoints, oldest first."""
        head = self._head
        return tuple(zip(self._times[head:], self._counts[head:], strict=True))

    def sample(self, now: float | None = None) -> None:
        """Checkpoint the counter, unless the previous checkpoint is too recent.

        Also forgets checkpoints that can no longer be a window start: only the
        newest one at or before ``now - window`` is kept among the old ones.

        :param now: current time in seconds; ``None`` reads the clock.
        """
        if now is None:
            now = self._clock()
        times = self._times
        if now - times[-1] < self._min_gap:
            return
        times.append(now)
        self._counts.append(self.count)
        cutoff = now - self._window
        head = self._head
        # The checkpoint just appended is newer than the cutoff, so this loop
        # always stops before running off the end of the list.
        while times[head + 1] <= cutoff:
            head += 1
        if head >= _COMPACT_MIN and head * 2 >= len(times):
            del times[:head]
            del self._counts[:head]
            head = 0
        self._head = head

    def rate(self, now: float | None = None) -> float:
        """Average event rate over the window ending at ``now``, in events/s.

        The window starts at ``max(now - window, first checkpoint time)``, so
        before a full window has elapsed (or right after :meth:`reset`) only the
        covered time is used as denominator.  A long idle gap without
        :meth:`sample` calls is handled: the newest checkpoint before the window
        start still holds the count from before the gap.

        :param now: current time in seconds; ``None`` reads the clock.
        :returns: events per second, or ``0.0`` if no time is covered.
        """
        if now is None:
            now = self._clock()
        times = self._times
        head = self._head
        start = now - self._window
        if times[head] >= start:
            start = times[head]
            base = self._counts[head]
        else:
            base = self._counts[bisect_right(times, start, head) - 1]
        covered = now - start
        if covered <= 0.0:
            return 0.0
        return (self.count - base) / covered

    def reset(self, now: float | None = None) -> None:
        """Forget all checkpoints and restart the window at ``now``.

        :attr:`count` is left untouched; only the history is discarded.

        :param now: time in seconds at which the new window starts; ``None``
            reads the clock.
        """
        if now is None:
            now = self._clock()
        self._times = [now]
        self._counts = [self.count]
        self._head = 0

    def __repr__(self) -> str:
        return (
            f"RateMeter(window={self._window}, resolution={self._resolution}, "
            f"count={self.count})"
        )


class LoadAverage:
    """Time-weighted mean of a load ratio over the last ``window`` seconds.

    Each :meth:`add` reports the load observed at ``now`` and that value is
    assumed to have held since the previous :meth:`add` (or since creation).
    Consecutive additions landing in the same grid cell of ``window / 256``
    seconds are merged into one segment, so memory stays bounded by about 258
    segments however often :meth:`add` is called.  A merged segment is treated
    as uniform over its span, which only matters for the segment straddling the
    window start; the error is at most one cell's share of the window.

    The time arguments must be non-decreasing across calls, like the clock.

    :param window: length of the averaging window, in seconds (> 0).
    :param clock: monotonic clock in seconds, read when ``now`` is omitted.
    :raises ValueError: if ``window`` is not positive.
    """

    __slots__ = (
        "_bucket",
        "_clock",
        "_created",
        "_ends",
        "_last",
        "_removed",
        "_starts",
        "_total",
        "_weights",
        "_window",
    )

    def __init__(self, window: float, *, clock: Clock) -> None:
        _check_positive("window", window)
        self._window = float(window)
        self._bucket = self._window / _LOAD_BUCKETS
        self._clock = clock
        self._created = clock()
        self._last = self._created
        # One entry per segment: the time span (start, end] in seconds and its
        # weight, load x seconds. The grid cell of a segment's end is its
        # merge key.
        self._starts: deque[float] = deque()
        self._ends: deque[float] = deque()
        self._weights: deque[float] = deque()
        self._total = 0.0
        self._removed = 0

    @property
    def window(self) -> float:
        """Length of the averaging window, in seconds."""
        return self._window

    @property
    def segments(self) -> int:
        """Number of stored segments (a bound on memory use)."""
        return len(self._weights)

    def add(self, load: float, now: float | None = None) -> None:
        """Record that ``load`` has held since the previous call until ``now``.

        :param load: load ratio observed at ``now`` (dimensionless, e.g. queued
            plus busy events per consumer).
        :param now: current time in seconds; ``None`` reads the clock.
        """
        if now is None:
            now = self._clock()
        prev = self._last
        if now <= prev:
            return
        self._last = now
        cutoff = now - self._window
        self._prune(cutoff)
        # Whatever precedes the window can never be averaged again; clipping it
        # here keeps a huge idle gap from inflating the running total.
        start = prev if prev > cutoff else cutoff
        weight = load * (now - start)
        bucket = self._bucket
        ends = self._ends
        if ends and ends[-1] // bucket == now // bucket:
            ends[-1] = now
            self._weights[-1] += weight
        else:
            self._starts.append(start)
            ends.append(now)
            self._weights.append(weight)
        self._total += weight

    def _prune(self, cutoff: float) -> None:
        ends = self._ends
        weights = self._weights
        removed = 0
        while ends and ends[0] <= cutoff:
            ends.popleft()
            self._starts.popleft()
            self._total -= weights.popleft()
            removed += 1
        if removed:
            # Subtracting evicted weights lets rounding error creep into the
            # running total; resumming exactly now and then bounds it, and an
            # emptied history must not leave a residue that reads as load.
            self._removed += removed
            if not weights:
                self._removed = 0
                self._total = 0.0
            elif self._removed >= _LOAD_BUCKETS:
                self._removed = 0
                self._total = math.fsum(weights)

    def mean(self, now: float | None = None) -> float:
        """Time-weighted mean load over ``(now - window, now]``.

        Only observed time counts: the part of the window after creation and up
        to the latest :meth:`add`.  Time after the latest :meth:`add` is not
        treated as idle, it is simply not yet known.

        :param now: current time in seconds; ``None`` reads the clock.
        :returns: the mean load, or ``0.0`` if nothing in the window was observed.
        """
        if now is None:
            now = self._clock()
        cutoff = now - self._window
        observed_from = cutoff if cutoff > self._created else self._created
        covered = self._last - observed_from
        if covered <= 0.0:
            return 0.0
        weight = self._total
        # Segments older than this call's cutoff may still be stored (add()
        # prunes against its own time); discount them and the part of the
        # segment straddling the cutoff.  Normally this touches one segment.
        for seg_start, end, seg_weight in zip(
            self._starts, self._ends, self._weights, strict=True
        ):
            if end <= cutoff:
                weight -= seg_weight
                continue
            if seg_start < cutoff:
                weight -= seg_weight * ((cutoff - seg_start) / (end - seg_start))
            break
        result = weight / covered
        # Load ratios are non-negative; cancellation in the subtractions above
        # must not turn an idle window into a slightly negative load.
        return result if result > 0.0 else 0.0

    def __repr__(self) -> str:
        return f"LoadAverage(window={self._window}, segments={self.segments})"
