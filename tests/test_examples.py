"""Tests of the programs in examples/."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a fresh module."""
    spec = importlib.util.spec_from_file_location(
        f"example_{name}", EXAMPLES / f"{name}.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_prints_every_result() -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"processed payload-{i}" for i in range(100)]
    # The example's structlog configuration: INFO on stderr, DEBUG dropped.
    assert "collector queue started" in proc.stderr
    assert "collector queue shut down" in proc.stderr
    assert "consumers added" not in proc.stderr


@pytest.fixture
def starlette_app() -> ModuleType:
    return load_example("starlette_app")


async def test_starlette_app_publishes_posted_bodies(
    starlette_app: ModuleType,
) -> None:
    app = starlette_app.app
    transport = httpx.ASGITransport(app=app)
    # ASGITransport does not run the lifespan: enter it here.
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        queue = app.state.queue
        assert queue.is_running

        ok = await client.post("/events", json={"order": 42, "items": 3})
        assert ok.status_code == 200
        assert ok.json() == {
            "results": {
                "store": {"ok": True, "value": {"stored": {"order": 42, "items": 3}}},
                "count": {"ok": True, "value": 2},
            }
        }

        mixed = await client.post("/events", json=[1, 2])
        assert mixed.status_code == 200
        results = mixed.json()["results"]
        assert results["store"] == {"ok": True, "value": {"stored": [1, 2]}}
        assert results["count"]["ok"] is False
        assert results["count"]["error"].startswith("ValueError: expected a JSON")

        bad = await client.post("/events", content=b"{not json")
        assert bad.status_code == 400

        many = await asyncio.gather(
            *(client.post("/events", json={"n": n}) for n in range(50))
        )
        assert [r.json()["results"]["store"]["value"]["stored"]["n"] for r in many] == (
            list(range(50))
        )

        scraped = (await client.get("/metrics")).text
    assert not queue.is_running

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(scraped)
        for s in family.samples
    }
    assert samples[
        ("event_collector_events_processed_total", (("queue", "http"),))
    ] == (52)
    errors = (
        "event_collector_errors_total",
        (("kind", "ValueError"), ("queue", "http")),
    )
    assert samples[errors] == 1


async def test_starlette_app_answers_503_once_the_queue_has_shut_down(
    starlette_app: ModuleType,
) -> None:
    app = starlette_app.app
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        async with app.router.lifespan_context(app):
            before = await client.post("/events", json={"order": 1})
        # The lifespan's exit has shut the queue down; a late request comes in.
        assert not app.state.queue.is_running
        after = await client.post("/events", json={"order": 2})
    assert before.status_code == 200
    assert after.status_code == 503
    assert after.json() == {"error": "shutting down"}
