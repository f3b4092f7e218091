"""The transports the delivery-contract tests run on.

A contract module imports :func:`pytest_generate_tests` and the
:func:`_on_transport` fixture from here and builds its queues with
:func:`make_queue`: each of its tests then runs once per transport, as
``test_x[memory]``. A test that holds for some transports only says so with
``@pytest.mark.transports("memory")``, which is where two transports
promise different things.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from event_collector import Collector, CollectorQueue
from event_collector.transport import MemoryTransport, Transport

TRANSPORTS: dict[str, Callable[[], Transport]] = {"memory": MemoryTransport}
"""A factory of a new transport, by the name the test ids carry."""

_current = ["memory"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "transport_name" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("transports")
        names = list(marker.args) if marker else sorted(TRANSPORTS)
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
