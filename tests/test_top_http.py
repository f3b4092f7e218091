"""Tests of ``event-collector top http://...``: the sparklines, the figures
two scrapes give, and the view of a real queue's Prometheus endpoint served
here, as a person would see it, from the command too."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric
from rich.console import Console

from conftest import FakeClock, Gate
from event_collector import Collector, CollectorQueue, Context, Payload
from event_collector._top_cli import SPARK_WIDTH
from event_collector._top_http import ScrapeError, parse, scrape
from event_collector._top_service import ServiceFrame, ServiceWatch
from event_collector._top_spark import BLOCKS, Series, sparkline
from event_collector._top_view import render_service
from event_collector.cli import main
from event_collector.prometheus import instrument

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
WINDOW = 120.0  # 40 blocks of 3 s


# -- sparklines ------------------------------------------------------------------


def test_a_sparkline_splits_zero_to_the_top_in_seven_bands() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    # Zero is the bottom block; anything above it stands higher.
    assert sparkline([0, 0.01, 7]) == "▁▂█"
    assert sparkline([7, 0.01, 0]) == "█▂▁"
    # Seven bands of the top given: (2/7, 3/7] is the third, above it the
    # fourth; above the top is the top.
    assert sparkline([3, 3.01, 7, 14], top=7) == "▄▅██"
    assert sparkline([1e-9, 6.99], top=7) == "▂█"


def test_a_sparkline_leaves_gaps_and_stays_flat_on_zeros() -> None:
    assert sparkline([1, None, 1, float("nan")]) == "█ █ "
    assert sparkline([0, 0, 0]) == "▁▁▁"
    assert sparkline([-1, 0, 2]) == "▁▁█"
    assert sparkline([]) == ""
    assert sparkline([None, None]) == "  "
    assert len(BLOCKS) == 8


def test_a_series_averages_its_blocks_and_keeps_their_place() -> None:
    series = Series(12.0, 4)  # blocks of 3 s, aligned on multiples of 3
    for at, value in [(0.0, 2.0), (1.0, 4.0), (4.0, 8.0), (10.5, 0.0)]:
        series.add(at, value)
    # Blocks [0,3), [3,6), [6,9), [9,12): means 3, 8, none, 0.
    assert series.blocks(10.5) == [3.0, 8.0, None, 0.0]
    assert series.peak() == 8.0
    # 3 of 8 is in the third band (2.6 of 7); a block without a sample is a
    # gap.
    assert series.sparkline(10.5) == "▄█ ▁"
    # Later, the same samples move left by whole blocks.
    assert series.blocks(13.0) == [8.0, None, 0.0, None]


def test_a_series_forgets_what_left_its_window() -> None:
    series = Series(12.0, 4)
    for at in range(30):
        series.add(float(at), float(at))
    # At 29 the oldest block is [18, 21): samples 18 to 29 are kept.
    assert series.values() == [float(v) for v in range(18, 30)]
    assert series.peak() == 29.0
    assert series.blocks(29.0) == [19.0, 22.0, 25.0, 28.0]
    with pytest.raises(ValueError, match="window must be a positive number"):
        Series(0.0, 4)
    with pytest.raises(ValueError, match="width must be >= 1"):
        Series(1.0, 0)


# -- samples and figures ---------------------------------------------------------------

PAGE = """\
# TYPE event_collector_consumers gauge
event_collector_consumers{{queue="a"}} 3.0
event_collector_queue_size{{queue="a"}} {qsize}
event_collector_busy_consumers{{queue="a"}} {busy}
event_collector_events_processed_total{{queue="a"}} {processed}
event_collector_errors_total{{queue="a",kind="ValueError"}} {value_errors}
{key_errors}
process_cpu_seconds_total 1.5
other_gauge{{queue="not ours"}} 1.0
"""


def page(
    *,
    qsize: int = 0,
    busy: int = 0,
    processed: int = 0,
    value_errors: int = 0,
    key_errors: int | None = None,
) -> str:
    extra = (
        ""
        if key_errors is None
        else f'event_collector_errors_total{{queue="a",kind="KeyError"}} {key_errors}'
    )
    return PAGE.format(
        qsize=qsize,
        busy=busy,
        processed=processed,
        value_errors=value_errors,
        key_errors=extra,
    )


def test_the_figures_of_two_scrapes() -> None:
    clock = FakeClock(10.0)
    watch = ServiceWatch("http://x/metrics", window=WINDOW, width=40, clock=clock)
    first = watch.take(parse(page(qsize=5, busy=3, processed=100, value_errors=4)))
    assert first.elapsed is None
    (queue,) = first.queues  # "not ours": no event_collector_ prefix
    assert queue.name == "a"
    assert (queue.consumers, queue.queue_size, queue.busy) == (3.0, 5.0, 3.0)
    assert queue.arrival_rate is queue.departure_rate is queue.error_rate is None
    assert queue.loop_lag is None  # not exported
    assert queue.load is None  # not on this page
    assert queue.collectors == ()

    clock.advance(4.0)
    second = watch.take(
        parse(page(qsize=1, busy=3, processed=120, value_errors=6, key_errors=2))
    )
    assert second.elapsed == 4.0
    (queue,) = second.queues
    assert queue.departure_rate == 5.0  # 20 answered in 4 s
    # 20 answered, and the queue and handlers went from 8 to 4 events.
    assert queue.arrival_rate == 4.0
    # 2 more ValueErrors, and 2 KeyErrors of a kind not seen before.
    assert queue.error_rate == 1.0
    assert watch.history[("a", "queue_size")].values() == [5.0, 1.0]
    assert watch.history[("a", "departure_rate")].values() == [5.0]

    # The service restarted: its counters start again from zero.
    clock.advance(2.0)
    third = watch.take(parse(page(processed=4)))
    assert third.queues[0].departure_rate == 2.0
    assert third.queues[0].error_rate == 0.0


def test_a_page_that_is_not_prometheus_is_refused() -> None:
    for text in ("<html><body>metrics</body></html>", '{"queue": 1}'):
        with pytest.raises(ScrapeError, match="not in the Prometheus text format"):
            parse(text)
    assert parse("").queues() == []


# -- a real endpoint -------------------------------------------------------------------


class Route:
    """What the test server answers on one path."""

    def __init__(
        self, body: Callable[[], bytes], content_type: str, status: int = 200
    ) -> None:
        self.body = body
        self.content_type = content_type
        self.status = status


class Endpoint:
    """A tiny HTTP server on a free 127.0.0.1 port, in a thread of its own;
    it records the headers of every request."""

    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes
        self.headers: list[dict[str, str]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                endpoint.headers.append(dict(self.headers.items()))
                route = endpoint.routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                body = route.body()
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/metrics") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> Endpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._thread.is_alive():
            self.server.shutdown()
            self._thread.join(10)
        self.server.server_close()


def metrics_route(registry: CollectorRegistry) -> Route:
    """The registry's exposition page, as prometheus_client serves it."""
    return Route(lambda: generate_latest(registry), CONTENT_TYPE_LATEST)


class Stand:
    """The per-collector families and the loop-lag gauge, as the Prometheus
    module is to export them: a stand-in whose values the test sets."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.calls: dict[str, tuple[int, float]] = {}  # collector: count, sum
        self.errors: dict[str, int] = {}
        self.loop_lag: float | None = None

    def collect(self) -> Iterator[Metric]:
        handler = HistogramMetricFamily(
            "event_collector_collector_handler_seconds",
            "Handler time per collector.",
            labels=["queue", "collector"],
        )
        for name, (count, total) in self.calls.items():
            handler.add_metric([self.queue, name], [("+Inf", float(count))], total)
        errors = CounterMetricFamily(
            "event_collector_collector_errors",
            "Errors per collector.",
            labels=["queue", "collector"],
        )
        for name, count in self.errors.items():
            errors.add_metric([self.queue, name], count)
        yield handler
        yield errors
        if self.loop_lag is not None:
            lag = GaugeMetricFamily(
                "event_collector_loop_lag_seconds", "Loop lag.", labels=["queue"]
            )
            lag.add_metric([self.queue], self.loop_lag)
            yield lag


def rendered(frame: ServiceFrame, watch: ServiceWatch, *, width: int = 200) -> str:
    console = Console(record=True, width=width, file=open(os.devnull, "w"))  # noqa: SIM115
    try:
        console.print(
            render_service(frame, watch.history, window=watch.window, width=watch.width)
        )
        return console.export_text()
    finally:
        console.file.close()


def rows(text: str) -> dict[str, list[str]]:
    """The table rows of a rendered view: first cell -> the other cells."""
    found = {}
    for line in text.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) >= 2:
            found[cells[0]] = cells[1:]
    return found


@pytest.fixture
async def service() -> AsyncIterator[tuple[Gate, CollectorQueue, Endpoint]]:
    """A queue ``orders`` (two consumers, held by a gate; a value that is a
    multiple of 3 raises) instrumented in a registry served over HTTP."""
    gate = Gate()

    async def work(payload: Payload[Any], ctx: Context) -> Any:
        value = await gate(payload, ctx)
        if value % 3 == 0:
            raise ValueError(value)
        return value

    registry = CollectorRegistry()
    queue = CollectorQueue(
        [Collector("work", work)], autoscale=False, max_consumers=2, logging=False
    )
    exporter = instrument(queue, registry=registry, name="orders")
    try:
        async with queue:
            with Endpoint({"/metrics": metrics_route(registry)}) as endpoint:
                yield gate, queue, endpoint
            gate.open()
    finally:
        exporter.unregister()


async def test_the_view_follows_the_load(
    service: tuple[Gate, CollectorQueue, Endpoint],
) -> None:
    gate, queue, endpoint = service
    clock = FakeClock(0.0)
    watch = ServiceWatch(endpoint.url(), window=WINDOW, width=40, clock=clock)

    first = await asyncio.to_thread(watch.poll)
    text = rendered(first, watch)
    assert f"event-collector top: {endpoint.url()}" in text
    assert "rates from the next read on" in text
    assert "queue 'orders'" in text
    view = rows(text)
    assert view["arrival rate"][0] == "-"
    assert view["departure rate"][0] == "-"
    assert view["consumers"][0] == "2"
    assert view["busy consumers"][0] == "0"
    assert view["queue size"][0] == "0"
    assert view["loop lag"][0].endswith(" ms")
    assert "collector" not in view  # nor per-collector series

    # Six events: two in the handlers, four queued.
    publisher = queue.get_publisher()
    events = [publisher.send_nowait(n) for n in range(6)]
    await gate.until_running(2)
    clock.advance(2.0)
    text = rendered(await asyncio.to_thread(watch.poll), watch)
    assert "rates over the last 2.0 s" in text
    view = rows(text)
    assert view["arrival rate"][0] == "3.0/s"  # 6 events in 2 s
    assert view["departure rate"][0] == "0.0/s"
    assert view["busy consumers"][0] == "2"
    assert view["queue size"][0] == "4"
    assert view["load"][0] == "3.00"  # (4 + 2) / 2

    gate.open()
    for event in events:
        await event.wait()
    clock.advance(3.0)
    third = await asyncio.to_thread(watch.poll)
    text = rendered(third, watch)
    view = rows(text)
    assert view["departure rate"][0] == "2.0/s"  # 6 answered in 3 s
    assert view["arrival rate"][0] == "0.0/s"
    assert view["errors"][0] == "0.7/s"  # 0 and 3 raised
    assert view["queue size"][0] == "0"
    assert view["departure rate"][-1] == "2.0/s"  # the max column
    assert view["queue size"][-1] == "4"
    # Blocks of 3 s: reads at 0 and 2 s share the first (mean 2 of a max of
    # 4), the one at 5 s is in the next.
    assert view["queue size"][1].endswith("▅▁")
    assert view["departure rate"][1].endswith("▁█")
    assert view["wait (send → answer)"][0].endswith(" ms")


async def test_collectors_and_loop_lag_show_when_exported(
    service: tuple[Gate, CollectorQueue, Endpoint],
) -> None:
    _, _, endpoint = service
    stand = Stand("orders")
    stand.calls = {"work": (10, 0.5), "audit": (4, 0.04)}
    stand.errors = {"work": 1}
    stand.loop_lag = 0.0021
    registry = CollectorRegistry()
    registry.register(stand)
    # The queue's own page and the stand-in's, as one endpoint.
    queue_page = endpoint.routes["/metrics"].body
    endpoint.routes["/metrics"] = Route(
        lambda: queue_page() + generate_latest(registry), CONTENT_TYPE_LATEST
    )
    clock = FakeClock(0.0)
    watch = ServiceWatch(endpoint.url(), window=WINDOW, width=40, clock=clock)
    view = rows(rendered(await asyncio.to_thread(watch.poll), watch))
    assert view["loop lag"][0] == "2.1 ms"
    assert view["collector"][:4] == [
        "calls",
        "errors",
        "errors %",
        "errors, last 2 min",
    ]
    assert view["work"] == ["-", "-", "-", "-"]
    assert view["audit"] == ["-", "-", "-", "-"]

    stand.calls = {"work": (30, 2.5), "audit": (4, 0.04)}
    stand.errors = {"work": 6, "audit": 2}
    clock.advance(2.0)
    frame = await asyncio.to_thread(watch.poll)
    (figures,) = frame.queues
    work = {c.name: c for c in figures.collectors}["work"]
    assert work.latency == pytest.approx(0.1)  # 2 s over 20 calls
    view = rows(rendered(frame, watch))
    # calls/s, errors/s, errors per call, sparkline, mean latency, sparkline
    assert view["work"][:3] == ["10.0/s", "2.5/s", "25.0 %"]
    assert view["work"][-2:] == ["100.0 ms", "█"]
    # Not called meanwhile: no latency, and errors without calls.
    assert view["audit"][:2] == ["0.0/s", "1.0/s"]
    assert view["audit"][-1] == "-"


async def test_a_narrow_screen_keeps_the_figures_and_the_newest_blocks(
    service: tuple[Gate, CollectorQueue, Endpoint],
) -> None:
    _, _, endpoint = service
    clock = FakeClock(0.0)
    watch = ServiceWatch(endpoint.url(), window=WINDOW, width=40, clock=clock)
    for _ in range(3):
        frame = await asyncio.to_thread(watch.poll)
        clock.advance(3.0)
    text = rendered(frame, watch, width=60)
    assert "…" not in text
    assert rows(text)["service time (handler)"][0].endswith(" ms")
    # Three reads, one per block, of a steady 2.
    assert rows(text)["consumers"] == ["2", "███", "2"]


# -- the command -------------------------------------------------------------------


async def run_top(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "event_collector",
        "top",
        *args,
        env={**os.environ, "COLUMNS": "200"},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.slow
async def test_top_once_prints_one_frame(
    service: tuple[Gate, CollectorQueue, Endpoint],
) -> None:
    gate, queue, endpoint = service
    publisher = queue.get_publisher()
    events = [publisher.send_nowait(n) for n in range(5)]
    await gate.until_running(2)
    status, out, err = await run_top(endpoint.url(), "--once")
    assert status == 0, err
    assert err == ""
    view = rows(out)
    assert "queue 'orders'" in out
    assert view["arrival rate"][0] == "-"
    assert view["busy consumers"][0] == "2"
    assert view["queue size"][0] == "3"
    gate.open()
    for event in events:
        await event.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize("once", [True, False])
def test_an_unreachable_endpoint_is_an_error(
    once: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}/metrics"
    assert main(["top", url, *(["--once"] if once else [])]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"event-collector top: cannot read {url}: ")
    assert "refused" in captured.err
    assert "Traceback" not in captured.err


def test_an_endpoint_that_is_not_prometheus_is_an_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    routes = {
        "/html": Route(lambda: b"<html>hi</html>", "text/html; charset=utf-8"),
        "/text": Route(lambda: b"hello world\n", "text/plain"),
        "/other": Route(lambda: b"process_cpu_seconds_total 2.0\n", "text/plain"),
        "/down": Route(lambda: b"down", "text/plain", status=503),
    }
    with Endpoint(routes) as endpoint:
        expected = {
            "/html": "it serves text/html, not the Prometheus text format",
            "/text": "not in the Prometheus text format",
            "/other": "it serves Prometheus metrics, but no event-collector queue",
            "/down": "HTTP 503",
            "/missing": "HTTP 404",
        }
        for path, message in expected.items():
            assert main(["top", endpoint.url(path)]) == 1, path
            err = capsys.readouterr().err
            assert err.startswith(
                f"event-collector top: cannot read {endpoint.url(path)}"
            )
            assert message in err, err


def test_a_password_goes_as_basic_auth_and_is_never_shown(
    capsys: pytest.CaptureFixture[str],
) -> None:
    page_text = b'event_collector_consumers{queue="q"} 1.0\n'
    with Endpoint({"/metrics": Route(lambda: page_text, "text/plain")}) as endpoint:
        url = f"http://scraper:s%3Acret@127.0.0.1:{endpoint.port}/metrics"
        assert main(["top", url, "--once"]) == 0
        out = capsys.readouterr().out
        assert scrape(url).queues() == ["q"]
    assert "queue 'q'" in out
    assert f"http://scraper:***@127.0.0.1:{endpoint.port}/metrics" in out
    assert "cret" not in out
    expected = "Basic " + base64.b64encode(b"scraper:s:cret").decode()
    assert endpoint.headers[0]["Authorization"] == expected
    assert endpoint.headers[0]["Accept"].startswith("text/plain")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["http://h/metrics", "--stream", "t"], "--stream: only with a Redis URL"),
        (["https://h/m", "--capacity", "3", "--group", "g"], "--group, --capacity"),
        (["redis://127.0.0.1:1/0"], "--stream NAME is required with a Redis URL"),
        (["redis://h/0", "--stream", "t", "--window", "60"], "--window: only with"),
        (["localhost:9100"], "or a service's Prometheus endpoint, as http://"),
    ],
)
def test_top_refuses_options_of_the_other_source(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["top", *args]) == 2
    assert message in capsys.readouterr().err


class Top:
    """``event-collector top`` drawing on what it takes for a terminal."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.out = ""

    @classmethod
    async def start(cls, url: str) -> Top:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "event_collector",
            "top",
            url,
            "--interval",
            "0.2",
            # rich draws in place only on a terminal; these make it take the
            # pipe for one.
            env={
                **os.environ,
                "FORCE_COLOR": "1",
                "TTY_COMPATIBLE": "1",
                "COLUMNS": "150",
            },
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    def text(self) -> str:
        return ANSI.sub("", self.out)

    async def shows(self, text: str, *, guard: float = 30.0) -> None:
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(guard):
                while text not in self.text():
                    chunk = await self.process.stdout.read(4096)
                    if not chunk:
                        break
                    self.out += chunk.decode(errors="replace")
        except TimeoutError:
            pass
        if text not in self.text():
            pytest.fail(f"top never showed {text!r}; it drew:\n{self.out}")

    async def stop(self, signum: int) -> tuple[int, str]:
        self.process.send_signal(signum)
        async with asyncio.timeout(30):
            rest, err = await self.process.communicate()
        self.out += rest.decode(errors="replace")
        assert self.process.returncode is not None
        return self.process.returncode, err.decode()

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_ctrl_c_quits_top_cleanly(
    signum: int, service: tuple[Gate, CollectorQueue, Endpoint]
) -> None:
    _, _, endpoint = service
    top = await Top.start(endpoint.url())
    try:
        await top.shows("queue 'orders'")
        await top.shows("rates over the last")  # a second read was drawn
        status, err = await top.stop(signum)
    finally:
        await top.kill()
    assert status == 0, err
    assert "Traceback" not in err
    assert "KeyboardInterrupt" not in err


@pytest.mark.slow
async def test_top_waits_for_an_endpoint_that_goes_away(
    service: tuple[Gate, CollectorQueue, Endpoint],
) -> None:
    _, _, endpoint = service
    top = await Top.start(endpoint.url())
    try:
        await top.shows("queue 'orders'")
        await asyncio.to_thread(endpoint.stop)
        await top.shows(f"cannot read {endpoint.url()}")
        await top.shows("trying again every 0.2 s (below: the last frame read)")
        status, err = await top.stop(signal.SIGINT)
    finally:
        await top.kill()
    assert status == 0, err
    assert "Traceback" not in err


def test_the_sparklines_span_the_window_given(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # no line breaks in the help
    with pytest.raises(SystemExit):
        main(["top", "--help"])
    assert f"in {SPARK_WIDTH} blocks (default: 120)" in capsys.readouterr().out
