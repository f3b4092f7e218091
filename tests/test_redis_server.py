"""The test helper :mod:`redis_server` itself: the Redis transport's tests
rely on it to crash, restart, freeze and restrict a real server, so each of
those must do what it says.

Every test is bounded: starts by ``start_timeout``, clients by socket
timeouts, child processes by ``timeout=``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from redis_server import (
    HOST,
    STANDARD_PORT,
    RedisServer,
    RedisServerError,
    free_port,
    redis_server,  # noqa: F401
    redis_server_module,  # noqa: F401
    require_redis_server,
)

TESTS = Path(__file__).parent


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, guard: float = 10.0) -> bool:
    """Wait until process ``pid`` is gone; False if it is still there at ``guard``."""
    deadline = time.monotonic() + guard
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def aof_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A started server that keeps every acknowledged write in its AOF."""
    require_redis_server()
    with RedisServer(tmp_path / "redis", aof=True) as server:
        yield server


# -- starting ------------------------------------------------------------------


def test_a_started_server_answers_on_its_own_loopback_port(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    assert redis_server.port != STANDARD_PORT
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    client = redis_server.client()
    assert client.ping() is True
    assert client.set("k", "v") is True
    assert client.get("k") == b"v"
    info = client.info("server")
    assert info["process_id"] == redis_server.pid
    assert info["tcp_port"] == redis_server.port
    assert client.config_get("bind") == {"bind": HOST}
    assert client.config_get("appendonly") == {"appendonly": "no"}
    assert client.config_get("save") == {"save": ""}
    # The URL reaches the same server.
    with redis.Redis.from_url(redis_server.url, socket_timeout=5) as by_url:
        assert by_url.get("k") == b"v"


def test_the_module_server_is_shared(redis_server_module: RedisServer) -> None:  # noqa: F811
    assert redis_server_module.running
    assert redis_server_module.client().ping() is True


def test_a_stopped_server_leaves_no_process(tmp_path: Path) -> None:
    require_redis_server()
    server = RedisServer(tmp_path)
    with server:
        pid = server.pid
        assert _alive(pid)
    assert not server.running
    assert _wait_gone(pid, guard=1.0)
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.pid


def test_a_server_that_cannot_start_says_why(tmp_path: Path) -> None:
    require_redis_server()
    server = RedisServer(tmp_path, extra=["--no-such-option", "1"])
    started = time.monotonic()
    with pytest.raises(RedisServerError, match="no-such-option"):
        server.start()
    assert time.monotonic() - started < 5
    assert not server.running


def test_the_standard_port_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="6379"):
        RedisServer(tmp_path, port=STANDARD_PORT)


def test_a_taken_port_that_was_chosen_for_it_is_replaced(tmp_path: Path) -> None:
    require_redis_server()
    server = RedisServer(tmp_path)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((HOST, server.port))
        squatter.listen()
        taken = server.port
        with server:
            assert server.port != taken
            assert server.client().ping() is True


def test_a_given_port_is_waited_for_while_briefly_busy(tmp_path: Path) -> None:
    require_redis_server()
    port = free_port()
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind((HOST, port))
    squatter.listen()
    release = threading.Timer(0.3, squatter.close)
    release.start()
    try:
        with RedisServer(tmp_path, port=port) as server:
            assert server.port == port
            assert server.client().ping() is True
    finally:
        release.cancel()
        squatter.close()


# -- crashes and restarts ------------------------------------------------------


def test_kill_then_restart_keeps_acknowledged_writes_with_aof(
    aof_server: RedisServer,
) -> None:
    client = aof_server.client()
    client.xadd("events", {"n": "1"})
    client.set("k", "v")
    port, pid = aof_server.port, aof_server.pid

    aof_server.kill()
    assert not aof_server.running
    assert _wait_gone(pid, guard=1.0)
    with pytest.raises(redis.ConnectionError):
        aof_server.client(retry=Retry(NoBackoff(), 0)).ping()

    aof_server.restart()
    assert aof_server.port == port
    assert aof_server.pid != pid
    assert client.get("k") == b"v"
    assert client.xlen("events") == 1


def test_restart_empty_comes_back_with_no_keys(aof_server: RedisServer) -> None:
    client = aof_server.client()
    client.set("k", "v")
    aof_server.kill()
    aof_server.restart(empty=True)
    assert client.dbsize() == 0
    assert client.get("k") is None


def test_without_aof_a_restart_loses_the_keys(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    client = redis_server.client()
    client.set("k", "v")
    redis_server.restart()
    assert client.dbsize() == 0


# -- a server that hangs -------------------------------------------------------


def test_a_paused_server_times_out_and_answers_once_resumed(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    client = redis_server.client(socket_timeout=0.2, retry=Retry(NoBackoff(), 0))
    assert client.ping() is True
    redis_server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            client.ping()
        assert time.monotonic() - started < 2
    finally:
        redis_server.resume()
    assert client.ping() is True


def test_a_paused_server_still_stops(tmp_path: Path) -> None:
    require_redis_server()
    server = RedisServer(tmp_path).start()
    pid = server.pid
    server.pause()
    server.stop(timeout=5)
    assert _wait_gone(pid, guard=1.0)


# -- least-privilege users -----------------------------------------------------


def test_an_acl_user_can_do_what_its_rules_allow_and_nothing_else(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    url = redis_server.acl_user("reader", "p@ss:w/rd", ["~allowed:*", "+get", "+ping"])
    assert url == (f"redis://reader:p%40ss%3Aw%2Frd@127.0.0.1:{redis_server.port}/0")
    redis_server.client().set("allowed:k", "v")
    redis_server.client().set("secret:k", "v")

    with redis.Redis.from_url(url, socket_timeout=5) as reader:
        assert reader.ping() is True
        assert reader.get("allowed:k") == b"v"
        with pytest.raises(redis.exceptions.NoPermissionError):
            reader.set("allowed:k", "w")  # a command it was not given
        with pytest.raises(redis.exceptions.NoPermissionError):
            reader.get("secret:k")  # a key outside its pattern
    assert redis_server.client().get("allowed:k") == b"v"

    with (
        pytest.raises(redis.exceptions.AuthenticationError),
        redis.Redis(
            host=HOST,
            port=redis_server.port,
            username="reader",
            password="wrong",
            socket_timeout=5,
            retry=Retry(NoBackoff(), 0),  # redis-py counts it a connection error
        ) as intruder,
    ):
        intruder.ping()


def test_an_acl_user_survives_a_restart(redis_server: RedisServer) -> None:  # noqa: F811
    url = redis_server.acl_user("pinger", "secret", ["+ping"])
    redis_server.restart()
    with redis.Redis.from_url(url, socket_timeout=5) as pinger:
        assert pinger.ping() is True
        with pytest.raises(redis.exceptions.NoPermissionError):
            pinger.get("k")


# -- no orphans ----------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    from redis_server import RedisServer
    server = RedisServer(Path(sys.argv[2])).start()
    print(server.pid, flush=True)
    if sys.argv[3] == "hang":
        sys.stdin.read()
    """
)


def test_a_server_left_running_dies_when_python_exits(tmp_path: Path) -> None:
    require_redis_server()
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(TESTS), str(tmp_path), "exit"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    pid = int(done.stdout)
    assert _wait_gone(pid, guard=5.0), f"redis-server {pid} outlived its test"


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_a_server_dies_when_its_test_process_is_killed(tmp_path: Path) -> None:
    require_redis_server()
    with subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(TESTS), str(tmp_path), "hang"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None
            pid = int(child.stdout.readline())
            assert _alive(pid)
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
        finally:
            child.kill()
            child.wait(timeout=10)
    assert _wait_gone(pid, guard=5.0), f"redis-server {pid} outlived its test"


# -- skip or fail --------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "fails"),
    [
        ({}, False),
        ({"CI": "0"}, False),
        ({"CI": "false"}, False),
        ({"CI": "FALSE"}, False),
        ({"CI": ""}, False),
        ({"EVENT_COLLECTOR_REQUIRE_REDIS": "0"}, False),
        ({"CI": "true"}, True),
        ({"CI": "1"}, True),
        ({"EVENT_COLLECTOR_REQUIRE_REDIS": "1"}, True),
    ],
)
def test_no_redis_server_skips_except_in_ci(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], fails: bool
) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("EVENT_COLLECTOR_REQUIRE_REDIS", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PATH", "/nonexistent")
    expected = pytest.fail.Exception if fails else pytest.skip.Exception
    with pytest.raises(expected, match="redis-server is not on PATH"):
        require_redis_server()
