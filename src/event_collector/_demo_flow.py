"""The demo's ``flow`` profile: ordering keys and a rate-limited collector.

The load has the shape of the ``burst`` profile. Nine events in ten are
readings of one of :data:`FLOW_KEYS` devices, sent to the ``store``
collector with the device as their ordering key, so that each device's
readings are handled one at a time, in the order sent; the others are
alerts, sent to the ``alert`` collector, whose rate limit allows half the
alerts' peak rate. In the bursts, readings wait behind the earlier ones of
their device and alerts wait for a token: that work is held back, not
queued, so the pool grows only to what can run.

:class:`FlowLoad` makes the collectors and the payloads and watches the
handlers; :func:`event_collector.demo.run_demo` uses it for that profile.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .collector import Collector
from .data import Context, Payload
from .flow import RateLimit

if TYPE_CHECKING:
    from ._models import Metrics

__all__ = [
    "ALERT_LIMIT_SHARE",
    "ALERT_SHARE",
    "FLOW_KEYS",
    "FLOW_PROFILE",
    "FlowLoad",
    "FlowStats",
    "alert_limit",
]

FLOW_PROFILE = "flow"
"""The name of the profile."""

FLOW_KEYS = 20
"""Devices the readings come from, each one an ordering key."""

ALERT_SHARE = 0.1
"""Share of the events that are alerts."""

ALERT_LIMIT_SHARE = 0.5
"""The ``alert`` collector's rate limit, as a share of the alerts' peak
rate (``rate * ALERT_SHARE``)."""


def alert_limit(rate: float) -> float:
    """Calls per second the ``alert`` collector may make under a load whose
    peak is ``rate`` events/s (at least one a second)."""
    return max(1.0, rate * ALERT_SHARE * ALERT_LIMIT_SHARE)


@dataclasses.dataclass(frozen=True, slots=True)
class FlowStats:
    """What the ``flow`` profile's handlers saw."""

    keys: int
    """Ordering keys (devices) the readings were spread over."""
    readings: int
    """Calls of the ``store`` collector."""
    out_of_order: int
    """Readings handled before an earlier reading of their device (0 when
    the ordering holds)."""
    most_per_key: int
    """The most readings of one device handled at once (1 when the
    ordering holds)."""
    alert_limit: float
    """The ``alert`` collector's rate limit, calls/s."""
    alerts: int
    """Calls of the ``alert`` collector."""
    peak_alert_rate: float
    """The highest ``alert`` call rate between two samples, calls/s."""


class FlowLoad:
    """The collectors, payloads and counters of one ``flow`` run.

    :param rate: the load's peak rate, events/s (it sets the rate limit).
    :param seed: the seed of the choice of device and kind of each event.
    :param work: what a handler does with its payload's ``(delay, fail)``:
        the demo's simulated work, which returns the delay or raises.
    """

    def __init__(
        self,
        rate: float,
        seed: int | None,
        work: Callable[[float, bool], Awaitable[float]],
    ) -> None:
        self.limit = alert_limit(rate)
        self._work = work
        self._rng = random.Random(None if seed is None else seed + 2)
        self._sent = [0] * FLOW_KEYS  # readings sent, by device
        self._done = [0] * FLOW_KEYS  # readings handled, by device
        self._running = [0] * FLOW_KEYS
        self._readings = self._out_of_order = self._most = 0
        self._alerts = 0
        self._last: tuple[float, int] | None = None  # (t, alerts) at a sample
        self._peak_alert_rate = 0.0

    def collectors(self) -> list[Collector]:
        """The ``store`` collector and the rate-limited ``alert`` one."""
        return [
            Collector("store", self._store),
            Collector("alert", self._alert, rate_limit=RateLimit(self.limit)),
        ]

    def payload(self, delay: float, fail: bool) -> Payload[Any]:
        """The next event: a reading of a device (with its ordering key),
        or an alert. Its handler sleeps ``delay`` seconds, then raises if
        ``fail``."""
        rng = self._rng
        if rng.random() < ALERT_SHARE:
            return Payload((delay, fail), keys=["alert"])
        device = rng.randrange(FLOW_KEYS)
        seq = self._sent[device]
        self._sent[device] = seq + 1
        return Payload(
            (delay, fail, device, seq),
            keys=["store"],
            ordering_key=f"device-{device}",
        )

    async def _store(self, payload: Payload[Any], ctx: Context) -> float:
        delay, fail, device, seq = payload.value
        self._readings += 1
        if seq != self._done[device]:
            self._out_of_order += 1
        self._done[device] = seq + 1
        running = self._running[device] = self._running[device] + 1
        self._most = max(self._most, running)
        try:
            return await self._work(delay, fail)
        finally:
            self._running[device] -= 1

    async def _alert(self, payload: Payload[Any], ctx: Context) -> float:
        delay, fail = payload.value
        self._alerts += 1
        return await self._work(delay, fail)

    def sample(self, t: float, unanswered: int, metrics: Metrics) -> tuple[int, float]:
        """The held-back events and the ``alert`` calls per second since the
        previous sample (since the start for the first), ``t`` seconds into
        the run, with ``unanswered`` events sent and not answered and the
        queue's ``metrics`` of that moment."""
        # Each event goes to one collector: an unanswered event that is
        # neither queued nor running is held back.
        held = max(0, unanswered - metrics.qsize - metrics.busy)
        since, calls = self._last or (0.0, 0)
        self._last = (t, self._alerts)
        rate = (self._alerts - calls) / (t - since) if t > since else 0.0
        self._peak_alert_rate = max(self._peak_alert_rate, rate)
        return held, rate

    def stats(self) -> FlowStats:
        """The counters, at the end of the run."""
        return FlowStats(
            keys=FLOW_KEYS,
            readings=self._readings,
            out_of_order=self._out_of_order,
            most_per_key=self._most,
            alert_limit=self.limit,
            alerts=self._alerts,
            peak_alert_rate=self._peak_alert_rate,
        )
