"""A real ``mosquitto`` MQTT broker for tests, started and owned by the test.

:class:`MosquittoServer` runs its own ``mosquitto`` on a free port of
127.0.0.1, with a configuration file it writes into a directory the test
gives it: one listener on that port and address, anonymous clients allowed,
nothing kept on disk (a restart comes back with no sessions and no retained
messages). It never uses the standard port 1883, where a system broker may
run.

A test can stop, kill and restart the broker, which is how the MQTT example's
tests take the broker away under a running client.

A test takes a broker from the :func:`mosquitto_server` fixture, importing it
by name::

    from mosquitto_server import MosquittoServer, mosquitto_server  # noqa: F401

``mosquitto`` is looked up on ``PATH``, then in ``/usr/sbin`` and
``/usr/local/sbin`` (where Debian installs it, and which a non-root ``PATH``
may lack). Where there is none the fixture skips the test, except in CI
(``CI`` set, or ``EVENT_COLLECTOR_REQUIRE_MQTT=1``), where a skip would hide
that the tests never ran, so it fails instead. See :func:`require_mosquitto`.

Every broker still running when the Python process exits is killed, and on
Linux a broker started from the main thread also dies with that process when
it is killed itself.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

import server_process
from server_process import HOST as HOST
from server_process import (
    forget,
    kill_process,
    log_since,
    log_sizes,
    log_tail,
    required_here,
    skip_or_fail,
    spawn,
    stop_process,
)

STANDARD_PORT = 1883
"""MQTT's standard port, which a test broker never uses."""

_REQUIRE_ENV = "EVENT_COLLECTOR_REQUIRE_MQTT"
_SBIN = ("/usr/sbin", "/usr/local/sbin")


# -- finding mosquitto ---------------------------------------------------------


def mosquitto_path() -> str | None:
    """The ``mosquitto`` executable: on ``PATH``, else in an ``sbin``; or None."""
    return shutil.which("mosquitto") or shutil.which(
        "mosquitto", path=os.pathsep.join(_SBIN)
    )


def mosquitto_required() -> bool:
    """Whether a missing ``mosquitto`` must fail the tests instead of skipping.

    It must in CI (``CI`` set to anything but empty, ``0`` or ``false``) and
    wherever ``EVENT_COLLECTOR_REQUIRE_MQTT=1``: there the MQTT tests are part
    of what is checked, and a skip would pass a run that checked nothing.
    """
    return required_here(_REQUIRE_ENV)


def require_mosquitto() -> str:
    """Return the path of ``mosquitto``, or skip the test when there is none.

    In CI (see :func:`mosquitto_required`) a missing broker fails the test
    instead.
    """
    path = mosquitto_path()
    if path is None:
        skip_or_fail(
            "mosquitto is not on PATH nor in /usr/sbin (apt-get install mosquitto)",
            "the MQTT tests",
            _REQUIRE_ENV,
        )
    return path


# -- ports and the handshake ---------------------------------------------------


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now (never 1883)."""
    return server_process.free_port(STANDARD_PORT)


# CONNECT, MQTT 3.1.1, clean session, keepalive 10 s, client id "probe".
_CONNECT = bytes(
    [0x10, 17, 0, 4, *b"MQTT", 4, 0x02, 0, 10, 0, 5, *b"probe"],
)
_CONNACK_ACCEPTED = bytes([0x20, 2, 0, 0])
_DISCONNECT = bytes([0xE0, 0])


def mqtt_answers(port: int, timeout: float = 0.5) -> bool:
    """Whether an MQTT broker on 127.0.0.1:``port`` accepts a connection.

    A plain socket sends CONNECT and reads CONNACK, so the check does not
    depend on a client library; any other answer, or none, is False.
    """
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as conn:
            conn.sendall(_CONNECT)
            reply = b""
            while len(reply) < len(_CONNACK_ACCEPTED):
                chunk = conn.recv(16)
                if not chunk:
                    return False
                reply += chunk
            if reply[:2] != _CONNACK_ACCEPTED[:2] or reply[3] != 0:
                return False
            conn.sendall(_DISCONNECT)
            return True
    except OSError:
        return False


# -- the broker ----------------------------------------------------------------


class MosquittoServerError(RuntimeError):
    """The broker did not start in time, or exited while starting."""


class MosquittoServer:
    """A ``mosquitto`` process on a free port of 127.0.0.1, owned by a test.

    ``directory`` holds its configuration (``mosquitto.conf``), its log
    (``mosquitto.log``) and its own output (``mosquitto.out``). ``port``
    picks the port (a free one by default, chosen now); ``start_timeout``
    bounds every start, in seconds.

    The broker is started by :meth:`start` or by entering it as a context
    manager; leaving the context stops it.
    """

    CONFIG_NAME = "mosquitto.conf"
    LOG_NAME = "mosquitto.log"
    OUTPUT_NAME = "mosquitto.out"

    def __init__(
        self, directory: Path, *, port: int | None = None, start_timeout: float = 10.0
    ) -> None:
        if port == STANDARD_PORT:
            raise ValueError(
                f"port {STANDARD_PORT} belongs to the system broker; "
                "a test broker never uses it"
            )
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.start_timeout = start_timeout
        self._port_chosen = port is not None
        self._port = port if port is not None else free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        """The broker's port; it keeps it across restarts."""
        return self._port

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:PORT``."""
        return f"mqtt://{HOST}:{self._port}"

    @property
    def running(self) -> bool:
        """Whether the broker process exists."""
        return self._process is not None and self._process.poll() is None

    @property
    def config_path(self) -> Path:
        """The configuration file :meth:`start` writes."""
        return self.directory / self.CONFIG_NAME

    def config(self) -> str:
        """The broker's configuration: one loopback listener, anonymous
        clients, no persistence, everything logged to the log file."""
        # Run as root, mosquitto switches to the user "mosquitto", which
        # could not write the test's directory: stay the user we are.
        user = pwd.getpwuid(os.getuid()).pw_name
        return "\n".join(
            [
                f"listener {self._port} {HOST}",
                "allow_anonymous true",
                "persistence false",
                f"user {user}",
                f"log_dest file {self.directory / self.LOG_NAME}",
                "log_type all",
                "connection_messages true",
                "",
            ]
        )

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the broker's log and of its output."""
        return log_tail(self._log_files(), lines, "(the broker wrote nothing)")

    def start(self) -> MosquittoServer:
        """Start the broker and wait until it accepts an MQTT connection.

        A start that finds its port taken tries again: on a new free port if
        the port was chosen for it and it never ran, on the same port
        otherwise (a restart may find the old socket not yet released).
        Raises :class:`MosquittoServerError` with the end of the log when it
        does not start within ``start_timeout`` seconds.
        """
        if self.running:
            raise RuntimeError("the broker is already running")
        attempts = 5
        for attempt in range(1, attempts + 1):
            if self._start_once():
                break
            if attempt == attempts:
                raise MosquittoServerError(
                    f"port {self._port} stayed busy for {attempts} starts\n"
                    + self.log_tail()
                )
            if self._port_chosen:
                time.sleep(0.2 * attempt)
            else:
                self._port = free_port()
        self._port_chosen = True
        return self

    def _start_once(self) -> bool:
        """Run the broker once and wait for it; False if its port was busy."""
        executable = mosquitto_path()
        if executable is None:
            raise MosquittoServerError("mosquitto is not on PATH")
        self.config_path.write_text(self.config())
        logs = self._log_files()
        offsets = log_sizes(logs)
        process = spawn(
            [executable, "-c", str(self.config_path)], self.directory / self.OUTPUT_NAME
        )
        self._process = process
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = process.poll()
            if code is not None:
                self._forget()
                if "Address already in use" in log_since(logs, offsets):
                    return False
                raise MosquittoServerError(
                    f"mosquitto exited with code {code} while starting on port "
                    f"{self._port}\n" + self.log_tail()
                )
            # The log says "running" once this broker holds its listener: an
            # answer before that could come from another process on the port.
            if " running" in log_since(logs, offsets) and mqtt_answers(self._port):
                return True
            if time.monotonic() > deadline:
                self.kill()
                raise MosquittoServerError(
                    f"mosquitto did not accept a connection on port {self._port} "
                    f"within {self.start_timeout} s\n" + self.log_tail()
                )
            time.sleep(0.02)

    def _log_files(self) -> tuple[Path, Path]:
        """The broker's log and the file of its own output."""
        return self.directory / self.LOG_NAME, self.directory / self.OUTPUT_NAME

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker with SIGTERM and wait; SIGKILL it after ``timeout``.

        Its clients see their connections close. Stopping a broker that does
        not run does nothing.
        """
        if self._process is None:
            return
        stop_process(self._process, timeout)
        self._forget()

    def kill(self) -> None:
        """Kill the broker with SIGKILL and wait: a crash, as clients see it."""
        if self._process is None:
            return
        kill_process(self._process)
        self._forget()

    def restart(self) -> MosquittoServer:
        """Stop the broker if it runs and start it again on the same port.

        With no persistence it comes back empty: no sessions, no
        subscriptions, no queued or retained messages.
        """
        self.stop()
        return self.start()

    def _forget(self) -> None:
        """Drop the process, which has exited."""
        if self._process is not None:
            forget(self._process)
        self._process = None

    def __enter__(self) -> MosquittoServer:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<MosquittoServer {self.url} {state}>"


@pytest.fixture
def mosquitto_server(tmp_path: Path) -> Iterator[MosquittoServer]:
    """A started broker of the test's own, stopped after the test."""
    require_mosquitto()
    with MosquittoServer(tmp_path / "mosquitto") as server:
        yield server
