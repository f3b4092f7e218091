"""Logging: the ``event_collector`` structlog logger, the silent logger, the
one reporting function, and no ``structlog.configure`` on import."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import MutableMapping
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from event_collector._log import LOGGER_NAME, NullLogger, get_logger, report_exception


def test_logger_name() -> None:
    assert LOGGER_NAME == "event_collector"


def test_disabled_logger_is_silent(capsys: pytest.CaptureFixture[str]) -> None:
    log = get_logger(False, queue="q")
    assert isinstance(log, NullLogger)
    with capture_logs() as logs:
        for method in (log.debug, log.info, log.warning, log.error):
            method("something", key=1)
    assert logs == []
    assert capsys.readouterr() == ("", "")
    assert repr(log) == "<NullLogger>"


def test_enabled_logger_carries_initial_values() -> None:
    log = get_logger(True, queue="abc")
    with capture_logs() as logs:
        log.info("hello", n=1)
    assert logs == [{"event": "hello", "n": 1, "queue": "abc", "log_level": "info"}]


def test_enabled_logger_uses_the_configuration_at_call_time() -> None:
    """A logger made before ``structlog.configure`` follows the later config."""
    log = get_logger(True)
    seen: list[dict[str, Any]] = []

    def keep(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> str:
        seen.append(dict(event_dict))
        raise structlog.DropEvent

    structlog.configure(processors=[keep])
    log.warning("late config")
    assert [e["event"] for e in seen] == ["late config"]


def test_enabled_logger_prints_with_structlog_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    get_logger(True).info("visible line")
    assert "visible line" in capsys.readouterr().out


def test_stdlib_integration_sees_the_event_collector_logger_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    structlog.configure(
        processors=[structlog.processors.KeyValueRenderer(key_order=["event"])],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        get_logger(True, queue="q1").info("through stdlib")
    assert [r.name for r in caplog.records] == ["event_collector"]
    assert "through stdlib" in caplog.records[0].getMessage()
    assert "queue='q1'" in caplog.records[0].getMessage()


def test_report_exception_logs_error_with_exc_info() -> None:
    exc = ValueError("bad")
    with capture_logs() as logs:
        report_exception(get_logger(True), "task failed", exc, task="t1")
    assert len(logs) == 1
    entry = logs[0]
    assert entry["event"] == "task failed"
    assert entry["log_level"] == "error"
    assert entry["exc_info"] is exc
    assert entry["task"] == "t1"


def test_report_exception_survives_a_broken_logger() -> None:
    calls: list[str] = []

    class Broken(NullLogger):
        __slots__ = ()

        def error(self, event: str, *args: Any, **kw: Any) -> None:
            calls.append(event)
            raise RuntimeError("logger broke")

    report_exception(Broken(), "task failed", ValueError("bad"))
    assert calls == ["task failed"]


def test_import_never_configures_structlog() -> None:
    code = textwrap.dedent(
        """
        import asyncio
        import structlog
        import event_collector
        import event_collector.cli
        from event_collector import (
            _consumers, _log, _metrics, collector, data, messagebus, publisher,
            queue, router, transport,
        )
        from event_collector import Collector, CollectorQueue

        async def echo(payload, ctx):
            return payload.value

        async def main():
            async with CollectorQueue(
                [Collector("c", echo)], logging=True, report_interval=0.01
            ) as q:
                await (await q.get_publisher().send(1)).wait()

        asyncio.run(main())
        print(structlog.is_configured())
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False"
