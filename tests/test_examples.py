"""Tests of the programs in examples/."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import re
import shlex
import signal
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from conftest import wait_for
from event_collector import Collector, CollectorQueue, Context, Payload
from event_collector.prometheus import instrument
from redis_server import RedisServer, redis_server  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


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


def start_webhook_worker(url: str, stream: str, log: Path) -> subprocess.Popen[bytes]:
    """``event-collector worker`` on the example's collectors, run from the
    checkout as its docstring says; its output goes to ``log``."""
    command = [
        *(sys.executable, "-m", "event_collector", "worker"),
        "examples.redis_webhook.collectors:collectors",
        *("--redis", url, "--stream", stream),
    ]
    with log.open("wb") as output:
        return subprocess.Popen(
            command,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def worker_ready(worker: subprocess.Popen[bytes], log: Path) -> bool:
    """Whether the worker has said it takes events; fails if it exited."""
    output = log.read_text(errors="replace")
    assert worker.poll() is None, output
    return "worker ready" in output


@pytest.mark.slow
async def test_redis_webhook_answers_with_the_workers_results(
    redis_server: RedisServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    stream = "webhooks"
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("WEBHOOK_STREAM", stream)
    monkeypatch.syspath_prepend(str(ROOT))
    app = importlib.import_module("examples.redis_webhook.app").app
    log = tmp_path / "worker.log"
    worker = start_webhook_worker(redis_server.url, stream, log)
    try:
        await wait_for(lambda: worker_ready(worker, log), guard=60, poll=0.05)
        transport = httpx.ASGITransport(app=app)
        # ASGITransport does not run the lifespan: enter it here.
        async with (
            asyncio.timeout(60),
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://test") as client,
        ):
            ok = await client.post("/events", json={"order": 42, "items": 3})
            assert ok.status_code == 200
            answer = ok.json()
            event_id = answer["event_id"]
            assert re.fullmatch(r"\d+-\d+", event_id)
            assert answer["results"] == {
                "store": {
                    "ok": True,
                    "value": {"stored": {"order": 42, "items": 3}, "key": event_id},
                },
                "count": {"ok": True, "value": 2},
            }

            mixed = await client.post("/events", json=[1, 2])
            assert mixed.status_code == 200
            results = mixed.json()["results"]
            assert results["store"]["value"]["stored"] == [1, 2]
            assert results["count"] == {
                "ok": False,
                "error": "ValueError: expected a JSON object, got list",
            }

            bad = await client.post("/events", content=b"{not json")
            assert bad.status_code == 400
            # JSON that the codec does not carry is refused at send.
            nan = await client.post("/events", content=b'{"x": NaN}')
            assert nan.status_code == 422
            assert "json codec refuses it" in nan.json()["error"]

            many = await asyncio.gather(
                *(client.post("/events", json={"n": n}) for n in range(50))
            )
            stored = [r.json()["results"]["store"]["value"]["stored"] for r in many]
            assert stored == [{"n": n} for n in range(50)]
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=60)
    assert code == 0, log.read_text(errors="replace")
    # Every answered entry was deleted with its acknowledgement.
    assert redis_server.client().xlen(stream) == 0


# What the README and the getting-started page say of the name on PyPI.
PYPI_WARNING = "`pip install event-collector` installs the older 0.2.x package"

# Where a user reads an install command.
INSTALL_PAGES = [
    "README.md",
    "BENCHMARKS.md",
    "docs/guide/cli.rst",
    "examples/README.md",
    "examples/starlette_app.py",
    "examples/redis_webhook/app.py",
    "docs/index.rst",
    "docs/getting-started.rst",
    "docs/guide/prometheus.rst",
    "docs/guide/shutdown.rst",
    "examples/mqtt_ingest/README.md",
    "examples/mqtt_ingest/app.py",
    "docs/guide/operating/mqtt.rst",
]


def pip_installs(text: str) -> list[list[str]]:
    """The arguments of every ``pip install`` in ``text``, each command cut
    where its code ends (a backtick, a table cell, ``&&``, the line)."""
    commands = []
    for found in re.finditer(r"pip install ([^`|\n]*)", text):
        line = found[1].split("&&")[0]
        commands.append(shlex.split(line))
    return commands


def test_every_install_command_installs_this_checkout() -> None:
    extras = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
            "optional-dependencies"
        ]
    )
    # The warning, across line breaks, is the one mention of the PyPI name.
    warning = re.compile(r"\s+".join(map(re.escape, PYPI_WARNING.split())))
    for page in ("README.md", "docs/getting-started.rst"):
        assert warning.search((ROOT / page).read_text().replace("``", "`")), page
    checked = 0
    for page in INSTALL_PAGES:
        text = warning.sub("", (ROOT / page).read_text().replace("``", "`"))
        for args in pip_installs(text):
            args = [a for a in args if a != "-q"]
            assert "-e" in args, (page, args)
            target = args[args.index("-e") + 1]
            named = re.fullmatch(r"\.(?:\[([\w,]+)\])?", target)
            assert named, (page, args)
            assert set(filter(None, (named[1] or "").split(","))) <= extras
            others = args[args.index("-e") + 2 :]
            assert not [a for a in others if "event" in a], (page, args)
            checked += 1
    assert checked >= 8


def readme_python() -> str:
    """The first Python block of the README."""
    found = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert found
    return found[1]


def rst_python(page: str) -> str:
    """The first ``code-block:: python`` of a docs page, dedented."""
    lines = (ROOT / "docs" / page).read_text().splitlines()
    start = lines.index(".. code-block:: python") + 2
    block = []
    for line in lines[start:]:
        if line and not line.startswith("   "):
            break
        block.append(line[3:])
    return "\n".join(block).strip("\n") + "\n"


def rst_blocks(page: str) -> list[tuple[str, str, int, str]]:
    """Every ``code-block`` of a docs page: its language, its text (dedented),
    the line of its directive and the prose between it and the block before."""
    lines = (ROOT / "docs" / page).read_text().splitlines()
    blocks = []
    prose_from = 0
    for number, line in enumerate(lines):
        found = re.fullmatch(r"\.\. code-block:: (\w+)", line)
        if not found or number < prose_from:
            continue
        block = []
        for body in lines[number + 2 :]:
            if body and not body.startswith("   "):
                break
            block.append(body[3:])
        text = "\n".join(block).strip("\n") + "\n"
        prose = "\n".join(lines[prose_from:number]).strip()
        blocks.append((found[1], text, number + 1, prose))
        prose_from = number + 2 + len(block)
    return blocks


# The pages a newcomer reads first; every complete program on them must run.
DOC_PAGES = [
    "index.rst",
    "getting-started.rst",
    *sorted(
        str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs/guide").glob("*.rst")
    ),
]


def doc_programs() -> list[Any]:
    """Every complete program of ``DOC_PAGES`` (a Python block that calls
    ``asyncio.run``), with the output the page shows for it: the next block,
    when it is a ``text`` block introduced by "... prints:", else ``None``."""
    programs = []
    for page in DOC_PAGES:
        blocks = rst_blocks(page)
        for i, (language, text, line, _) in enumerate(blocks):
            if language != "python" or "\nasyncio.run(" not in text:
                continue
            shown = None
            if i + 1 < len(blocks):
                after_language, after_text, _, prose = blocks[i + 1]
                if after_language == "text" and prose.endswith("prints:"):
                    shown = after_text
            programs.append(pytest.param(text, shown, id=f"{page}:{line}"))
    return programs


def doc_programs_of(page: str) -> list[str]:
    return [p.values[0] for p in doc_programs() if p.id.startswith(f"{page}:")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def run_program(source: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", source],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_docs_have_programs_with_their_output() -> None:
    programs = doc_programs()
    assert len(programs) >= 8
    assert sum(p.values[1] is not None for p in programs) >= 5


@pytest.mark.parametrize(("source", "shown"), doc_programs())
def test_doc_program_runs_and_prints_what_its_page_shows(
    source: str, shown: str | None, tmp_path: Path
) -> None:
    # The Prometheus page's exporter: a free port, and this machine only.
    source = source.replace(
        "start_http_server(9100)",
        f"start_http_server({free_port()}, addr='127.0.0.1')",
    )
    proc = run_program(source, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    if shown is not None:
        assert proc.stdout == shown


def test_flow_control_guide_runs_a_program_for_each_feature() -> None:
    """Every program of the flow-control page shows its output (so the
    test above compares it), and each feature has one at work."""
    programs = [
        p.values for p in doc_programs() if p.id.startswith("guide/flow-control.rst:")
    ]
    assert len(programs) >= 8
    assert all(shown is not None for _, shown in programs)
    sources = [source for source, _ in programs]
    for feature in (
        "ordering_key=",
        "supersede=True",
        "concurrency=",
        "RateLimit(",
        "Retry(",
        "RetryAfter(",
        "add_msg_handler(DeadLettered",
        "BatchCollector(",
        "consumer_shutdown_timeout=",
        "get_metrics()",
    ):
        assert any(feature in source for source in sources), feature


def test_getting_started_first_queue_prints_only_its_results(tmp_path: Path) -> None:
    first = doc_programs_of("getting-started.rst")[0]
    assert "max_consumers=200" in first
    proc = run_program(first, tmp_path)
    assert proc.returncode == 0, proc.stderr
    # logging=False: the ten results and nothing else.
    assert proc.stdout.splitlines() == [f"saved {n}" for n in range(10)]


def test_getting_started_thread_recipe_runs_blocking_code_in_a_handler() -> None:
    blocks = [
        text
        for language, text, _, _ in rst_blocks("getting-started.rst")
        if language == "python" and "to_thread" in text
    ]
    assert len(blocks) == 1
    namespace: dict[str, Any] = {}
    exec(blocks[0], namespace)

    async def main() -> list[Any]:
        queue = CollectorQueue([Collector("save", namespace["save"])], logging=False)
        async with queue:
            event = await queue.get_publisher().send(5)
            return list(await event.wait())

    assert [r.value for r in asyncio.run(main())] == ["wrote 5"]


async def test_prometheus_guide_counts_what_a_shutdown_answers() -> None:
    """The Prometheus page: the counter counts every answered event, those
    the shutdown answered included; ``Metrics.event_count`` counts only the
    events a consumer took; the service-time histogram, the events whose
    handler started."""
    started = asyncio.Event()

    async def stuck(payload: Payload[int], ctx: Context) -> None:
        started.set()
        await asyncio.Event().wait()

    queue = CollectorQueue(
        [Collector("stuck", stuck)],
        autoscale=False,
        max_consumers=1,
        consumer_shutdown_timeout=0.01,
        logging=False,
    )
    registry = CollectorRegistry()
    instrument(queue, registry=registry, name="q")
    async with queue:
        publisher = queue.get_publisher()
        for n in range(3):
            await publisher.send(n)
        await started.wait()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    label = (("queue", "q"),)
    assert samples[("event_collector_events_processed_total", label)] == 3
    assert queue.get_metrics().event_count == 1
    assert samples[("event_collector_service_time_seconds_count", label)] == 1
    assert samples[("event_collector_wait_time_seconds_count", label)] == 3
    cancelled = (("kind", "EventCancelled"), ("queue", "q"))
    assert samples[("event_collector_errors_total", cancelled)] == 3


def test_index_page_and_readme_show_the_same_example() -> None:
    assert rst_python("index.rst") == readme_python()


def test_readme_example_prints_only_its_results() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", readme_python()],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    # logging=False: no structlog line (they go to stdout) among the results.
    assert proc.stdout.splitlines() == [str(2 * n) for n in range(1000)]
    assert proc.stderr == ""


@pytest.mark.slow
def test_readme_docs_build_command_works_after_its_install(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    found = re.search(
        r"```sh\n(bash scripts/test --install-only)\n(\.venv/bin/sphinx-build .*)\n```",
        readme,
    )
    assert found, "the README's docs build command and its install"
    # The install step installs the docs extra, which brings Sphinx and the
    # theme docs/conf.py names.
    assert 'pip install -q -e ".[test,lint,docs]"' in (
        (ROOT / "scripts" / "test").read_text()
    )
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert {"sphinx", "furo"} <= {re.split(r"[<>=]", r)[0] for r in extras["docs"]}
    # The command itself, with this interpreter's Sphinx and a scratch output.
    command = shlex.split(found[2])
    assert command[0] == ".venv/bin/sphinx-build"
    assert command[-1] == "docs/_build/html"
    build = subprocess.run(
        [sys.executable, "-m", "sphinx", *command[1:-1], "-q", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    assert (tmp_path / "api" / "queue.html").is_file()
