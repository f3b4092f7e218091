"""Collectors: the user's handlers, with their set-up and tear-down."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from ._compat import TypeAliasType
from ._config import is_finite
from .data import Context, Payload
from .exceptions import ConfigError
from .flow import RateLimit, Retry
from .types import BatchProcessor, LifecycleManager, Processor

__all__ = [
    "BatchCollector",
    "Collector",
    "CollectorDict",
    "CollectorList",
    "LifecycleManager",
    "Processor",
]


class Collector:
    """A named handler of payloads.

    Give it a processor function::

        async def store(payload: Payload, ctx: Context) -> int: ...

        collector = Collector("store", store, topics=["orders"], timeout=5)

    or subclass it, set ``key`` (and ``topics``, ``timeout``) as class
    attributes and override :meth:`process`; the queue accepts the class
    itself and instantiates it with no arguments::

        class Store(Collector):
            key = "store"

            async def process(self, payload: Payload) -> int: ...

    :param key: unique name of the collector, for ``Delivery.KEY`` routing.
    :param processor: ``async def processor(payload, ctx)``; not needed when
        a subclass overrides :meth:`process`.
    :param topics: topics the collector receives with ``Delivery.TOPIC``.
    :param ctx: a :class:`~event_collector.data.Context` handed to the
        processor and the lifecycle.
    :param lifecycle: a factory ``lifecycle(ctx)`` of an async context manager
        entered by :meth:`setup` and exited by :meth:`teardown`.
    :param timeout: seconds a handler may run before it is cancelled and
        answered with ``Error(TimeoutError)``; ``None`` for no limit.
    :param concurrency: at most this many calls of the collector at once;
        ``None`` for no limit of its own.
    :param rate_limit: a :class:`~event_collector.flow.RateLimit` on the
        collector's calls, retries included.
    :param retry: a :class:`~event_collector.flow.Retry`: which failures are
        tried again, how often and after how long.

    Events held back by ``concurrency``, ``rate_limit`` or a waiting retry
    hold no consumer (see the flow-control guide).
    """

    key: str = ""
    topics: Sequence[str] = ()
    timeout: float | None = None
    # The collector's call wrapped by instrumentation (see _probes), which
    # runners and consumers use instead of the plain call when it is set.
    _probed: Callable[[Payload[Any]], Awaitable[Any]] | None = None
    concurrency: int | None = None
    rate_limit: RateLimit | None = None
    retry: Retry | None = None

    def __init__(
        self,
        key: str | None = None,
        processor: Processor | None = None,
        *,
        topics: Iterable[str] | None = None,
        ctx: Context | None = None,
        lifecycle: LifecycleManager | None = None,
        timeout: float | None = None,
        concurrency: int | None = None,
        rate_limit: RateLimit | None = None,
        retry: Retry | None = None,
    ) -> None:
        key = type(self).key if key is None else key
        if not isinstance(key, str) or not key:
            raise ConfigError(
                f"Collector key must be a non-empty str (got key={key!r})"
            )
        if processor is not None and not callable(processor):
            raise ConfigError(
                f"Collector {key!r}: processor must be an async callable "
                f"(got processor={processor!r})"
            )
        if processor is None and type(self).process is Collector.process:
            raise ConfigError(
                f"Collector {key!r} needs a processor, or a subclass that "
                "overrides process()"
            )
        if processor is not None and _is_sync(processor):
            raise ConfigError(
                f"Collector {key!r}: processor must be an async function "
                f"(async def), got the plain function {_name(processor)}. For "
                "blocking code, await it in a thread: async def processor("
                "payload, ctx): return await asyncio.to_thread(work, payload.value)."
                " To bind arguments, use functools.partial of an async function"
            )
        if type(self).process is not Collector.process and _is_sync(type(self).process):
            raise ConfigError(
                f"Collector {key!r}: {type(self).__qualname__}.process must be "
                "an async method (async def process(self, payload)); for "
                "blocking code, return await asyncio.to_thread(...) from it"
            )
        if timeout is None:
            timeout = type(self).timeout
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not is_finite(timeout)
            or timeout <= 0
        ):
            raise ConfigError(
                f"Collector {key!r}: timeout must be a positive number of "
                f"seconds or None (got timeout={timeout!r})"
            )
        given = type(self).topics if topics is None else topics
        # A lone str is refused rather than split into one topic per letter,
        # whether it comes as the argument or as a subclass's attribute.
        topic_list = () if isinstance(given, str) else tuple(given)
        if isinstance(given, str) or not all(isinstance(t, str) for t in topic_list):
            raise ConfigError(
                f"Collector {key!r}: topics must be a list of str "
                f"(got topics={given!r})"
            )

        self.key = key
        """The collector's unique name, used by ``Delivery.KEY`` routing."""
        self.processor: Processor | None = processor
        """The handler function, if one was given."""
        self.topics = topic_list
        """The topics this collector receives with ``Delivery.TOPIC``."""
        self.ctx: Context = ctx if ctx is not None else Context()
        """Application values handed to the processor and the lifecycle."""
        self.lifecycle: LifecycleManager | None = lifecycle
        """Factory of the async context manager run around the queue's life."""
        self.timeout: float | None = timeout
        """Seconds a handler may run, or ``None``."""
        self.concurrency: int | None
        self.rate_limit: RateLimit | None
        self.retry: Retry | None
        self.concurrency, self.rate_limit, self.retry = _flow_options(
            self, concurrency, rate_limit, retry
        )
        self._lifecycle_cm: AbstractAsyncContextManager[Any] | None = None
        # An instance attribute, not just the class's None: consumers read it
        # for every event they hand this collector themselves.
        self._probed = None

    async def process(self, payload: Payload[Any]) -> Any:
        """Handle one payload; by default, await the processor with the
        collector's context. Return a result or a plain value."""
        processor = self.processor
        assert processor is not None  # checked in __init__
        return await processor(payload, self.ctx)

    async def setup(self) -> None:
        """Prepare the collector; called once by ``init_queue``, before any
        event. The default enters the ``lifecycle`` context manager."""
        if self.lifecycle is not None:
            cm = self.lifecycle(self.ctx)
            await cm.__aenter__()
            self._lifecycle_cm = cm

    async def teardown(self) -> None:
        """Release what :meth:`setup` acquired; called once at shutdown,
        after the last event. The default exits the ``lifecycle``."""
        cm, self._lifecycle_cm = self._lifecycle_cm, None
        if cm is not None:
            await cm.__aexit__(None, None, None)

    def __repr__(self) -> str:
        topics = f" topics={list(self.topics)!r}" if self.topics else ""
        return f"<{type(self).__name__} key={self.key!r}{topics}>"


def _flow_options(
    collector: Collector,
    concurrency: int | None,
    rate_limit: RateLimit | None,
    retry: Retry | None,
) -> tuple[int | None, RateLimit | None, Retry | None]:
    """The collector's flow-control options, from the arguments or the
    class attributes, checked."""
    cls, key = type(collector), collector.key
    concurrency = cls.concurrency if concurrency is None else concurrency
    rate_limit = cls.rate_limit if rate_limit is None else rate_limit
    retry = cls.retry if retry is None else retry
    if concurrency is not None and (
        isinstance(concurrency, bool)
        or not isinstance(concurrency, int)
        or concurrency < 1
    ):
        raise ConfigError(
            f"Collector {key!r}: concurrency must be an int of at least 1 or None "
            f"(got concurrency={concurrency!r})"
        )
    if rate_limit is not None and not isinstance(rate_limit, RateLimit):
        raise ConfigError(
            f"Collector {key!r}: rate_limit must be a RateLimit or None "
            f"(got rate_limit={rate_limit!r})"
        )
    if retry is not None and not isinstance(retry, Retry):
        raise ConfigError(
            f"Collector {key!r}: retry must be a Retry or None (got retry={retry!r})"
        )
    return concurrency, rate_limit, retry


def _flow_controlled(collector: Collector) -> bool:
    """Whether the collector's calls go through flow control: a limit, a
    retry, or batches."""
    return isinstance(collector, BatchCollector) or (
        collector.concurrency is not None
        or collector.rate_limit is not None
        or collector.retry is not None
    )


def _is_sync(func: object) -> bool:
    """Whether ``func`` plainly cannot be awaited: a ``def`` function or
    method (possibly in a ``functools.partial``), or an object whose
    ``__call__`` is one, that is neither a coroutine function nor annotated
    as returning an awaitable. Lambdas and other callables (an
    ``AsyncMock``, a C callable) are given the benefit of the doubt."""
    while isinstance(func, functools.partial):
        func = func.func
    if not (inspect.isfunction(func) or inspect.ismethod(func)):
        func = inspect.getattr_static(type(func), "__call__", None)
        if not inspect.isfunction(func):
            return False
    func = inspect.unwrap(func)  # what a functools.wraps decorator wraps
    name = getattr(func, "__name__", "")
    if inspect.iscoroutinefunction(func) or name == "<lambda>":
        # A lambda cannot await, so one given as a handler is most often
        # one that returns a coroutine (lambda p, ctx: handle(p, ctx, db)).
        return False
    annotation = getattr(func, "__annotations__", {}).get("return")
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return annotation is None or not any(
        word in text for word in ("Awaitable", "Coroutine", "Future")
    )


def _name(func: object) -> str:
    return getattr(func, "__qualname__", None) or repr(func)


def _check_collectors(collectors: Any) -> list[Collector]:
    """The queue's ``collectors`` argument as instances (a class given is
    instantiated with no arguments), or a ``ConfigError`` saying what is
    wrong with it."""
    if isinstance(collectors, str | bytes) or not isinstance(collectors, Sequence):
        raise ConfigError(
            "collectors must be a list of Collector instances or subclasses "
            f"(got collectors={collectors!r})"
        )
    if not collectors:
        raise ConfigError("collectors must not be empty (got collectors=[])")
    instances: list[Collector] = []
    for item in collectors:
        if isinstance(item, type) and issubclass(item, Collector):
            try:
                instances.append(item())
            except ConfigError:
                raise
            except Exception as exc:
                raise ConfigError(
                    f"collectors: the Collector subclass {item.__qualname__} must "
                    "be constructible with no arguments; pass an instance instead "
                    f"(calling {item.__qualname__}() raised {exc!r})"
                ) from exc
        elif isinstance(item, Collector):
            instances.append(item)
        else:
            raise ConfigError(
                "collectors must hold Collector instances or subclasses "
                f"(got {item!r} in collectors)"
            )
    keys = [c.key for c in instances]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ConfigError(
            f"collectors must have unique keys (got duplicate keys {duplicates} "
            "in collectors)"
        )
    return instances


class BatchCollector(Collector):
    """A collector whose processor takes a list of payloads at a time.

    ::

        async def insert(payloads: list[Payload], ctx: Context) -> list[int]:
            rows = [p.value for p in payloads]
            return await ctx.db.insert_many(rows)  # one id per row, in order

        collector = BatchCollector("insert", insert, max_size=500, max_wait=0.05)

    Payloads are gathered until ``max_size`` are waiting or ``max_wait``
    seconds have passed since the first one, then handed over together.
    The processor returns one result per payload, in their order (values,
    ``Ok`` or ``Error``); each event is answered with its own. An exception
    it raises, or a list of the wrong length, answers every event of the
    batch with that error. ``timeout`` applies to each batch; ``retry`` and
    the limits do not apply to batches.

    :param max_size: the most payloads in one batch.
    :param max_wait: the longest a payload waits for its batch to fill, in
        seconds.
    """

    # The batch call wrapped by instrumentation (see _probes), or None.
    _probed_batch: Callable[[list[Payload[Any]]], Awaitable[Sequence[Any]]] | None = (
        None
    )

    def __init__(
        self,
        key: str,
        processor: BatchProcessor,
        *,
        max_size: int = 100,
        max_wait: float = 0.05,
        topics: Iterable[str] | None = None,
        ctx: Context | None = None,
        lifecycle: LifecycleManager | None = None,
        timeout: float | None = None,
    ) -> None:
        if not callable(processor) or _is_sync(processor):
            raise ConfigError(
                f"BatchCollector {key!r}: processor must be an async function "
                f"(async def processor(payloads, ctx)) (got processor={processor!r})"
            )
        super().__init__(
            key, topics=topics, ctx=ctx, lifecycle=lifecycle, timeout=timeout
        )
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
            raise ConfigError(
                f"BatchCollector {key!r}: max_size must be an int of at least 1 "
                f"(got max_size={max_size!r})"
            )
        if (
            isinstance(max_wait, bool)
            or not isinstance(max_wait, int | float)
            or not is_finite(max_wait)
            or max_wait < 0
        ):
            raise ConfigError(
                f"BatchCollector {key!r}: max_wait must be a number of seconds >= 0 "
                f"(got max_wait={max_wait!r})"
            )
        self.batch_processor: BatchProcessor = processor
        """The processor of a list of payloads."""
        self.max_size: int = max_size
        """The most payloads in one batch."""
        self.max_wait: float = float(max_wait)
        """The longest a payload waits for its batch, in seconds."""

    async def process(self, payload: Payload[Any]) -> Any:
        """Handle one payload as a batch of one (what a custom router that
        calls the collector directly gets)."""
        results = await self.process_batch([payload])
        return results[0]

    async def process_batch(self, payloads: list[Payload[Any]]) -> Sequence[Any]:
        """Hand ``payloads`` to the processor and return its results."""
        return await self.batch_processor(payloads, self.ctx)


CollectorList = TypeAliasType("CollectorList", Sequence[Collector | type[Collector]])
"""What ``CollectorQueue`` takes: collector instances or subclasses."""

CollectorDict = TypeAliasType("CollectorDict", Mapping[str, Collector])
"""Collectors by key, as routers receive them."""
