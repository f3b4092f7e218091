"""A worker (or publisher) process for the Redis fault tests.

Run as ``python tests/redis_worker_app.py worker '<json options>'``: it
runs a :class:`~event_collector.CollectorQueue` on a
:class:`~event_collector.redis.RedisTransport` until SIGTERM, then shuts the
queue down gracefully and exits 0. It prints ``READY <consumer>`` on
standard output once the queue takes events (nothing else goes there: the
logs go to standard error).

Every handler call appends two lines to the ledger file, one as it starts
and one as it ends (see :class:`LedgerWriter`), so that a test can count
what was done after it SIGKILLed the process.

The event's value says what the handler does (``{"n": 1, "mode": "sleep",
"ms": 120}``):

- ``sleep``: ``asyncio.sleep(ms / 1000)`` and answer.
- ``block``: ``time.sleep(seconds)``, blocking the event loop.
- ``spin``: a busy loop of pure Python for ``seconds``, holding the GIL
  between the interpreter's thread switches.
- ``kill_after``: answer at once; the event observer, which runs as the
  answer is settled and before the acknowledgement is written, SIGKILLs
  the process (on the first attempt only).
- ``poison``: SIGKILL the process from inside the handler, every time.
- ``big``: after ``ms`` milliseconds, answer a string of ``size``
  characters.
- ``raise``: raise ``ValueError``.

``python tests/redis_worker_app.py publish '<json options>'`` sends
``count`` events of ``value`` with a :class:`RedisPublisher`, prints
``SENT <count>`` and waits for their answers forever: the test kills it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from typing import Any

import structlog

from event_collector import Collector, CollectorEvent, CollectorQueue, Context, Payload
from event_collector.redis import RedisTransport

TRANSPORT_OPTIONS = (
    "stream",
    "visibility_timeout",
    "max_deliveries",
    "max_payload_bytes",
    "reply_ttl",
    "heartbeat_interval",
)


class LedgerWriter:
    """Appends one line per handler phase to a file shared by every process.

    Each line is written with one ``write`` on a descriptor opened with
    ``O_APPEND``, so the lines of processes writing at once never mix and a
    line written before a SIGKILL stays: ``event_id attempt collector pid
    phase time`` separated by tabs, the time from ``time.time()``.
    """

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._pid = os.getpid()

    def write(self, payload: Payload[Any], collector: str, phase: str) -> None:
        line = (
            f"{payload.event_id}\t{payload.attempt}\t{collector}\t{self._pid}"
            f"\t{phase}\t{time.time():.6f}\n"
        )
        os.write(self._fd, line.encode())


def _spin(seconds: float) -> int:
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += sum(range(1000)) & 1
    return n


def make_collector(key: str, ledger: LedgerWriter) -> Collector:
    async def handle(payload: Payload[Any], ctx: Context) -> Any:
        value = payload.value
        ledger.write(payload, key, "start")
        mode = value.get("mode", "sleep") if isinstance(value, dict) else "sleep"
        answer: Any = {"n": value.get("n"), "pid": os.getpid(), "attempt": 0}
        if mode == "sleep":
            await asyncio.sleep(value.get("ms", 0) / 1000)
        elif mode == "block":
            time.sleep(value["seconds"])  # noqa: ASYNC251 (blocks the loop on purpose)
        elif mode == "spin":
            _spin(value["seconds"])
        elif mode == "poison":
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(60)  # noqa: ASYNC251 (never reached: the signal comes first)
        elif mode == "big":
            await asyncio.sleep(value.get("ms", 0) / 1000)
            answer = "x" * value["size"]
        elif mode == "raise":
            ledger.write(payload, key, "end")
            raise ValueError(f"declined {value.get('n')}")
        elif mode != "kill_after":
            raise ValueError(f"unknown mode {mode!r}")
        if isinstance(answer, dict):
            answer["attempt"] = payload.attempt
        ledger.write(payload, key, "end")
        return answer

    return Collector(key, handle)


def kill_after_settle(event: CollectorEvent[Any]) -> None:
    """An event observer: it runs once the answer is settled (the
    acknowledgement is queued, not yet written) and kills the process."""
    value = event.payload.value
    if (
        isinstance(value, dict)
        and value.get("mode") == "kill_after"
        and event.payload.attempt == 1
    ):
        os.kill(os.getpid(), signal.SIGKILL)


async def run_worker(options: dict[str, Any]) -> None:
    ledger = LedgerWriter(options["ledger"])
    transport = RedisTransport(
        options["url"],
        **{k: options[k] for k in TRANSPORT_OPTIONS if k in options},
    )
    collectors = [
        make_collector(key, ledger) for key in options.get("collectors", ["work"])
    ]
    queue = CollectorQueue(
        collectors,
        transport=transport,
        min_consumers=options.get("min_consumers", 1),
        max_consumers=options.get("max_consumers", 8),
        autoscale=options.get("autoscale", True),
        consumer_shutdown_timeout=options.get("consumer_shutdown_timeout", 5.0),
        report_interval=0,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with queue:
        queue.add_event_observer(kill_after_settle)
        print(f"READY {transport.consumer}", flush=True)
        await stop.wait()


async def run_publisher(options: dict[str, Any]) -> None:
    transport = RedisTransport(
        options["url"],
        **{k: options[k] for k in TRANSPORT_OPTIONS if k in options},
    )
    async with transport.publisher() as publisher:
        events = await publisher.send_many(
            [dict(options["value"], n=i) for i in range(options["count"])]
        )
        print(f"SENT {len(events)}", flush=True)
        await asyncio.sleep(3600)


def main(argv: list[str]) -> int:
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S.%f", utc=False),
            structlog.processors.KeyValueRenderer(
                key_order=["timestamp", "level", "event"]
            ),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    role, options = argv[1], json.loads(argv[2])
    if role == "worker":
        asyncio.run(run_worker(options))
    elif role == "publish":
        asyncio.run(run_publisher(options))
    else:
        raise SystemExit(f"unknown role {role!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
