"""Every bad constructor argument is refused in ``CollectorQueue.__init__``
with a ``ConfigError`` (or ``TypeError``) that names the parameter and the
value given; the one value the page clamps is clamped and logged."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from structlog.testing import capture_logs

from event_collector import (
    Collector,
    CollectorQueue,
    ConfigError,
    Context,
    Payload,
    QueueType,
    ResultList,
    SimpleRouter,
)
from event_collector.queue import MIN_METRICS_COLLECTOR_WINDOW_SIZE


async def _echo(payload: Payload[Any], ctx: Context) -> Any:
    return payload.value


def _collector(key: str = "echo") -> Collector:
    return Collector(key, _echo)


class _Keyed(Collector):
    key = "keyed"

    async def process(self, payload: Payload[Any]) -> Any:
        return payload.value


class _NotARouter:
    async def handle_event(self, payload: Payload[Any]) -> ResultList:
        return ResultList()


def _build(**kwargs: Any) -> CollectorQueue:
    kwargs.setdefault("collectors", [_collector()])
    kwargs.setdefault("logging", False)
    return CollectorQueue(**kwargs)


def _assert_names(exc: BaseException, name: str, value: Any) -> None:
    message = str(exc)
    assert name in message, message
    assert repr(value) in message, message


# Each case: (parameter, bad value, extra keyword arguments). One test id per
# case, so a failing check says which argument got through.
BAD_VALUES: list[Any] = [
    pytest.param("min_consumers", -5, {}, id="min_consumers-negative"),
    pytest.param("min_consumers", 0, {}, id="min_consumers-zero"),
    pytest.param("min_consumers", "3", {}, id="min_consumers-str"),
    pytest.param("min_consumers", True, {}, id="min_consumers-bool"),
    pytest.param("min_consumers", 2.0, {}, id="min_consumers-float"),
    pytest.param("max_consumers", 0, {}, id="max_consumers-zero"),
    pytest.param("max_consumers", 3, {"min_consumers": 5}, id="max_below_min"),
    pytest.param("max_consumers", "10", {}, id="max_consumers-str"),
    pytest.param("max_consumers", False, {}, id="max_consumers-bool"),
    pytest.param("wip_margin", -0.1, {}, id="wip_margin-negative"),
    pytest.param("wip_margin", 1.5, {}, id="wip_margin-above-1"),
    pytest.param("wip_margin", "0.1", {}, id="wip_margin-str"),
    pytest.param("wip_margin", math.nan, {}, id="wip_margin-nan"),
    pytest.param("monitor_interval", 0, {}, id="monitor_interval-zero"),
    pytest.param("monitor_interval", -0.01, {}, id="monitor_interval-negative"),
    pytest.param("monitor_interval", "0.01", {}, id="monitor_interval-str"),
    pytest.param("monitor_interval", math.inf, {}, id="monitor_interval-inf"),
    pytest.param("report_interval", -1, {}, id="report_interval-negative"),
    pytest.param("report_interval", True, {}, id="report_interval-bool"),
    pytest.param("avg_load_interval", 0, {}, id="avg_load_interval-zero"),
    pytest.param("avg_load_interval", -60, {}, id="avg_load_interval-negative"),
    pytest.param("metrics_collector_window_size", 0, {}, id="metrics_window-zero"),
    pytest.param("metrics_collector_window_size", -5, {}, id="metrics_window-negative"),
    pytest.param("metrics_collector_window_size", "60", {}, id="metrics_window-str"),
    pytest.param("event_service_data_window_size", 0, {}, id="service_window-zero"),
    pytest.param(
        "event_service_data_window_size", -1, {}, id="service_window-negative"
    ),
    pytest.param(
        "event_service_data_window_size", 500.0, {}, id="service_window-float"
    ),
    pytest.param("event_service_data_window_size", True, {}, id="service_window-bool"),
    pytest.param(
        "metrics_warmup_interval", -3, {}, id="metrics_warmup_interval-negative"
    ),
    pytest.param("queue_type", "bogus", {}, id="queue_type-str"),
    pytest.param("queue_type", 0, {}, id="queue_type-int"),
    pytest.param("queue_type", "FIFO", {}, id="queue_type-name"),
    pytest.param("default_priority", "high", {}, id="default_priority-str"),
    pytest.param("default_priority", True, {}, id="default_priority-bool"),
    pytest.param(
        "consumer_shutdown_timeout", "10", {}, id="consumer_shutdown_timeout-str"
    ),
    pytest.param(
        "consumer_shutdown_timeout",
        math.nan,
        {},
        id="consumer_shutdown_timeout-nan",
    ),
    pytest.param("autoscale", "yes", {}, id="autoscale-str"),
    pytest.param("autoscale", 1, {}, id="autoscale-int"),
    pytest.param("logging", "no", {}, id="logging-str"),
    pytest.param("maxsize", -1, {}, id="maxsize-negative"),
    pytest.param("maxsize", "5", {}, id="maxsize-str"),
    pytest.param("maxsize", True, {}, id="maxsize-bool"),
    pytest.param("clock", 5, {}, id="clock-not-callable"),
]


@pytest.mark.parametrize(("name", "value", "extra"), BAD_VALUES)
def test_bad_argument_is_refused_naming_it(
    name: str, value: Any, extra: dict[str, Any]
) -> None:
    with pytest.raises((ConfigError, TypeError)) as info:
        _build(**{name: value, **extra})
    _assert_names(info.value, name, value)


@pytest.mark.parametrize(
    ("name", "value"),
    [("min_consumers", "3"), ("min_consumers", True), ("wip_margin", "0.1")],
)
def test_wrong_type_says_what_was_given(name: str, value: Any) -> None:
    with pytest.raises((ConfigError, TypeError)) as info:
        _build(**{name: value})
    # The message gives the type, so that "3" and 3 cannot be confused.
    assert type(value).__name__ in str(info.value)


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="min_consumers"):
        _build(min_consumers=-5)


def test_max_below_min_names_both() -> None:
    with pytest.raises(ConfigError) as info:
        _build(min_consumers=5, max_consumers=2)
    message = str(info.value)
    assert "max_consumers=2" in message
    assert "min_consumers=5" in message


def test_router_instance_is_refused() -> None:
    instance = SimpleRouter({"echo": _collector()})
    with pytest.raises((ConfigError, TypeError)) as info:
        _build(router=instance)
    message = str(info.value)
    assert "router" in message
    assert "class" in message
    assert repr(instance) in message


@pytest.mark.parametrize(
    "router",
    [
        pytest.param(_NotARouter, id="unrelated-class"),
        pytest.param("SimpleRouter", id="str"),
        pytest.param(None, id="none"),
    ],
)
def test_router_must_be_a_router_subclass(router: Any) -> None:
    with pytest.raises((ConfigError, TypeError)) as info:
        _build(router=router)
    _assert_names(info.value, "router", router)


def test_collectors_empty() -> None:
    with pytest.raises(ConfigError) as info:
        _build(collectors=[])
    _assert_names(info.value, "collectors", [])


@pytest.mark.parametrize(
    "item",
    [
        pytest.param(object(), id="object"),
        pytest.param(_echo, id="function"),
        pytest.param("echo", id="str"),
        pytest.param(SimpleRouter, id="other-class"),
    ],
)
def test_collectors_must_hold_collectors(item: Any) -> None:
    with pytest.raises((ConfigError, TypeError)) as info:
        _build(collectors=[_collector(), item])
    _assert_names(info.value, "collectors", item)


@pytest.mark.parametrize(
    "collectors",
    [
        pytest.param("echo", id="str"),
        pytest.param(None, id="none"),
        pytest.param(_collector(), id="bare-collector"),
    ],
)
def test_collectors_must_be_a_list(collectors: Any) -> None:
    with pytest.raises((ConfigError, TypeError)) as info:
        _build(collectors=collectors)
    _assert_names(info.value, "collectors", collectors)


def test_collectors_duplicate_keys() -> None:
    with pytest.raises(ConfigError) as info:
        _build(collectors=[_collector("a"), _collector("b"), _collector("a")])
    message = str(info.value)
    assert "collectors" in message
    assert re.search(r"\bduplicate\b", message)
    assert "'a'" in message
    assert "'b'" not in message


def test_collectors_duplicate_keys_between_class_and_instance() -> None:
    with pytest.raises(ConfigError, match="'keyed'"):
        _build(collectors=[_Keyed, _collector("keyed")])


def test_collectors_accepts_classes_and_instances() -> None:
    queue = _build(collectors=[_Keyed, _collector()])
    assert [c.key for c in queue.collectors] == ["keyed", "echo"]
    assert all(isinstance(c, Collector) for c in queue.collectors)


@pytest.mark.parametrize(
    "timeout",
    [0, -1, "5", True, math.nan],
    ids=["zero", "negative", "str", "bool", "nan"],
)
def test_collector_timeout_is_checked(timeout: Any) -> None:
    with pytest.raises(ConfigError) as info:
        Collector("slow", _echo, timeout=timeout)
    _assert_names(info.value, "timeout", timeout)


def test_good_arguments_are_kept() -> None:
    queue = _build(
        min_consumers=2,
        max_consumers=2,
        wip_margin=0,
        report_interval=0,
        queue_type=QueueType.PRIORITY,
        consumer_shutdown_timeout=0,
        maxsize=3,
    )
    assert queue.min_consumers == 2
    assert queue.max_consumers == 2
    assert queue.wip_margin == 0.0
    assert queue.queue_type is QueueType.PRIORITY
    assert queue.consumer_shutdown_timeout == 0.0
    assert queue.maxsize == 3


@pytest.mark.parametrize("given", [0.5, 1, 4.99])
def test_small_metrics_window_is_clamped_and_logged(given: float) -> None:
    with capture_logs() as logs:
        queue = _build(metrics_collector_window_size=given, logging=True)
    assert queue.metrics_collector_window_size == MIN_METRICS_COLLECTOR_WINDOW_SIZE
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1
    assert "metrics_collector_window_size" in warnings[0]["event"]
    assert warnings[0]["given"] == given
    assert warnings[0]["used"] == MIN_METRICS_COLLECTOR_WINDOW_SIZE


def test_metrics_window_at_minimum_is_not_logged() -> None:
    with capture_logs() as logs:
        queue = _build(
            metrics_collector_window_size=MIN_METRICS_COLLECTOR_WINDOW_SIZE,
            logging=True,
        )
    assert queue.metrics_collector_window_size == MIN_METRICS_COLLECTOR_WINDOW_SIZE
    assert logs == []


def test_clamp_is_silent_without_logging() -> None:
    with capture_logs() as logs:
        queue = _build(metrics_collector_window_size=1, logging=False)
    assert queue.metrics_collector_window_size == MIN_METRICS_COLLECTOR_WINDOW_SIZE
    assert logs == []
