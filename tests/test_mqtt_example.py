"""The MQTT ingestion example (``examples/mqtt_ingest``), end to end.

Each test starts its own ``mosquitto`` on a free loopback port, runs the
example as a user would (``python -m examples.mqtt_ingest.app``, in a child
process), publishes readings with aiomqtt and looks at what comes out: the
result messages on ``results/#``, the lines the ``store`` collector wrote,
the example's JSON log lines and its exit status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from conftest import wait_for
from mosquitto_server import (
    STANDARD_PORT,
    MosquittoServer,
    mosquitto_server,  # noqa: F401
    require_mosquitto,
)

ROOT = Path(__file__).resolve().parent.parent
GUARD = 60.0
"""Seconds any wait of these tests may take before it fails the test: a
bound for a shared, busy machine, never a way to order things."""


class Ingester:
    """The example running in a child process, its log in a file."""

    def __init__(
        self,
        broker: MosquittoServer,
        directory: Path,
        client_id: str,
        topic_filter: str = "sensors/+/reading",
    ) -> None:
        self.directory = directory
        self.store = directory / "readings.jsonl"
        self.log_path = directory / f"{client_id}.{id(self):x}.log"
        command = [
            *(sys.executable, "-m", "examples.mqtt_ingest.app"),
            *("--broker", broker.url, "--topic", topic_filter),
            *("--results", "results", "--client-id", client_id),
            *("--store", str(self.store)),
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def lines(self) -> list[dict[str, Any]]:
        """The JSON log lines so far (a line of another form is skipped)."""
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    found.append(record)
        return found

    def logged(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        """The log lines of ``event`` that have every field of ``fields``."""
        return [
            line
            for line in self.lines()
            if line.get("event") == event
            and all(line.get(k) == v for k, v in fields.items())
        ]

    async def until_logged(self, event: str, count: int = 1, **fields: Any) -> None:
        """Wait until ``event`` is logged ``count`` times; fail if it exits."""

        def seen() -> bool:
            assert self.process.poll() is None, self.output()
            return len(self.logged(event, **fields)) >= count

        await wait_for(seen, guard=GUARD, poll=0.02)

    def stored(self) -> list[dict[str, Any]]:
        """The records the ``store`` collector wrote, in order."""
        if not self.store.exists():
            return []
        text = self.store.read_text()
        return [json.loads(line) for line in text.splitlines() if line]

    async def terminate(self) -> int:
        """SIGTERM, then the exit status (killed after ``GUARD``)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.process.wait, GUARD)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"no exit {GUARD} s after SIGTERM\n{self.output()}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.asynccontextmanager
async def ingester(
    broker: MosquittoServer,
    directory: Path,
    client_id: str = "ingest",
    topic_filter: str = "sensors/+/reading",
) -> AsyncIterator[Ingester]:
    """An ingester, subscribed when given; killed after the block if it
    still runs there."""
    running = Ingester(broker, directory, client_id, topic_filter)
    try:
        await running.until_logged("mqtt subscribed")
        yield running
    finally:
        running.kill()


class Results:
    """The result messages on ``results/#``, by the topic they answer."""

    def __init__(self) -> None:
        self.by_topic: dict[str, list[dict[str, Any]]] = {}

    def __len__(self) -> int:
        return len(self.by_topic)

    async def collect(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            body = json.loads(message.payload)
            assert message.topic.value == f"results/{body['topic']}"
            self.by_topic.setdefault(body["topic"], []).append(body)


@contextlib.asynccontextmanager
async def mqtt_client(broker: MosquittoServer) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client("127.0.0.1", broker.port, timeout=GUARD) as client:
        yield client


@contextlib.asynccontextmanager
async def results_of(broker: MosquittoServer) -> AsyncIterator[Results]:
    """Results collected from a subscription made before the block starts."""
    results = Results()
    async with mqtt_client(broker) as client:
        await client.subscribe("results/#", qos=1)
        collector = asyncio.create_task(results.collect(client))
        try:
            yield results
        finally:
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collector


async def publish(client: aiomqtt.Client, topic: str, body: Any) -> None:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    await client.publish(topic, payload, qos=1)


def reading_topic(n: int) -> str:
    return f"sensors/s{n}/reading"


# -- messages in, results out --------------------------------------------------


@pytest.mark.slow
async def test_each_reading_is_stored_and_answered_on_the_results_topic(
    mosquitto_server: MosquittoServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    good: dict[str, dict[str, Any]] = {
        reading_topic(n): {"value": 10 * n, "unit": "C"} for n in range(20)
    }
    async with (
        ingester(mosquitto_server, tmp_path) as app,
        results_of(mosquitto_server) as results,
        mqtt_client(mosquitto_server) as client,
    ):
        topics = list(good)
        for topic in topics[:10]:
            await publish(client, topic, good[topic])
        # Not JSON, then JSON without a value: neither stops what follows.
        await publish(client, "sensors/broken/reading", b"{not json")
        await publish(client, "sensors/novalue/reading", {"unit": "C"})
        for topic in topics[10:]:
            await publish(client, topic, good[topic])
        await wait_for(lambda: len(results) == 21, guard=GUARD)
        await app.until_logged("malformed mqtt message")
        code = await app.terminate()
    assert code == 0, app.output()

    stored = app.stored()
    assert sorted(r["topic"] for r in stored) == sorted(
        [*good, "sensors/novalue/reading"]
    )
    ids = {r["topic"]: r["event_id"] for r in stored}
    assert len(set(ids.values())) == 21
    for record in stored:
        assert record["reading"] == good.get(record["topic"], {"unit": "C"})

    assert "sensors/broken/reading" not in results.by_topic
    for topic, reading in good.items():
        (answer,) = results.by_topic[topic]
        assert answer == {
            "topic": topic,
            "event_id": ids[topic],
            "results": {
                "store": {"ok": True, "value": ids[topic]},
                "alarm": {"ok": True, "value": reading["value"] >= 100},
            },
        }
    (novalue,) = results.by_topic["sensors/novalue/reading"]
    assert novalue["results"]["store"] == {"ok": True, "value": ids[novalue["topic"]]}
    assert novalue["results"]["alarm"] == {
        "ok": False,
        "error": "ValueError: the reading has no numeric 'value': {'unit': 'C'}",
    }

    (malformed,) = app.logged("malformed mqtt message")
    assert malformed["topic"] == "sensors/broken/reading"
    assert malformed["level"] == "warning"
    assert malformed["error"].startswith("JSONDecodeError")
    (failed,) = app.logged("collector failed")
    assert failed["collector"] == "alarm"
    assert failed["topic"] == "sensors/novalue/reading"
    (stopped,) = app.logged("mqtt ingest stopped")
    assert stopped | {"timestamp": None} == {
        "event": "mqtt ingest stopped",
        "level": "info",
        "timestamp": None,
        "taken": 21,
        "malformed": 1,
        "failed": 1,
        "unpublished": 0,
    }


@pytest.mark.slow
async def test_results_are_not_taken_again_by_a_filter_that_matches_them(
    mosquitto_server: MosquittoServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    async with (
        ingester(mosquitto_server, tmp_path, topic_filter="#") as app,
        results_of(mosquitto_server) as results,
        mqtt_client(mosquitto_server) as client,
    ):
        await publish(client, "sensors/a/reading", {"value": 1})
        await wait_for(lambda: len(results) == 1, guard=GUARD)
        # The broker delivered the first result to the ingester before this
        # reading, which the ingester takes after it, in order.
        await publish(client, "sensors/b/reading", {"value": 2})
        await wait_for(lambda: len(results) == 2, guard=GUARD)
        code = await app.terminate()
    assert code == 0, app.output()
    assert [r["topic"] for r in app.stored()] == [
        "sensors/a/reading",
        "sensors/b/reading",
    ]
    assert set(results.by_topic) == {"sensors/a/reading", "sensors/b/reading"}
    assert app.logged("mqtt ingest stopped")[0]["taken"] == 2


# -- a stop loses nothing ------------------------------------------------------


@pytest.mark.slow
async def test_sigterm_answers_what_came_in_and_the_broker_keeps_the_rest(
    mosquitto_server: MosquittoServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """SIGTERM while readings keep coming: the first run handles and answers
    every message it received and exits 0; the broker queues the others for
    its session, and a second run with the same client id gets them. No
    reading is lost across the two."""
    total = 300
    topics = [reading_topic(n) for n in range(total)]
    during, while_away = topics[:200], topics[200:]
    async with results_of(mosquitto_server) as results:
        async with (
            ingester(mosquitto_server, tmp_path) as first,
            mqtt_client(mosquitto_server) as client,
        ):

            async def publish_all() -> None:
                for n, topic in enumerate(during):
                    await publish(client, topic, {"value": n})

            publishing = asyncio.create_task(publish_all())
            try:
                await wait_for(lambda: len(first.stored()) >= 30, guard=GUARD)
                code = await first.terminate()
                await asyncio.wait_for(publishing, GUARD)
            finally:
                publishing.cancel()
            # No ingester runs now: the broker queues these for its session.
            for topic in while_away:
                await publish(client, topic, {"value": 0})
        assert code == 0, first.output()
        (stopped,) = first.logged("mqtt ingest stopped")
        handled = {r["topic"] for r in first.stored()}
        # Everything the first run took was stored, answered and published:
        # its shutdown cancelled nothing.
        assert stopped["taken"] == len(first.stored())
        assert stopped["unpublished"] == 0
        assert first.logged("collector queue shut down")[0]["cancelled"] == 0
        assert handled <= set(during)
        first_count = len(first.stored())

        async with ingester(mosquitto_server, tmp_path) as second:
            await wait_for(
                lambda: {r["topic"] for r in second.stored()} == set(topics),
                guard=GUARD,
            )
            await wait_for(lambda: len(results) == total, guard=GUARD)
            code = await second.terminate()
        assert code == 0, second.output()
    assert set(results.by_topic) == set(topics)
    # What came while no ingester ran reached the second one.
    taken_later = {r["topic"] for r in second.stored()[first_count:]}
    assert set(while_away) <= taken_later


# -- the broker goes away ------------------------------------------------------


@pytest.mark.slow
async def test_the_ingester_reconnects_after_the_broker_restarts(
    mosquitto_server: MosquittoServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    before = [reading_topic(n) for n in range(5)]
    after = [reading_topic(n) for n in range(5, 10)]
    async with ingester(mosquitto_server, tmp_path) as app:
        async with (
            results_of(mosquitto_server) as results,
            mqtt_client(mosquitto_server) as client,
        ):
            for topic in before:
                await publish(client, topic, {"value": 1})
            await wait_for(lambda: len(results) == 5, guard=GUARD)
        await asyncio.to_thread(mosquitto_server.restart)
        # The restarted broker has no session: the ingester subscribes anew.
        await app.until_logged("mqtt connection lost", link="intake")
        await app.until_logged("mqtt subscribed", count=2)
        async with results_of(mosquitto_server) as results:
            async with mqtt_client(mosquitto_server) as client:
                for topic in after:
                    await publish(client, topic, {"value": 2})
                await wait_for(lambda: len(results) == 5, guard=GUARD)
            assert set(results.by_topic) == set(after)
        code = await app.terminate()
    assert code == 0, app.output()
    assert sorted(r["topic"] for r in app.stored()) == sorted(before + after)
    assert app.logged("mqtt ingest stopped")[0]["unpublished"] == 0


# -- options and the fixture ---------------------------------------------------


@pytest.mark.parametrize(
    ("option", "said"),
    [
        (["--broker", "http://127.0.0.1:1883"], "--broker must be mqtt://"),
        (["--broker", "mqtt://127.0.0.1:99999"], "Port out of range"),
        (["--topic", "sensors/#/reading"], "Invalid wildcard"),
        (["--results", "results/+"], "Invalid topic"),
    ],
)
def test_a_bad_option_is_refused_before_anything_starts(
    option: list[str], said: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "examples.mqtt_ingest.app", *option],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=GUARD,
        check=False,
    )
    assert proc.returncode == 2
    assert said in proc.stderr


def test_a_test_broker_never_takes_the_standard_port(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="1883 belongs to the system broker"):
        MosquittoServer(tmp_path, port=STANDARD_PORT)


@pytest.mark.parametrize(
    ("env", "fails"),
    [
        ({}, False),
        ({"CI": "0"}, False),
        ({"CI": "false"}, False),
        ({"EVENT_COLLECTOR_REQUIRE_MQTT": "0"}, False),
        ({"CI": "true"}, True),
        ({"EVENT_COLLECTOR_REQUIRE_MQTT": "1"}, True),
    ],
)
def test_no_mosquitto_skips_except_in_ci(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], fails: bool
) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("EVENT_COLLECTOR_REQUIRE_MQTT", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("mosquitto_server._SBIN", ("/nonexistent",))
    expected = pytest.fail.Exception if fails else pytest.skip.Exception
    with pytest.raises(expected, match="mosquitto is not on PATH"):
        require_mosquitto()
