"""A throw-away ``redis-server`` on a free loopback port, one per round.

The server keeps nothing on disk (``--save "" --appendonly no``) and
listens on 127.0.0.1 only; the machine's own Redis (on 6379) is never
used. It is spoken to with a few lines of RESP over a socket, so that the
process running the suite needs no Redis client of its own.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from types import TracebackType

__all__ = ["RedisServer", "free_port", "version_number", "version_text"]

_STARTUP_SECONDS = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def version_number(version: str) -> float:
    """``"7.0.15"`` as the number 70015 (major, minor and patch in decimal
    places), so that a round's dict of floats can carry it."""
    parts = [int(p) for p in [*version.split("."), "0", "0"][:3]]
    return float(parts[0] * 10_000 + parts[1] * 100 + parts[2])


def version_text(number: float) -> str:
    """The inverse of :func:`version_number`: 70015 as ``"7.0.15"``."""
    whole = round(number)
    return f"{whole // 10_000}.{whole // 100 % 100}.{whole % 100}"


class RedisServer:
    """``with RedisServer() as server:`` starts a fresh ``redis-server`` from
    ``PATH`` and kills it on exit.

    :raises RuntimeError: no ``redis-server`` on ``PATH``, or it did not
        answer within 10 seconds.
    """

    def __init__(self) -> None:
        self.port = 0
        self.version = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._directory: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        """The ``redis://`` URL of the server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "the redis target needs redis-server on PATH "
                "(Debian: apt-get install redis-server)"
            )
        self._directory = tempfile.TemporaryDirectory(prefix="bench-redis-")
        self.port = free_port()
        self._process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._directory.name,
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            self._wait_until_up()
            info = self.command("INFO", "server").decode()
        except BaseException:
            self._stop()
            raise
        for line in info.splitlines():
            if line.startswith("redis_version:"):
                self.version = line.partition(":")[2].strip()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop()

    def flush(self) -> None:
        """Drop every key (``FLUSHALL``), between two sides of a round."""
        self.command("FLUSHALL")

    def command(self, *words: str) -> bytes:
        """Send one command; return its reply's payload (a simple string's
        text or a bulk string's bytes).

        :raises RuntimeError: the server answered with an error.
        """
        request = f"*{len(words)}\r\n" + "".join(
            f"${len(w.encode())}\r\n{w}\r\n" for w in words
        )
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as conn:
            conn.sendall(request.encode())
            stream = conn.makefile("rb")
            head = stream.readline()
            if head.startswith(b"-"):
                raise RuntimeError(f"redis-server: {head[1:].decode().strip()}")
            if head.startswith(b"$"):
                size = int(head[1:])
                return stream.read(size + 2)[:size] if size >= 0 else b""
            return head[1:].strip()

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + _STARTUP_SECONDS
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self._process.returncode} "
                    f"on port {self.port}"
                )
            try:
                if self.command("PING") == b"PONG":
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer on port {self.port}")
            time.sleep(0.01)

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait()
        directory, self._directory = self._directory, None
        if directory is not None:
            directory.cleanup()
