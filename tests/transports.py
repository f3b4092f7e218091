"""The transports the delivery-contract tests run on.

A contract module imports :func:`pytest_generate_tests` and the
:func:`_on_transport` fixture from here and builds its queues with
:func:`make_queue`: each of its tests then runs once per transport, as
``test_x[memory]``. A test that holds for some transports only says so with
``@pytest.mark.transports("memory")``, which is where two transports
promise different things.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from event_collector import Collector, CollectorQueue, Ok
from event_collector.redis import RedisTransport
from event_collector.transport import MemoryTransport, Transport
from redis_server import RedisServer, require_redis_server

_server: list[RedisServer] = []
_streams = itertools.count(1)


def _redis() -> Transport:
    """A Redis transport on a stream of its own, on one server shared by the
    whole session (started on first use, killed at exit)."""
    if not _server:
        require_redis_server()
        directory = Path(tempfile.mkdtemp(prefix="event-collector-contract-"))
        _server.append(RedisServer(directory).start())
    return RedisTransport(
        _server[0].url, stream=f"contract-{next(_streams)}", visibility_timeout=5.0
    )


TRANSPORTS: dict[str, Callable[[], Transport]] = {
    "memory": MemoryTransport,
    "redis": _redis,
}
"""A factory of a new transport, by the name the test ids carry."""

_REMOTE_ERRORS = (
    "an exception crosses processes as Error(RemoteError) naming its type "
    "and message: the exception object, its traceback and a base exception's "
    "class stay in the worker (test_redis checks RemoteError)"
)
_HANDED_BACK = (
    "a stopping worker hands what it has not started back to the stream for "
    "the other workers instead of draining it, and its own publisher answers "
    "what it still waits for with EventCancelled (test_redis checks the "
    "hand-back)"
)
_FLEET_BACKLOG = (
    "qsize and maxsize count the stream's backlog, shared by the fleet and "
    "counted in Redis twice a second, not a local queue (test_redis checks "
    "maxsize)"
)

DIFFERS_ON_REDIS: dict[str, str] = {
    # test_contract
    "test_send_is_refused_from_the_moment_shutdown_starts": _HANDED_BACK,
    "test_concurrent_shutdowns_share_one": _HANDED_BACK,
    "test_shutdown_from_inside_a_handler": _HANDED_BACK,
    "test_request_shutdown_from_a_signal_handler": _HANDED_BACK,
    "test_an_observer_sees_every_event_exactly_once": _HANDED_BACK,
    "test_handler_exception_is_an_error_with_traceback": _REMOTE_ERRORS,
    "test_handler_own_timeout_error_is_kept": _REMOTE_ERRORS,
    "test_handler_raising_cancelled_error_is_an_error": _REMOTE_ERRORS,
    "test_handler_timeout_answers_timeout_error_and_consumer_lives": _REMOTE_ERRORS,
    "test_plain_values_and_results": _REMOTE_ERRORS,
    "test_bounded_send_waits_for_room": _FLEET_BACKLOG,
    "test_qsize_never_exceeds_maxsize": _FLEET_BACKLOG,
    "test_handler_publishing_into_its_own_full_queue_does_not_block_shutdown": (
        _FLEET_BACKLOG
    ),
    "test_republishing_handlers_under_load_then_shutdown": _FLEET_BACKLOG,
    # test_hardening
    "test_a_base_exception_in_a_handler_does_not_stall_the_shutdown": _REMOTE_ERRORS,
    "test_a_broken_log_destination_and_a_raising_handler": _REMOTE_ERRORS,
    "test_a_handler_raising_a_base_exception_is_answered_with_it": _REMOTE_ERRORS,
    "test_the_shutdown_log_counts_cancelled_events": _HANDED_BACK,
}
"""The contract tests whose promise differs on Redis, and why: they run in
memory only. Everything else in the contract suites runs on both."""

_current = ["memory"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "transport_name" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("transports")
        if marker:
            names = list(marker.args)
        elif metafunc.definition.originalname in DIFFERS_ON_REDIS:
            names = ["memory"]
        elif metafunc.definition.get_closest_marker("looptime"):
            # A loop whose clock the test moves by hand cannot time a real
            # network: these tests run in memory only.
            names = ["memory"]
        else:
            names = sorted(TRANSPORTS)
        unknown = set(names) - set(TRANSPORTS)
        assert not unknown, f"unknown transports {unknown}"
        metafunc.parametrize("transport_name", names)


@pytest.fixture(autouse=True)
def _on_transport(transport_name: str) -> Iterator[str]:
    """Make :func:`make_queue` build its queues on ``transport_name``."""
    _current[0] = transport_name
    yield transport_name
    _current[0] = "memory"


def make_queue(
    collectors: Sequence[Collector | type[Collector]], *args: Any, **kwargs: Any
) -> CollectorQueue:
    """A ``CollectorQueue`` on the transport the running test is on."""
    return CollectorQueue(
        collectors, *args, transport=TRANSPORTS[_current[0]](), **kwargs
    )


# -- helpers of the contract modules that test what an event carries ----------

GUARD = 30.0
"""A wide guard (seconds): a test that reaches it has hung, not run slowly."""


def queue_of(*collectors: Collector, **options: Any) -> CollectorQueue:
    """:func:`make_queue` of ``collectors``, silent unless told otherwise."""
    options.setdefault("logging", False)
    return make_queue(list(collectors), **options)


async def results_of(event: Any) -> list[Any]:
    """The results of ``event`` as a plain list, within :data:`GUARD`."""
    async with asyncio.timeout(GUARD):
        return list(await event)


def value_of(results: list[Any]) -> Any:
    """The value of a lone collector's result (failing on an error)."""
    (result,) = results
    assert isinstance(result, Ok), result
    return result.value
