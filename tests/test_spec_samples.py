"""The two code samples of the specification page (``queue.rst``) run as
written, with the page's two typos fixed:

* ``from event_collector.queue import event_collector.messagebus as bus``
  reads ``import event_collector.messagebus as bus``;
* ``async run_collector_queue()`` reads ``async def run_collector_queue()``.

The second sample also matches on ``Error`` and ``Ok`` without importing
them, which fails with a ``NameError`` at the first ``match``; it runs here
with ``from event_collector import Error, Ok`` added next to its other
import from the package.

``your_application.event_handler`` is provided by the test as a module, so
the samples' own import lines run unchanged.
"""

from __future__ import annotations

import asyncio
import re
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest

from event_collector import CollectorQueue, Context, Payload

SPEC_PAGE = Path(__file__).resolve().parents[2] / "shared" / "spec" / "queue.rst"

MESSAGE_BUS_SAMPLE = """\
from event_collector import Collector, CollectorQueue
from your_application import event_handler

# import messagebus module and bus events
import event_collector.messagebus as bus
from event_collector.queue import InitializedQueue, ShutDownQueue

# define message handlers for each "BusEvent" we want to listen to
async def handle_init_queue(msg: InitializedQueue, queue: bus.BusEventQueue) -> None:
    print("collector queue initialized")

async def handle_shut_down_queue(msg: ShutDownQueue, queue: bus.BusEventQueue) -> None:
    print("collector queue has shut down")

collector = Collector("demo-collector", event_handler)
collectors = [collector]
collector_queue = CollectorQueue(collectors)

# add message handlers to the collector queue message bus
msgbus = collector_queue.get_message_bus()
msgbus.add_msg_handler(InitializedQueue, handle_init_queue)
msgbus.add_msg_handler(ShutDownQueue, handle_shut_down_queue)
"""

CONTEXT_MANAGER_SAMPLE = """\
import asyncio
import sys

from event_collector import Collector, CollectorQueue
from event_collector import Error, Ok
from your_application import event_handler

async def run_collector_queue() -> None:
    collector = Collector("demo-collector", event_handler)
    collectors = [collector]
    min_consumers = 1
    max_consumers = 1000

    collector_queue = CollectorQueue(
        collectors,
        min_consumers=min_consumers,
        max_consumers=max_consumers,
    )

    async with collector_queue:
        publisher = collector_queue.get_publisher()
        collector_events = []
        for i in range(100):
            payload = {
                "data": f"payload-{i}",
            }
            event = await publisher.send(payload)
            collector_events.append(event)

        for event in collector_events:
            result_list = await event.wait()
            result = result_list.first()
            match result:
                case Error(_):
                    result.unwrap()
                case Ok(value):
                    print(value)

async def main() -> None:
    await run_collector_queue()

if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
"""

ADDED_IMPORT = "from event_collector import Error, Ok\n"


class HandlerFailed(Exception):
    pass


async def event_handler(payload: Payload[Any], ctx: Context) -> Any:
    """The application's handler: answers ``handled <data>``."""
    data = payload.value["data"]
    if data == "payload-fail":
        raise HandlerFailed(data)
    return f"handled {data}"


@pytest.fixture
def your_application(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("your_application")
    module.event_handler = event_handler  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "your_application", module)
    return module


def run_sample(source: str, name: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": name}
    exec(compile(source, f"<spec sample {name}>", "exec"), namespace)
    return namespace


def printed(out: str, prefix: str) -> list[str]:
    """The sample's own prints, without structlog's default console lines."""
    return [line for line in out.splitlines() if line.startswith(prefix)]


def test_message_bus_sample(
    your_application: types.ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace = run_sample(MESSAGE_BUS_SAMPLE, "message_bus_sample")
    collector_queue = namespace["collector_queue"]
    assert isinstance(collector_queue, CollectorQueue)
    assert capsys.readouterr().out == "", "registering handlers prints nothing"

    async def run_queue() -> list[str]:
        async with collector_queue:
            event = await collector_queue.get_publisher().send({"data": "x"})
            return [result.unwrap() for result in await event.wait()]

    assert asyncio.run(run_queue()) == ["handled x"]
    assert printed(capsys.readouterr().out, "collector queue ") == [
        "collector queue initialized",
        "collector queue has shut down",
    ]


def test_context_manager_sample_runs_as_a_script(
    your_application: types.ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        run_sample(CONTEXT_MANAGER_SAMPLE, "__main__")
    assert info.value.code == 0
    assert printed(capsys.readouterr().out, "handled ") == [
        f"handled payload-{i}" for i in range(100)
    ]


def test_context_manager_sample_raises_a_handlers_error(
    your_application: types.ModuleType,
) -> None:
    # ``case Error(_): result.unwrap()`` re-raises what the handler raised.
    source = CONTEXT_MANAGER_SAMPLE.replace('f"payload-{i}"', '"payload-fail"')
    namespace = run_sample(source, "imported_sample")
    with pytest.raises(HandlerFailed, match="payload-fail"):
        asyncio.run(namespace["main"]())


def test_context_manager_sample_needs_the_import_the_page_leaves_out(
    your_application: types.ModuleType,
) -> None:
    namespace = run_sample(
        CONTEXT_MANAGER_SAMPLE.replace(ADDED_IMPORT, ""), "imported_sample"
    )
    with pytest.raises(NameError, match="Error"):
        asyncio.run(namespace["main"]())


def page_samples() -> list[str]:
    text = SPEC_PAGE.read_text(encoding="utf-8")
    blocks = re.findall(
        r"^\.\. code-block:: python\n\n((?:(?:   .*)?\n)+)", text, re.MULTILINE
    )
    return [textwrap.dedent(block).strip("\n") + "\n" for block in blocks]


@pytest.mark.skipif(not SPEC_PAGE.exists(), reason="the specification page is not here")
def test_samples_are_the_pages_own() -> None:
    bus_sample, cm_sample = page_samples()
    fixed_bus = bus_sample.replace(
        "from event_collector.queue import event_collector.messagebus as bus",
        "import event_collector.messagebus as bus",
    )
    fixed_cm = cm_sample.replace(
        "async run_collector_queue()", "async def run_collector_queue()"
    )
    assert fixed_bus != bus_sample
    assert fixed_cm != cm_sample
    assert fixed_bus == MESSAGE_BUS_SAMPLE
    assert fixed_cm == CONTEXT_MANAGER_SAMPLE.replace(ADDED_IMPORT, "")
