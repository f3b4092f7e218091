"""Checks of constructor arguments, with messages that name the parameter,
the value given and what is allowed."""

from __future__ import annotations

import math
from typing import Any

from .exceptions import ConfigError

__all__ = ["check_bool", "check_int", "check_number", "is_finite"]


def check_bool(name: str, value: Any) -> bool:
    """``value`` must be a bool."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be a bool (got {name}={value!r})")
    return value


def check_int(
    name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """``value`` must be an int (not a bool), at least ``minimum`` and at
    most ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(
            f"{name} must be an int (got {name}={value!r}, a {type(value).__name__})"
        )
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum} (got {name}={value!r})")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum} (got {name}={value!r})")
    return value


def check_number(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
    unit: str = "",
) -> float:
    """``value`` must be a finite real number (not a bool) within bounds:
    ``>= minimum``, ``> above``, ``<= maximum``."""
    suffix = f" {unit}" if unit else ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(
            f"{name} must be a number{suffix} (got {name}={value!r}, "
            f"a {type(value).__name__})"
        )
    if not is_finite(value):
        raise ConfigError(f"{name} must be finite (got {name}={value!r})")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}{suffix} (got {name}={value!r})")
    if above is not None and value <= above:
        raise ConfigError(f"{name} must be > {above}{suffix} (got {name}={value!r})")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum}{suffix} (got {name}={value!r})")
    return float(value)


def is_finite(value: float) -> bool:
    """Whether ``value`` is a finite float, or an int small enough to be one
    (``math.isfinite(10**400)`` raises ``OverflowError``)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False
