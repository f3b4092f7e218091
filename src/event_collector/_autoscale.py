"""Pool-sizing policy of the collector queue, as pure functions.

The queue's monitor measures its state once per tick and asks
:func:`next_pool_size` how many consumer tasks it should run.  Nothing here keeps
state or reads a clock, so the policy can be tested exhaustively.

Terminology:

* *demand* is ``qsize + busy``: events waiting plus events being handled;
* *load ratio* is demand per consumer (see :func:`load_ratio`);
* *wip* is the Little's-law work in progress, arrival rate (events/s) times mean
  service time (seconds), i.e. how many consumers the steady load keeps busy;
* *wip_margin* is the fractional headroom added on top of a demand or wip
  (``0.15`` means 15 % more consumers than strictly needed).
"""

import math
import sys

__all__ = [
    "REDUCTION_THRESHOLD",
    "load_ratio",
    "next_pool_size",
    "scale_down_target",
    "scale_up_target",
]

REDUCTION_THRESHOLD: float = 0.75
"""Average load ratio below which the pool may shrink."""

# Products such as 100 * 0.07 come out as 7.000000000000001; rounding away the
# last few bits first keeps ceil() from adding a spurious consumer.
_CEIL_DIGITS = 9


def _ceil_count(x: float) -> int:
    """Smallest whole number of consumers covering ``x``, tolerant of float noise."""
    if not x > 0.0:
        # Covers NaN as well: an unknown need must not force any consumer.
        return 0
    if x >= sys.maxsize:
        return sys.maxsize
    return math.ceil(round(x, _CEIL_DIGITS))


def load_ratio(qsize: int, busy: int, consumers: int) -> float:
    """Demand per consumer, ``(qsize + busy) / consumers``.

    :param qsize: events waiting in the queue.
    :param busy: events currently being handled.
    :param consumers: consumer tasks in the pool.
    :returns: the ratio (dimensionless), or ``0.0`` when there is no consumer.
    """
    if consumers <= 0:
        return 0.0
    return (qsize + busy) / consumers


def _with_margin(demand: int, wip_margin: float) -> int:
    return demand + _ceil_count(demand * wip_margin)


def scale_up_target(
    *, qsize: int, busy: int, consumers: int, max_consumers: int, wip_margin: float
) -> int:
    """Pool size to grow to when the load ratio has reached 1.

    The target is the demand plus ``ceil(demand * wip_margin)`` spare consumers,
    capped at ``max_consumers``.  The pool never shrinks here: when the target is
    not larger than ``consumers``, ``consumers`` is returned unchanged.

    :param qsize: events waiting in the queue.
    :param busy: events currently being handled.
    :param consumers: current pool size.
    :param max_consumers: upper bound of the pool size.
    :param wip_margin: fractional headroom on top of the demand (e.g. ``0.15``).
    :returns: the new pool size.
    """
    target = min(_with_margin(qsize + busy, wip_margin), max_consumers)
    return target if target > consumers else consumers


def scale_down_target(
    *,
    qsize: int,
    busy: int,
    consumers: int,
    min_consumers: int,
    avg_load: float,
    wip: float,
    wip_margin: float,
    threshold: float = REDUCTION_THRESHOLD,
) -> int:
    """Pool size to shrink to when the pool has been under-used.

    Nothing changes while ``avg_load`` is at or above ``threshold`` or while the
    current load ratio is at least 1.  Otherwise the target is the demand plus
    its margin, but not below ``max(min_consumers, ceil(wip * (1 + wip_margin)))``
    so that the steady load keeps enough consumers, and never above
    ``consumers``: this function only ever shrinks the pool.

    :param qsize: events waiting in the queue.
    :param busy: events currently being handled.
    :param consumers: current pool size.
    :param min_consumers: lower bound of the pool size.
    :param avg_load: time-averaged load ratio over the recent window.
    :param wip: Little's-law work in progress (events/s x seconds = consumers).
    :param wip_margin: fractional headroom on top of the demand and the wip.
    :param threshold: average load ratio below which shrinking is allowed.
    :returns: the new pool size.
    """
    if avg_load >= threshold or load_ratio(qsize, busy, consumers) >= 1.0:
        return consumers
    lower = max(min_consumers, _ceil_count(wip * (1.0 + wip_margin)))
    target = max(_with_margin(qsize + busy, wip_margin), lower)
    return target if target < consumers else consumers


def next_pool_size(
    *,
    qsize: int,
    busy: int,
    consumers: int,
    min_consumers: int,
    max_consumers: int,
    avg_load: float,
    wip: float,
    wip_margin: float,
    threshold: float = REDUCTION_THRESHOLD,
) -> int:
    """Pool size decided by one monitor tick.

    Grows with :func:`scale_up_target` when the load ratio is at least 1, and
    otherwise may shrink with :func:`scale_down_target`.  An empty pool facing
    any demand counts as overloaded, so a pool scaled down to zero consumers
    still restarts when events arrive, and a pool below ``min_consumers`` is
    brought back up to it.

    :param qsize: events waiting in the queue.
    :param busy: events currently being handled.
    :param consumers: current pool size.
    :param min_consumers: lower bound of the pool size.
    :param max_consumers: upper bound of the pool size.
    :param avg_load: time-averaged load ratio over the recent window.
    :param wip: Little's-law work in progress (events/s x seconds = consumers).
    :param wip_margin: fractional headroom on top of the demand and the wip.
    :param threshold: average load ratio below which shrinking is allowed.
    :returns: the new pool size.
    """
    demand = qsize + busy
    if (consumers <= 0 and demand > 0) or load_ratio(qsize, busy, consumers) >= 1.0:
        size = scale_up_target(
            qsize=qsize,
            busy=busy,
            consumers=consumers,
            max_consumers=max_consumers,
            wip_margin=wip_margin,
        )
    else:
        size = scale_down_target(
            qsize=qsize,
            busy=busy,
            consumers=consumers,
            min_consumers=min_consumers,
            avg_load=avg_load,
            wip=wip,
            wip_margin=wip_margin,
            threshold=threshold,
        )
    # A pool below its minimum (consumers that died, say) is refilled.
    return max(size, min_consumers)
