"""``event-collector worker``: its options, what ``MODULE:ATTR`` names, and
the transport and logging it runs with (the run itself is
:mod:`._worker_run`)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._cli_common import (
    REDIS_SCHEMES,
    CannotRun,
    Refused,
    add_stream_options,
    is_terminal,
    non_negative,
    port,
    positive,
    positive_int,
    require_redis,
)
from ._models import QueueType
from ._worker_run import PoolOptions, serve
from .collector import Collector, _check_collectors
from .exceptions import ConfigError
from .queue import (
    CONSUMER_SHUTDOWN_TIMEOUT,
    DEFAULT_MAX_CONSUMERS,
    DEFAULT_MIN_CONSUMERS,
)

if TYPE_CHECKING:
    from .redis import RedisTransport

__all__ = ["add_worker_parser", "collectors_from", "import_target", "worker_command"]

_WORKER_EXAMPLE = "myapp.handlers:collectors"
_QUEUE_TYPES = {"fifo": QueueType.FIFO, "priority": QueueType.PRIORITY}


def add_worker_parser(commands: Any) -> None:
    """Add ``worker`` to the ``event-collector`` subcommands."""
    worker: argparse.ArgumentParser = commands.add_parser(
        "worker",
        help="run collectors as one worker of a fleet sharing a Redis stream",
        description="Run the collectors MODULE:ATTR names on a CollectorQueue "
        "whose events come from a Redis stream, as one worker of a fleet: "
        "start as many as the load needs, on as many machines, with the same "
        "--redis and --stream. Logs 'worker ready' once it takes events. "
        "SIGTERM or SIGINT (Ctrl-C) shuts it down gracefully: it takes no new "
        "event, gives back at once what it has not started, lets its running "
        "handlers finish within --consumer-shutdown-timeout, and exits with "
        "status 0; a second signal cuts the drain short (the cancelled events "
        "go to another worker). Logs go to stderr, through structlog's "
        "defaults unless MODULE configures structlog itself. Needs the redis "
        "extra: pip install 'event-collector[redis]'.",
    )
    worker.set_defaults(run=worker_command, worker_parser=worker)
    worker.add_argument(
        "target",
        metavar="MODULE:ATTR",
        help="where the collectors are, as in "
        f"{_WORKER_EXAMPLE}: MODULE is imported (from the current folder or "
        "the Python path), ATTR is a list of Collector instances or Collector "
        "subclasses (instantiated with no arguments), or a function (async or "
        "not) that returns one, called with no arguments once the worker's "
        "event loop runs",
    )
    worker.add_argument(
        "--redis",
        required=True,
        metavar="URL",
        help="the Redis to connect to: redis://HOST:PORT/DB, rediss:// for TLS, "
        "redis://USER:PASSWORD@HOST:PORT/DB for an ACL user, or unix://PATH "
        "(required)",
    )
    add_stream_options(worker)
    worker.add_argument(
        "--queue-type",
        choices=sorted(_QUEUE_TYPES),
        default="fifo",
        help="fifo: one stream, taken in order; priority: a stream per "
        "priority band, the most urgent read first (default: fifo)",
    )
    worker.add_argument(
        "--min-consumers",
        type=positive_int,
        metavar="N",
        default=DEFAULT_MIN_CONSUMERS,
        help="fewest consumers in this worker's pool (default: %(default)s)",
    )
    worker.add_argument(
        "--max-consumers",
        type=positive_int,
        metavar="N",
        default=DEFAULT_MAX_CONSUMERS,
        help="most consumers in this worker's pool: the events it handles at "
        "once, and its capacity in the fleet view's desired worker count "
        "(default: %(default)s)",
    )
    worker.add_argument(
        "--consumer-shutdown-timeout",
        type=non_negative,
        default=CONSUMER_SHUTDOWN_TIMEOUT,
        metavar="SECONDS",
        help="at shutdown, how long running handlers may go on before they are "
        "cancelled and their events left for another worker (default: "
        "%(default)s)",
    )
    worker.add_argument(
        "--visibility-timeout",
        type=positive,
        default=None,
        metavar="SECONDS",
        help="after how long without its heartbeat a dead worker's events go "
        "to another worker; a live worker keeps them however long its "
        "handlers run (default: 30)",
    )
    worker.add_argument(
        "--max-deliveries",
        type=positive_int,
        default=None,
        metavar="N",
        help="deliveries of an event at most (a worker died with it each time) "
        "before it goes to the dead-letter stream NAME:dead (default: 5)",
    )
    worker.add_argument(
        "--prometheus-port",
        type=port,
        default=None,
        metavar="PORT",
        help="serve this worker's metrics for Prometheus on http://0.0.0.0:PORT/ "
        "(0 picks a free port, which the ready line names); needs the "
        "prometheus extra (default: not served)",
    )


def import_target(target: str) -> Any:
    """The object ``MODULE:ATTR`` names (``ATTR`` may be dotted).

    :raises Refused: ``target`` is malformed, its module does not exist
        or has no such attribute. An exception the module raises while it
        is imported propagates: it is the application's, with its
        traceback.
    """
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute or module_name.startswith("."):
        raise Refused(
            "MODULE:ATTR must name a module and an attribute in it, as in "
            f"{_WORKER_EXAMPLE} (got {target!r})"
        )
    # The console script's path starts at its own folder, not at the current
    # one, where the application usually is (python -m puts it there).
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name + ".").startswith(missing + "."):
            raise Refused(
                f"no module named {missing!r} (in {target!r}; modules are "
                "imported from the current folder and the Python path)"
            ) from None
        raise
    value: Any = module
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise Refused(
                f"module {module_name!r} has no attribute {attribute!r} (in {target!r})"
            ) from None
    return value


def _is_collector(value: Any) -> bool:
    return isinstance(value, Collector) or (
        isinstance(value, type) and issubclass(value, Collector)
    )


async def collectors_from(value: Any, target: str) -> list[Collector]:
    """The collectors ``value`` names: a list (or a single one), or what a
    function returns (awaited if it is awaitable).

    :raises Refused: ``value`` does not name collectors.
    """
    where = target
    if not _is_collector(value) and not isinstance(value, Sequence) and callable(value):
        value = value()
        if inspect.isawaitable(value):
            value = await value
        where = f"{target}() returned {type(value).__name__}"
    if _is_collector(value):
        value = [value]
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise Refused(
            f"{where} is not a list of collectors: MODULE:ATTR must name a list "
            "of Collector instances or subclasses, or a function that returns "
            f"one (got {value!r})"
        )
    try:
        return _check_collectors(value)
    except ConfigError as exc:
        raise Refused(f"{where} does not name collectors: {exc}") from None


def _transport_from(args: argparse.Namespace) -> RedisTransport:
    from .redis import RedisTransport

    # Only what was given: the transport's own defaults hold for the rest.
    options = {
        name: getattr(args, name)
        for name in ("group", "visibility_timeout", "max_deliveries")
        if getattr(args, name) is not None
    }
    try:
        return RedisTransport(args.redis, stream=args.stream, **options)
    except ConfigError as exc:
        raise Refused(str(exc)) from None


def _configure_logging() -> None:
    """structlog's defaults, but on stderr (and in colour only on a
    terminal), unless the application configured structlog on import."""
    import structlog

    if structlog.is_configured():
        return
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.StackInfoRenderer(),
            structlog.dev.set_exc_info,
            structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False),
            structlog.dev.ConsoleRenderer(colors=is_terminal(sys.stderr)),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def worker_command(args: argparse.Namespace) -> int:
    """Run ``event-collector worker``; return the exit status.

    :raises Refused: the arguments are refused (exit status 2).
    :raises CannotRun: a package it needs is missing (exit status 1).
    """
    parser: argparse.ArgumentParser = args.worker_parser
    if args.max_consumers < args.min_consumers:
        parser.error(
            "--max-consumers must be >= --min-consumers (got "
            f"--max-consumers={args.max_consumers}, "
            f"--min-consumers={args.min_consumers})"
        )
    if not args.redis.startswith(REDIS_SCHEMES):
        raise Refused(
            f"--redis must be a redis://, rediss:// or unix:// URL (got {args.redis!r})"
        )
    require_redis("worker")
    if args.prometheus_port is not None:
        try:
            importlib.import_module("prometheus_client")
        except ImportError:
            raise CannotRun(
                "event-collector worker --prometheus-port needs prometheus_client, "
                "which is not installed.\nInstall it with the prometheus extra: "
                "pip install 'event-collector[prometheus]'"
            ) from None
    value = import_target(args.target)
    _configure_logging()
    transport = _transport_from(args)
    options = PoolOptions(
        min_consumers=args.min_consumers,
        max_consumers=args.max_consumers,
        consumer_shutdown_timeout=args.consumer_shutdown_timeout,
        queue_type=_QUEUE_TYPES[args.queue_type],
        prometheus_port=args.prometheus_port,
    )

    async def collectors() -> list[Collector]:
        return await collectors_from(value, args.target)

    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        return runner.run(serve(collectors, transport, options))
