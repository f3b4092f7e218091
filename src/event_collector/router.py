"""Routers hand a payload to the collectors its delivery mode names."""

from __future__ import annotations

import asyncio
import inspect
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from ._outcome import propagates
from .collector import Collector
from .data import Delivery, Error, Ok, Payload, ResultList, as_result
from .exceptions import ConfigError

__all__ = ["Router", "SimpleRouter", "collector_call", "make_runner"]

_Runner = Callable[[Payload[Any]], Awaitable[Ok[Any] | Error]]


def make_runner(collector: Collector) -> _Runner:
    """Return a coroutine function that runs ``collector`` on a payload and
    always answers with a result that names the collector
    (``result.collector``).

    A plain return value becomes ``Ok``; what the handler raises becomes
    ``Error`` (only the running
    task's own cancellation, ``KeyboardInterrupt`` and ``SystemExit``
    propagate); a handler that outlives the collector's ``timeout`` is
    cancelled and answered with ``Error(TimeoutError)``. The choice between
    the timed and the untimed runner is made here, once, not per event.
    Instrumentation (``event_collector.otel``, the Prometheus module's
    per-collector metrics) is looked up per call, so a runner made before
    it was set up is instrumented too.
    """
    key = collector.key
    # Unless ``process`` is overridden, call the processor the way
    # ``Collector.process`` does, without that extra coroutine frame: every
    # frame in the chain costs on each resumption of a waiting handler
    # (benchmark: io).
    direct = _is_plain(collector)
    call = collector_call(collector)

    async def run(payload: Payload[Any]) -> Ok[Any] | Error:
        try:
            probed = collector._probed
            if probed is not None:
                value = await probed(payload)
            elif direct:
                value = await collector.processor(payload, collector.ctx)  # type: ignore[misc]
            else:
                value = await call(payload)
        except Exception as exc:
            return Error(exc, None, key)
        except BaseException as exc:
            if propagates(exc):
                raise
            return Error(exc, None, key)
        return as_result(value, key)

    return run


def collector_call(collector: Collector) -> Callable[[Payload[Any]], Awaitable[Any]]:
    """The collector's own call on one payload, with its timeout: it returns
    what the handler returns and raises what it raises, or a
    ``TimeoutError`` that names the collector when the timeout expires.
    What instrumentation wraps."""
    process = collector.process
    timeout = collector.timeout
    if timeout is None:
        return process
    key = collector.key

    async def timed(payload: Payload[Any]) -> Any:
        try:
            async with asyncio.timeout(timeout) as scope:
                return await process(payload)
        except TimeoutError as exc:
            if scope.expired():
                # Built in a helper, not a local: the cause's traceback holds
                # this frame, and a local would make that a reference cycle.
                raise _timed_out(key, timeout, exc.__cause__)  # noqa: B904
            raise

    return timed


def _check_router(router: Any) -> None:
    """Raise ``ConfigError`` unless ``router`` is a concrete ``Router``
    subclass (the queue's ``router`` argument)."""
    if not (isinstance(router, type) and issubclass(router, Router)):
        raise ConfigError(
            "router must be a Router subclass (the class, not an instance) "
            f"(got router={router!r})"
        )
    if inspect.isabstract(router):
        missing = ", ".join(sorted(getattr(router, "__abstractmethods__", ())))
        raise ConfigError(
            "router must be a concrete Router subclass that implements "
            f"{missing} (got router={router!r}, which is abstract)"
        )


def _build_router(router: type[Router], collectors: Sequence[Collector]) -> Router:
    """Instantiate ``router`` with the collectors by key; what its
    constructor raises becomes a ``ConfigError`` naming ``router``."""
    try:
        return router({c.key: c for c in collectors})
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"router: {router.__qualname__}(collectors) raised {exc!r}"
        ) from exc


def _timed_out(key: str, timeout: float, cause: BaseException | None) -> TimeoutError:
    err = TimeoutError(f"collector {key!r} took longer than its timeout of {timeout} s")
    err.__cause__ = cause
    err.__suppress_context__ = cause is not None
    return err


def _is_plain(collector: Collector) -> bool:
    """Whether ``collector`` runs its processor through the inherited
    ``process``, without a timeout."""
    return (
        type(collector).process is Collector.process
        and "process" not in vars(collector)
        and collector.processor is not None
        and collector.timeout is None
    )


def _listed(result: Ok[Any] | Error) -> ResultList:
    results = ResultList()
    results.append(result)
    return results


_RESULTS = (Ok, Error)


def _coerce(results: object) -> ResultList:
    """Make a custom router's answer a ``ResultList`` of results: a list,
    a tuple or a ``ResultList`` holding plain values has each wrapped in
    ``Ok``; any other value is one ``Ok``."""
    if isinstance(results, list | tuple):
        if isinstance(results, ResultList):
            # A plain loop, not all() over a generator: it runs for every
            # event a custom router answers.
            for result in results:
                if not isinstance(result, _RESULTS):
                    break
            else:
                return results
        return ResultList(as_result(r) for r in results)
    return ResultList((as_result(results),))


class Router(ABC):
    """Base class of routers; pass a subclass (the class) to the queue.

    :param collectors: the queue's collectors, by key. The queue builds its
        router when it is constructed; the collectors' ``setup`` runs later,
        in ``init_queue``, before any event is routed.
    """

    # A collector the consumers may call themselves for a broadcast payload,
    # instead of awaiting handle_event: set by a SimpleRouter whose broadcast
    # goes to that one collector, which has a processor, no process override
    # and no timeout. It saves a coroutine per event, and a frame on every
    # resumption of a waiting handler (benchmarks: throughput, latency).
    # None sends every payload through handle_event. Not part of the API.
    _direct: Collector | None = None

    def __init__(self, collectors: Mapping[str, Collector]) -> None:
        self.collectors: Mapping[str, Collector] = collectors
        """The collectors by key."""

    @abstractmethod
    async def handle_event(self, payload: Payload[Any]) -> ResultList:
        """Deliver ``payload`` and return one result per collector reached.

        :func:`make_runner` turns a collector into a function that never
        raises, which is what an implementation usually wants.
        """


class SimpleRouter(Router):
    """Delivers by key, by topic or to everyone (``Payload.delivery``).

    The routing tables are built once, at construction. A payload that
    reaches several collectors is handled by all of them concurrently. The
    results come in the order of the collectors for a broadcast, in the
    order of the payload's keys for ``Delivery.KEY``, and in the order of
    its topics (each collector once, where it first matches) for
    ``Delivery.TOPIC``.
    """

    def __init__(self, collectors: Mapping[str, Collector]) -> None:
        super().__init__(collectors)
        self._by_key: dict[str, _Runner] = {
            key: make_runner(c) for key, c in collectors.items()
        }
        self._everyone: tuple[_Runner, ...] = tuple(self._by_key.values())
        by_topic: dict[str, list[_Runner]] = {}
        for key, c in collectors.items():
            for topic in c.topics:
                by_topic.setdefault(topic, []).append(self._by_key[key])
        self._by_topic: dict[str, tuple[_Runner, ...]] = {
            t: tuple(rs) for t, rs in by_topic.items()
        }
        self._only: _Runner | None = (
            self._everyone[0] if len(self._everyone) == 1 else None
        )
        if (
            self._only is not None
            and type(self).handle_event is SimpleRouter.handle_event
            and _is_plain(only := next(iter(collectors.values())))
        ):
            self._direct = only

    def _select(self, payload: Payload[Any]) -> tuple[_Runner, ...]:
        delivery = payload.delivery
        if delivery is Delivery.BROADCAST:
            return self._everyone
        if delivery is Delivery.KEY:
            by_key = self._by_key
            return tuple(dict.fromkeys(by_key[k] for k in payload.keys if k in by_key))
        if delivery is Delivery.TOPIC:
            by_topic = self._by_topic
            return tuple(
                dict.fromkeys(
                    r for t in payload.topics if t in by_topic for r in by_topic[t]
                )
            )
        raise ValueError(f"unknown delivery mode {delivery!r}")

    async def handle_event(self, payload: Payload[Any]) -> ResultList:
        # No result is kept in a local here: a handler's exception carries a
        # traceback whose frames lead back (f_back) to this frame, and a
        # local holding the Error would make that a reference cycle.
        only = self._only
        if only is not None and payload.delivery is Delivery.BROADCAST:
            return _listed(await only(payload))
        runners = self._select(payload)
        if len(runners) == 1:
            return _listed(await runners[0](payload))
        if not runners:
            return ResultList()
        return ResultList(await asyncio.gather(*(r(payload) for r in runners)))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} collectors={list(self.collectors)!r}>"
