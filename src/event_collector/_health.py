"""A collector queue's health: the :class:`Health` snapshot and how it is
read.

``CollectorQueue.health()`` reads it from the queue's state, its monitor's
probe (:class:`~event_collector._monitor.MonitorProbe`) and the inbox's
storage; nothing here waits or takes a lock, so it may be called from any
thread, and it is cheap enough for a probe every second.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Literal

from ._models import QueueState
from ._monitor import probe_of
from .transport import MemoryTransport

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["DEFAULT_MAX_LOOP_LAG", "Health", "HealthStatus", "read_health"]

HealthStatus = Literal["starting", "ready", "draining", "stopped"]
"""The values of :attr:`Health.status`."""

DEFAULT_MAX_LOOP_LAG: float = 5.0
"""Default ``max_loop_lag`` of :meth:`Health.is_live`, in seconds."""

_STATUS: dict[QueueState, HealthStatus] = {
    QueueState.CREATED: "starting",
    QueueState.STARTING: "starting",
    QueueState.RUNNING: "ready",
    QueueState.CLOSING: "draining",
    QueueState.CLOSED: "stopped",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Health:
    """A collector queue's health at one moment
    (:meth:`CollectorQueue.health <event_collector.queue.CollectorQueue.health>`).

    :meth:`is_live` and :attr:`is_ready` are what the liveness and readiness
    routes of :mod:`event_collector.health` answer.
    """

    status: HealthStatus
    """``"starting"`` from construction until the queue accepts events
    (its collectors' ``setup`` included), ``"ready"`` while it accepts and
    handles them, ``"draining"`` from the moment a shutdown begins (sends
    are refused, queued events are handled or cancelled, collectors torn
    down) and ``"stopped"`` once it is closed: shut down, never started but
    shut down, failed to start, or left behind by its ended event loop."""

    loop_lag: float
    """Seconds the event loop was late the last time it woke the queue's
    monitor from a timed sleep, or, if more, how late the monitor is right
    now (a loop blocked at this moment, seen from another thread). 0.0
    before the first timed wake-up. The monitor sleeps with a timer while
    there is work (every ``monitor_interval``) and while an idle pool is
    above its floor (every second); an idle queue at its floor sleeps until
    the next send, and the value is then that of its last timed wake-up."""

    loop_lag_max: float
    """The highest ``loop_lag`` measured over the last 10 to 20 seconds (the
    current and the previous 10-second period), or the lateness right now
    if more; 0.0 when there was no timed wake-up in that time."""

    monitor_alive: bool
    """Whether the queue's monitor (the task that measures the load and
    sizes the pool) runs: its task exists, has not ended, and is not
    stalled, that is, not more than ``max(10, 100 x monitor_interval)``
    seconds past a wake-up it asked for (10 s with the default interval).
    ``False`` before the start and after the shutdown."""

    oldest_event_age: float | None
    """Seconds (of the queue's ``clock``) since the event that has waited
    longest in the queue was sent, or ``None`` when no event is queued.
    Events held back by flow control (ordering keys, a collector's limits)
    enter the queue when they are released; until then they do not count,
    as they do not count in ``qsize``. Read in O(1) from a FIFO or LIFO
    queue; a priority queue keeps no order of arrival, and is scanned
    (O(n), a few milliseconds per 100 000 queued events). ``None`` on a
    transport other than the in-memory one (Redis: a worker's local queue
    holds what it fetched, stamped when it fetched it)."""

    @property
    def is_ready(self) -> bool:
        """Whether the queue takes events now (``status == "ready"``)."""
        return self.status == "ready"

    def is_live(self, max_loop_lag: float = DEFAULT_MAX_LOOP_LAG) -> bool:
        """Whether the process looks sound: ``False`` if the monitor is dead
        while the queue runs or drains, or if ``loop_lag_max`` is above
        ``max_loop_lag`` seconds. A queue starting or stopped is live: its
        monitor does not run yet, or no more, and that is no reason to
        restart the process (readiness tells those states apart)."""
        if self.status in ("ready", "draining") and not self.monitor_alive:
            return False
        return self.loop_lag_max <= max_loop_lag

    def as_dict(self) -> dict[str, Any]:
        """The fields by name, as JSON would carry them."""
        return dataclasses.asdict(self)


_seq = itemgetter(1)


def _sent_at(item: Any) -> float | None:
    """When a queued item's event was sent: an event's ``sent_at``, or for a
    flow-controlled collector's released call, its first part's event's."""
    sent = getattr(item, "sent_at", None)
    if sent is None and (parts := getattr(item, "parts", None)):
        sent = parts[0].join.event.sent_at
    return sent


def oldest_sent_at(items: Any) -> float | None:
    """The send time of the item stored first in an inbox's storage (a
    deque, or a heap of ``(priority, seq, item)``), or ``None`` if empty.

    Safe from another thread than the loop's: an item taken meanwhile makes
    it answer ``None`` or a younger item, never raise.
    """
    try:
        if isinstance(items, deque):
            # FIFO and LIFO both append on the right: the left is the oldest.
            return _sent_at(items[0])
        # A heap orders by priority; the lowest sequence number came first.
        return _sent_at(min(items, key=_seq)[2])
    except (IndexError, ValueError):
        return None


def read_health(
    state: QueueState, engine: Engine, clock: Callable[[], float]
) -> Health:
    """The health of a queue in ``state`` made of ``engine``; ``clock`` is
    the queue's, on which its events' send times are read."""
    status = _STATUS[state]
    probe = probe_of(engine.pool)
    lag = lag_max = 0.0
    # Before the start and once stopped, no monitor runs, whatever its
    # task's last word was.
    alive = probe is not None and status in ("ready", "draining")
    if probe is not None and probe.loop_time is not None:
        now = probe.loop_time()
        overdue = probe.overdue(now)
        lag = max(probe.lag, overdue)
        lag_max = max(probe.peak(now), overdue)
        alive = alive and probe.alive(now)
    age: float | None = None
    # Only the in-memory inbox holds events as they were sent, in this
    # process; a broker's holds what was fetched, stamped when it was.
    if isinstance(engine.transport, MemoryTransport):
        sent = oldest_sent_at(engine.inbox.items)
        if sent is not None:
            age = max(0.0, clock() - sent)
    return Health(
        status=status,
        loop_lag=lag,
        loop_lag_max=lag_max,
        monitor_alive=alive,
        oldest_event_age=age,
    )
