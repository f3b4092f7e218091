"""Event loop factories, and running one measurement in a fresh loop."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = [
    "LOOP_NAMES",
    "LoopFactory",
    "available_loops",
    "loop_factory",
    "run",
    "run_counting_gc",
]

T = TypeVar("T")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

LOOP_NAMES: tuple[str, ...] = ("asyncio", "uvloop")


def _uvloop_factory() -> LoopFactory | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: LoopFactory = uvloop.new_event_loop
    return factory


def loop_factory(name: str) -> LoopFactory:
    """The factory of the loop called ``name`` (``asyncio`` or ``uvloop``).

    :raises ValueError: unknown name, or uvloop is not installed.
    """
    if name == "asyncio":
        return asyncio.new_event_loop
    if name == "uvloop":
        factory = _uvloop_factory()
        if factory is None:
            raise ValueError(
                "loop 'uvloop' needs the uvloop package: "
                "pip install -e '.[uvloop]' (from a checkout)"
            )
        return factory
    raise ValueError(f"loop must be one of {LOOP_NAMES} (got loop={name!r})")


def available_loops(choice: str) -> list[str]:
    """The loops ``--loop choice`` stands for; ``both`` skips a missing uvloop."""
    if choice == "both":
        return [n for n in LOOP_NAMES if n == "asyncio" or _uvloop_factory()]
    loop_factory(choice)  # raises for an unknown or missing loop
    return [choice]


def run(factory: LoopFactory, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main()`` in a new loop made by ``factory``, after a full
    garbage collection so that one measurement does not pay for the
    previous one's garbage."""
    return run_counting_gc(factory, main)[0]


def run_counting_gc(
    factory: LoopFactory, main: Callable[[], Coroutine[Any, Any, T]]
) -> tuple[T, float, float]:
    """:func:`run`; also return the CPU seconds the process used, and the
    seconds of those the garbage collector took (summed from
    ``gc.callbacks``).

    CPU time leaves out the moments another process had the core, which
    wall time on a shared machine does not. It covers the whole of
    ``main`` and the loop's creation and closing, not only the span the
    wall clock times: for the library that includes starting and shutting
    down the queue (cancelling its idle consumers), so a ratio of these CPU
    times is a little harsher on the library than the wall-clock one.
    """
    total = 0.0
    began = 0.0

    def timer(phase: str, info: dict[str, Any]) -> None:
        nonlocal total, began
        if phase == "start":
            began = time.perf_counter()
        else:
            total += time.perf_counter() - began

    gc.collect()
    gc.callbacks.append(timer)
    cpu = time.process_time()
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            result = runner.run(main())
    finally:
        cpu = time.process_time() - cpu
        gc.callbacks.remove(timer)
    return result, cpu, total
