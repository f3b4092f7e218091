"""What the test servers share: processes that never outlive the tests, ports, logs.

:mod:`redis_server` and :mod:`mosquitto_server` each run a real server
process for a test. This module holds what they do alike:

- every process started by :func:`spawn` is recorded until it is forgotten
  (:func:`forget`), and killed as the interpreter exits if it still runs; on
  Linux a process started from the main thread also dies when the test
  process is killed itself (:func:`die_with_parent`);
- :func:`stop_process` and :func:`kill_process` end a process and wait;
- :func:`free_port` picks a port of 127.0.0.1, never a server's standard one;
- :func:`log_sizes`, :func:`log_since` and :func:`log_tail` read what a
  server wrote to its files;
- :func:`required_here` and :func:`skip_or_fail` decide what a missing server
  executable does to a test: a skip, or a failure in CI.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import pytest

HOST = "127.0.0.1"
"""The only address a test server listens on."""


# -- what to do when there is no server executable -----------------------------


def required_here(require_env: str) -> bool:
    """Whether a missing server executable must fail the tests, not skip them.

    It must in CI (``CI`` set to anything but empty, ``0`` or ``false``) and
    wherever the variable ``require_env`` is ``1``: there the server's tests
    are part of what is checked, and a skip would pass a run that checked
    nothing.
    """
    ci = os.environ.get("CI", "").strip().lower()
    return ci not in ("", "0", "false") or os.environ.get(require_env) == "1"


def skip_or_fail(reason: str, tests: str, require_env: str) -> NoReturn:
    """Skip the test for ``reason``, or fail it where :func:`required_here`.

    ``tests`` names the tests that needed the server (``"the Redis tests"``);
    the failure says which variables made them required.
    """
    if required_here(require_env):
        pytest.fail(
            f"{reason}; {tests} must run here "
            f"(CI={os.environ.get('CI', '')!r}, "
            f"{require_env}={os.environ.get(require_env, '')!r})",
            pytrace=False,
        )
    pytest.skip(reason)


# -- no orphan servers ---------------------------------------------------------

_live: set[subprocess.Popen[bytes]] = set()
"""Every server process started and not yet forgotten."""
_live_lock = threading.Lock()


@atexit.register
def _kill_all() -> None:
    """Kill every server still running as the interpreter exits.

    A test that crashed, or a fixture whose teardown never ran, would
    otherwise leave a server process behind.
    """
    with _live_lock:
        processes = list(_live)
        _live.clear()
    for process in processes:
        with contextlib.suppress(OSError):
            process.kill()
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            process.wait(timeout=5)


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child die when this process dies, or None.

    ``atexit`` does not run when the test process is itself killed (a CI
    timeout); Linux's ``PR_SET_PDEATHSIG`` covers that. It fires when the
    thread that started the child ends, so it is only used from the main
    thread, which lives as long as the process.
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        prctl = ctypes.CDLL(name, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def spawn(command: Sequence[str], output: Path) -> subprocess.Popen[bytes]:
    """Start ``command`` with its stdout and stderr appended to ``output``.

    Its stdin is ``/dev/null``; it dies with this process (see
    :func:`die_with_parent`) and is killed at exit until :func:`forget`.
    """
    with open(output, "ab") as file:
        process = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=file,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent(),
        )
    with _live_lock:
        _live.add(process)
    return process


def forget(process: subprocess.Popen[bytes]) -> None:
    """Stop recording ``process``, which has exited: exit no longer kills it."""
    with _live_lock:
        _live.discard(process)


def stop_process(
    process: subprocess.Popen[bytes], timeout: float, *, resume: bool = False
) -> None:
    """Stop ``process`` with SIGTERM and wait; SIGKILL it after ``timeout``.

    With ``resume=True`` a SIGCONT follows the SIGTERM, so that a process
    frozen by SIGSTOP can act on it. A process that has exited is left alone.
    """
    if process.poll() is not None:
        return
    process.terminate()
    if resume:
        os.kill(process.pid, signal.SIGCONT)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def kill_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Kill ``process`` with SIGKILL and wait for it, if it still runs."""
    if process.poll() is None:
        process.kill()
        process.wait(timeout=timeout)


# -- ports ---------------------------------------------------------------------


def free_port(avoid: int) -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now, never ``avoid``.

    The operating system picks it; another process could take it before the
    server binds it, which the servers' ``start`` notices and retries.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((HOST, 0))
            port: int = probe.getsockname()[1]
        if port != avoid:
            return port


# -- logs ----------------------------------------------------------------------


def log_sizes(paths: Sequence[Path]) -> list[int]:
    """How long each file of ``paths`` is now (0 for one that does not exist)."""
    return [path.stat().st_size if path.exists() else 0 for path in paths]


def log_since(paths: Sequence[Path], offsets: Sequence[int]) -> str:
    """What was written to ``paths`` after ``offsets`` (from :func:`log_sizes`)."""
    text = ""
    for path, offset in zip(paths, offsets, strict=True):
        with contextlib.suppress(OSError), open(path, "rb") as file:
            file.seek(offset)
            text += file.read().decode(errors="replace")
    return text


def log_tail(paths: Sequence[Path], lines: int, nothing: str) -> str:
    """The last ``lines`` lines of each file of ``paths``, each under its name.

    ``nothing`` is the answer when none of them holds a line.
    """
    parts = []
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except FileNotFoundError:
            continue
        tail = "\n".join(text.splitlines()[-lines:])
        if tail:
            parts.append(f"--- {path.name} ---\n{tail}")
    return "\n".join(parts) or nothing
