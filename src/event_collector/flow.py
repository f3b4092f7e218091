"""Flow control for collectors: rate limits, retries, dead letters.

A collector can be limited and retried without touching its handler::

    Collector(
        "notify",
        notify,
        concurrency=4,
        rate_limit=RateLimit(50, per=1.0, burst=10),
        retry=Retry(attempts=5, backoff=0.1, on=(ConnectionError,)),
    )

Per-key ordering is a property of the send (``ordering_key=``), batches a
kind of collector (:class:`~event_collector.collector.BatchCollector`);
the flow-control guide shows each at work.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ._config import is_finite
from .exceptions import ConfigError
from .messagebus import Message

if TYPE_CHECKING:
    from ._models import CollectorEvent

__all__ = ["DeadLettered", "RateLimit", "Retry", "TokenBucket"]


#: Tokens of float noise forgiven (see ``TokenBucket.take``).
_NOISE = 1e-9


def _positive(name: str, value: object, *, owner: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not is_finite(value)
        or value <= 0
    ):
        raise ConfigError(
            f"{owner}: {name} must be a positive number (got {name}={value!r})"
        )
    return float(value)


class RateLimit:
    """At most ``rate`` calls every ``per`` seconds, in bursts of at most
    ``burst`` calls: a token bucket that holds ``burst`` tokens and gains
    ``rate / per`` tokens a second; each call of the collector takes one.

    :param rate: calls allowed per ``per`` seconds.
    :param per: the period, in seconds.
    :param burst: how many calls may start at once after a quiet spell; 1
        (the default) spaces calls evenly, ``per / rate`` seconds apart.
    """

    __slots__ = ("burst", "per", "rate")

    def __init__(self, rate: float, per: float = 1.0, burst: int = 1) -> None:
        self.rate: float = _positive("rate", rate, owner="RateLimit")
        """Calls per period."""
        self.per: float = _positive("per", per, owner="RateLimit")
        """The period, in seconds."""
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ConfigError(
                f"RateLimit: burst must be an int of at least 1 (got burst={burst!r})"
            )
        self.burst: int = burst
        """The bucket's size: calls that may start at once."""

    @property
    def per_second(self) -> float:
        """Tokens gained per second."""
        return self.rate / self.per

    def __repr__(self) -> str:
        return f"RateLimit({self.rate:g}, per={self.per:g}, burst={self.burst})"


class TokenBucket:
    """The state of one :class:`RateLimit`, read against ``clock``.

    :param limit: the rate limit it enforces.
    :param clock: monotonic seconds; the queue passes its event loop's time.
    """

    __slots__ = ("_clock", "_fill", "_stamp", "limit")

    def __init__(self, limit: RateLimit, clock: Callable[[], float]) -> None:
        self.limit = limit
        """The rate limit enforced."""
        self._clock = clock
        self._fill = float(limit.burst)
        self._stamp = clock()

    def _refill(self) -> float:
        now = self._clock()
        limit = self.limit
        self._fill = min(
            float(limit.burst), self._fill + (now - self._stamp) * limit.per_second
        )
        self._stamp = now
        return self._fill

    def take(self) -> bool:
        """Take a token if there is one; return whether there was."""
        # A token within float noise of whole counts: a timer set for the
        # moment it is whole must find it there, not 1e-12 short.
        if self._refill() >= 1.0 - _NOISE:
            self._fill -= 1.0
            return True
        return False

    def wait(self, tokens: float = 1.0) -> float:
        """Seconds until the bucket holds ``tokens`` (0 when it does now)."""
        missing = tokens - _NOISE - self._refill()
        return 0.0 if missing <= 0 else missing / self.limit.per_second

    @property
    def tokens(self) -> float:
        """Tokens in the bucket now (a fraction while one refills)."""
        return self._refill()


class Retry:
    """Call a collector again when it fails with one of the exceptions
    named in ``on``, waiting longer each time.

    The wait after the ``n``-th failed attempt is ``backoff * 2 ** (n - 1)``
    seconds, at most ``max_backoff``; with ``jitter`` it is drawn at random
    between half of that and all of it, so that events that failed together
    do not come back together. A handler may raise
    :class:`~event_collector.exceptions.RetryAfter` to choose the wait
    itself; that too counts as an attempt. After ``attempts`` attempts the
    event is answered with the last error, whose ``details["attempts"]`` is
    the number of attempts, and a :class:`DeadLettered` message is
    dispatched on the queue's bus.

    :param attempts: calls in all, the first included (at least 1).
    :param backoff: the first wait, in seconds (0 for none).
    :param max_backoff: the longest wait, in seconds.
    :param jitter: whether to spread the waits at random.
    :param on: the exception classes that are retried; any other exception
        is the event's answer at once.
    """

    __slots__ = ("attempts", "backoff", "jitter", "max_backoff", "on")

    def __init__(
        self,
        attempts: int = 5,
        backoff: float = 0.1,
        max_backoff: float = 30.0,
        jitter: bool = True,
        on: type[BaseException] | Iterable[type[BaseException]] = (
            ConnectionError,
            TimeoutError,
        ),
    ) -> None:
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ConfigError(
                "Retry: attempts must be an int of at least 1 "
                f"(got attempts={attempts!r})"
            )
        self.attempts: int = attempts
        """Calls in all, the first included."""
        if (
            isinstance(backoff, bool)
            or not isinstance(backoff, int | float)
            or not is_finite(backoff)
            or backoff < 0
        ):
            raise ConfigError(
                "Retry: backoff must be a number of seconds >= 0 "
                f"(got backoff={backoff!r})"
            )
        self.backoff: float = float(backoff)
        """The first wait, in seconds."""
        self.max_backoff: float = _positive("max_backoff", max_backoff, owner="Retry")
        """The longest wait, in seconds."""
        self.jitter: bool = bool(jitter)
        """Whether waits are spread at random."""
        classes: tuple[Any, ...] = (on,) if isinstance(on, type) else tuple(on)
        if not all(
            isinstance(c, type) and issubclass(c, BaseException) for c in classes
        ):
            raise ConfigError(f"Retry: on must be exception classes (got on={on!r})")
        self.on: tuple[type[BaseException], ...] = classes
        """The exception classes retried."""

    def retries(self, exc: BaseException) -> bool:
        """Whether an attempt that raised ``exc`` is worth another one."""
        return isinstance(exc, self.on)

    def delay(self, attempt: int, *, rand: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1 for
        the first call).

        :param rand: a number in [0, 1) standing for the random draw of the
            jitter (for a reproducible schedule); drawn when ``None``.
        """
        if self.backoff == 0:
            return 0.0
        # 2 ** n overflows a float for n past 1023; the cap is hit long before.
        exponent = min(attempt - 1, 1023)
        wait = min(self.max_backoff, self.backoff * math.ldexp(1.0, exponent))
        if not self.jitter:
            return wait
        draw = random.random() if rand is None else rand
        return wait / 2 + wait / 2 * draw

    def __repr__(self) -> str:
        names = ", ".join(c.__name__ for c in self.on)
        return (
            f"Retry(attempts={self.attempts}, backoff={self.backoff:g}, "
            f"max_backoff={self.max_backoff:g}, jitter={self.jitter}, on=({names}))"
        )


class DeadLettered(Message):
    """Dispatched on the queue's bus when a collector's last retry failed.

    The event is answered with ``error`` all the same; a handler of this
    message can store it to replay it later.
    """

    __slots__ = ("attempts", "collector", "error", "event")

    def __init__(
        self,
        event: CollectorEvent[Any],
        collector: str,
        error: BaseException,
        attempts: int,
    ) -> None:
        self.event: CollectorEvent[Any] = event
        """The event (its ``payload`` is what was sent)."""
        self.collector: str = collector
        """The key of the collector that gave up."""
        self.error: BaseException = error
        """The last attempt's exception."""
        self.attempts: int = attempts
        """How many times the collector was called."""

    def __repr__(self) -> str:
        return (
            f"<DeadLettered collector={self.collector!r} attempts={self.attempts} "
            f"error={self.error!r}>"
        )
