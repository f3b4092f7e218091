"""A real ``redis-server`` for tests, started and owned by the test itself.

:class:`RedisServer` runs its own ``redis-server`` (the one on ``PATH``) on a
free port of 127.0.0.1, with its files in a directory the test gives it. It
never touches the standard port 6379: a system Redis may run there, and a test
that happened to pass against it would prove nothing about its own server.

A test can stop, kill, restart, pause and resume the server, which is how the
Redis transport's tests produce a crash, a restart that lost every key and a
server that accepts connections but does not answer.

A test module takes a server from the :func:`redis_server` fixture (one per
test) or :func:`redis_server_module` (one per module), importing the fixture
by name::

    from redis_server import RedisServer, redis_server  # noqa: F401

Where ``redis-server`` is not installed the fixtures skip the test, except in
CI (``CI`` set, or ``EVENT_COLLECTOR_REQUIRE_REDIS=1``), where a skip would
hide that the tests never ran, so they fail instead. See
:func:`require_redis_server`.

Every server still running when the Python process exits is killed, and on
Linux a server started from the main thread also dies with that process when
it is killed itself, so no test leaves a ``redis-server`` behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import pytest
import redis

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

_die_with_parent = server_process.die_with_parent
"""The ``preexec_fn`` maker of :mod:`server_process`, by its old name here."""

STANDARD_PORT = 6379
"""Redis's standard port, which a test server never uses."""

_REQUIRE_ENV = "EVENT_COLLECTOR_REQUIRE_REDIS"


# -- what to do when there is no redis-server ---------------------------------


def redis_server_required() -> bool:
    """Whether a missing ``redis-server`` must fail the tests instead of skipping.

    It must in CI (``CI`` set to anything but empty, ``0`` or ``false``) and
    wherever ``EVENT_COLLECTOR_REQUIRE_REDIS=1``: there the Redis tests are
    part of what is checked, and a skip would pass a run that checked nothing.
    """
    return required_here(_REQUIRE_ENV)


def require_redis_server() -> str:
    """Return the path of ``redis-server``, or skip the test when there is none.

    In CI (see :func:`redis_server_required`) a missing server fails the test
    instead.
    """
    path = shutil.which("redis-server")
    if path is None:
        skip_or_fail(
            "redis-server is not on PATH (apt-get install redis-server)",
            "the Redis tests",
            _REQUIRE_ENV,
        )
    return path


# -- ports ---------------------------------------------------------------------


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now (never 6379).

    The operating system picks it; another process could take it before the
    server binds it, which :meth:`RedisServer.start` notices and retries.
    """
    return server_process.free_port(STANDARD_PORT)


def _ask(port: int, command: bytes, timeout: float) -> bytes:
    """Send one inline command to 127.0.0.1:``port``; return the whole reply.

    Plain sockets, not redis-py, so that the readiness check works whatever
    the client library does about retries, and before any user is set up.
    """
    with socket.create_connection((HOST, port), timeout=timeout) as conn:
        conn.sendall(command + b"\r\n")
        reply = b""
        while b"\r\n" not in reply:
            chunk = conn.recv(65536)
            if not chunk:
                return reply
            reply += chunk
        if reply.startswith(b"$"):  # a bulk string: read up to its length
            header, _, body = reply.partition(b"\r\n")
            length = int(header[1:])
            while len(body) < length + 2:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                body += chunk
            return header + b"\r\n" + body
        return reply


# -- the server ----------------------------------------------------------------


class RedisServerError(RuntimeError):
    """The server did not start, or did not stop, in time."""


class RedisServer:
    """A ``redis-server`` process on a free port of 127.0.0.1, owned by a test.

    ``directory`` holds its files: the log (``redis.log``), the server's own
    output (``redis.out``), and with ``aof=True`` the append-only files. With
    ``aof=True`` every write is fsynced before it is acknowledged
    (``appendfsync always``), so a kill loses nothing acknowledged; without it
    the server keeps nothing on disk and a restart comes back empty.

    ``port`` picks the port (the default is a free one, chosen now) and
    ``extra`` adds command-line options, as in ``["--maxmemory", "1mb"]``.
    ``start_timeout`` bounds every start, in seconds.

    The server is started by :meth:`start` or by entering it as a context
    manager; leaving the context stops it and closes the clients from
    :meth:`client`.
    """

    LOG_NAME = "redis.log"
    OUTPUT_NAME = "redis.out"
    RDB_NAME = "dump.rdb"
    AOF_DIR_NAME = "appendonlydir"
    AOF_NAME = "appendonly.aof"

    def __init__(
        self,
        directory: Path,
        *,
        aof: bool = False,
        port: int | None = None,
        extra: list[str] | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        if port == STANDARD_PORT:
            raise ValueError(
                f"port {STANDARD_PORT} belongs to the system Redis; "
                "a test server never uses it"
            )
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.aof = aof
        self.extra = list(extra or [])
        self.start_timeout = start_timeout
        self._port_chosen = port is not None
        self._port = port if port is not None else free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._clients: list[redis.Redis] = []
        self._users: dict[str, list[str]] = {}

    # -- what the server is ----------------------------------------------------

    @property
    def port(self) -> int:
        """The server's port; it keeps it across restarts."""
        return self._port

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``: database 0 as the default user."""
        return f"redis://{HOST}:{self._port}/0"

    @property
    def pid(self) -> int:
        """The process id of the running server (RuntimeError if none runs)."""
        if self._process is None:
            raise RuntimeError("the Redis server is not running")
        return self._process.pid

    @property
    def running(self) -> bool:
        """Whether a server process exists (it may be paused)."""
        return self._process is not None and self._process.poll() is None

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self.directory / self.LOG_NAME

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the server's log and of its own output."""
        return log_tail(self._log_files(), lines, "(the server wrote nothing)")

    def command(self) -> list[str]:
        """The command line :meth:`start` runs."""
        executable = shutil.which("redis-server")
        if executable is None:
            raise RedisServerError("redis-server is not on PATH")
        if self.aof:
            persistence = [
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--appendfilename",
                self.AOF_NAME,
                "--appenddirname",
                self.AOF_DIR_NAME,
            ]
        else:
            persistence = ["--appendonly", "no"]
        return [
            executable,
            "--port",
            str(self._port),
            "--bind",
            HOST,
            "--protected-mode",
            "yes",
            "--daemonize",
            "no",
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.log_path),
            "--dbfilename",
            self.RDB_NAME,
            # No snapshots, in either mode: with aof=True the append-only
            # file is what survives, and nothing else is written behind the
            # test's back.
            "--save",
            "",
            *persistence,
            *self.extra,
        ]

    # -- starting and stopping -------------------------------------------------

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING; return it.

        A start that finds its port taken tries again: on a new free port if
        the port was chosen for it and it never ran, on the same port
        otherwise (after a restart another process may hold it briefly).
        Raises :class:`RedisServerError` with the end of the server's log when
        it does not start within ``start_timeout`` seconds.
        """
        if self.running:
            raise RuntimeError("the Redis server is already running")
        attempts = 5
        for attempt in range(1, attempts + 1):
            try:
                self._start_once()
            except _PortBusy:
                if attempt == attempts:
                    raise RedisServerError(
                        f"port {self._port} stayed busy for {attempts} starts\n"
                        + self.log_tail()
                    ) from None
                if not self._port_chosen:
                    self._port = free_port()
                else:
                    time.sleep(0.2 * attempt)
                continue
            break
        # It ran on this port: from now on it keeps it.
        self._port_chosen = True
        self._apply_users()
        return self

    def _start_once(self) -> None:
        """Run the server once and wait for it; raise _PortBusy if it cannot bind."""
        offsets = log_sizes(self._log_files())
        process = spawn(self.command(), self.directory / self.OUTPUT_NAME)
        self._process = process
        self._paused = False
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = process.poll()
            if code is not None:
                self._forget()
                if "Address already in use" in log_since(self._log_files(), offsets):
                    raise _PortBusy
                raise RedisServerError(
                    f"redis-server exited with code {code} while starting "
                    f"on port {self._port}\n" + self.log_tail()
                )
            if self._answers():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise RedisServerError(
                    f"redis-server did not answer PING on port {self._port} "
                    f"within {self.start_timeout} s\n" + self.log_tail()
                )
            time.sleep(0.02)

    def _log_files(self) -> tuple[Path, Path]:
        """The server's log and the file of its own output."""
        return self.log_path, self.directory / self.OUTPUT_NAME

    def _answers(self) -> bool:
        """Whether this server (not another process on the port) answers PING.

        The timeout is short: a server that is up answers at once, and
        whatever else holds the port may accept and never answer. A slow
        answer only means one more try before the deadline.
        """
        try:
            pong = _ask(self._port, b"PING", timeout=0.5)
            if pong.startswith(b"-NOAUTH"):  # a password in `extra`: it is up
                return True
            if not pong.startswith(b"+PONG"):  # -LOADING: still reading its files
                return False
            info = _ask(self._port, b"INFO server", timeout=0.5)
        except OSError:
            return False
        return f"process_id:{self.pid}\r\n".encode() in info

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server with SIGTERM and wait; SIGKILL it after ``timeout``.

        With ``aof=True`` the server flushes its append-only file as it stops.
        A paused server is resumed first so that it can act on the signal.
        Stopping a server that does not run does nothing.
        """
        if self._process is None:
            return
        stop_process(self._process, timeout, resume=self._paused)
        self._forget()

    def kill(self) -> None:
        """Kill the server with SIGKILL and wait: a crash, as the clients see it.

        Killing a server that does not run does nothing.
        """
        if self._process is None:
            return
        kill_process(self._process)
        self._forget()

    def _forget(self) -> None:
        """Drop the process, which has exited."""
        if self._process is not None:
            forget(self._process)
        self._process = None
        self._paused = False

    def restart(self, empty: bool = False) -> RedisServer:
        """Stop the server if it runs and start it again on the same port.

        With ``empty=True`` its files are deleted in between, so it comes back
        with no keys, as a server whose disk was lost. The users made by
        :meth:`acl_user` are made again either way.
        """
        self.stop()
        if empty:
            self.delete_files()
        return self.start()

    def delete_files(self) -> None:
        """Delete the server's data files (the RDB snapshot and the AOF)."""
        if self.running:
            raise RuntimeError("stop the Redis server before deleting its files")
        shutil.rmtree(self.directory / self.AOF_DIR_NAME, ignore_errors=True)
        for name in (self.RDB_NAME, self.AOF_NAME):
            (self.directory / name).unlink(missing_ok=True)

    def pause(self) -> None:
        """Freeze the server with SIGSTOP.

        The kernel still accepts its connections, but nothing is answered
        until :meth:`resume`: a server that hangs, as a client sees it.
        """
        os.kill(self.pid, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Let a paused server run again with SIGCONT."""
        os.kill(self.pid, signal.SIGCONT)
        self._paused = False

    def close(self) -> None:
        """Stop the server and close every client :meth:`client` returned."""
        try:
            self.stop()
        finally:
            clients, self._clients = self._clients, []
            for client in clients:
                with contextlib.suppress(Exception):
                    client.close()

    def __enter__(self) -> RedisServer:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- clients and users -----------------------------------------------------

    def client(self, **kwargs: Any) -> redis.Redis:
        """A synchronous redis-py client of database 0, closed by :meth:`close`.

        Socket timeouts default to 5 seconds so that a test cannot hang on
        it; ``kwargs`` go to :class:`redis.Redis` and override any default
        (``decode_responses=True``, ``username=...``, ``password=...``).
        """
        options: dict[str, Any] = {
            "host": HOST,
            "port": self._port,
            "db": 0,
            "socket_timeout": 5.0,
            "socket_connect_timeout": 5.0,
        }
        options.update(kwargs)
        client = redis.Redis(**options)
        self._clients.append(client)
        return client

    def acl_user(self, name: str, password: str, rules: list[str]) -> str:
        """Make (or remake) the user ``name`` with only ``rules``; return its URL.

        The user starts from ``reset`` (no commands, no keys, no channels),
        is switched on with ``password`` and then gets ``rules``, as in
        ``["~events:*", "+@stream", "+ping"]``, so it can do what the rules
        allow and nothing else. The URL is
        ``redis://name:password@127.0.0.1:PORT/0``. The server keeps no ACL
        file, so a restart would forget the user: :meth:`start` makes it again.
        """
        self._users[name] = ["reset", "on", f">{password}", *rules]
        self._set_user(name)
        credentials = f"{quote(name, safe='')}:{quote(password, safe='')}"
        return f"redis://{credentials}@{HOST}:{self._port}/0"

    def _set_user(self, name: str) -> None:
        """Run ``ACL SETUSER`` for the recorded user ``name``."""
        with redis.Redis(
            host=HOST, port=self._port, socket_timeout=5.0, socket_connect_timeout=5.0
        ) as admin:
            admin.execute_command("ACL", "SETUSER", name, *self._users[name])

    def _apply_users(self) -> None:
        """Make again, after a start, the users that :meth:`acl_user` made."""
        for name in self._users:
            self._set_user(name)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RedisServer {self.url} aof={self.aof} {state}>"


class _PortBusy(Exception):
    """The server exited because another process holds its port."""


# -- fixtures ------------------------------------------------------------------


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A started Redis server of the test's own, stopped after the test.

    It keeps nothing on disk (``aof=False``); a test that restarts a server
    and needs its keys back makes its own ``RedisServer(..., aof=True)``.
    """
    require_redis_server()
    with RedisServer(tmp_path / "redis-server") as server:
        yield server


@pytest.fixture(scope="module")
def redis_server_module(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RedisServer]:
    """A started Redis server shared by the tests of a module, stopped after it.

    The tests share its keys: each should use keys of its own, or flush the
    database first.
    """
    require_redis_server()
    with RedisServer(tmp_path_factory.mktemp("redis-server")) as server:
        yield server
