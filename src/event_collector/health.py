"""Liveness and readiness endpoints for ASGI applications.

:meth:`CollectorQueue.health <event_collector.queue.CollectorQueue.health>`
returns a :class:`Health`; this module answers HTTP probes with it. For a
Starlette or FastAPI application, add the two routes::

    from event_collector.health import health_routes

    queue = CollectorQueue(collectors)
    app = Starlette(routes=[*health_routes(queue), ...], lifespan=...)
    # FastAPI: app.router.routes.extend(health_routes(queue))

Any other ASGI server or framework can serve (or mount) :func:`health_app`,
which needs no library at all.

``GET /livez`` answers 200 while the process looks sound and 503 when its
queue's monitor is dead or its event loop lags more than ``max_loop_lag``
seconds (restart it); ``GET /readyz`` answers 200 only while the queue is
``ready`` (send it traffic) and 503 while it starts, drains or is stopped.
Both bodies are the :class:`Health` fields as JSON::

    {"status": "ready", "loop_lag": 0.0004, "loop_lag_max": 0.0021,
     "monitor_alive": true, "oldest_event_age": 0.012}

:func:`health_routes` needs Starlette (FastAPI depends on it):
``pip install starlette``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from ._config import check_number
from ._health import DEFAULT_MAX_LOOP_LAG, Health
from .exceptions import ConfigError

if TYPE_CHECKING:
    from starlette.routing import Route

    from .queue import CollectorQueue

__all__ = ["DEFAULT_MAX_LOOP_LAG", "Health", "health_app", "health_routes"]

_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
_ASGIApp = Callable[[_Scope, _Receive, _Send], Awaitable[None]]

_HEADERS = [
    (b"content-type", b"application/json"),
    (b"cache-control", b"no-store"),
]


class _Endpoint:
    """An ASGI app answering one probe of one queue, whatever the path."""

    __slots__ = ("_max_loop_lag", "_queue", "_ready")

    def __init__(self, queue: CollectorQueue, *, ready: bool, max_loop_lag: float):
        self._queue = queue
        self._ready = ready
        self._max_loop_lag = max_loop_lag

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            raise RuntimeError(f"a health endpoint serves HTTP (got {scope['type']})")
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            await _respond(send, 405, b"", [(b"allow", b"GET, HEAD")])
            return
        health = self._queue.health()
        ok = health.is_ready if self._ready else health.is_live(self._max_loop_lag)
        body = json.dumps(health.as_dict()).encode()
        headers = [*_HEADERS, (b"content-length", str(len(body)).encode())]
        await _respond(
            send, 200 if ok else 503, b"" if method == "HEAD" else body, headers
        )

    def __repr__(self) -> str:
        kind = "readiness" if self._ready else "liveness"
        return f"<health {kind} endpoint of {self._queue!r}>"


async def _respond(
    send: _Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _endpoints(
    queue: CollectorQueue, live_path: str, ready_path: str, max_loop_lag: float
) -> tuple[_Endpoint, _Endpoint]:
    if not callable(getattr(queue, "health", None)):
        raise ConfigError(f"queue must be a CollectorQueue (got queue={queue!r})")
    for name, path in (("live_path", live_path), ("ready_path", ready_path)):
        if not isinstance(path, str) or not path.startswith("/"):
            raise ConfigError(
                f"{name} must be a str starting with / (got {name}={path!r})"
            )
    if live_path == ready_path:
        raise ConfigError(
            "live_path and ready_path must differ "
            f"(got live_path={live_path!r}, ready_path={ready_path!r})"
        )
    lag = check_number("max_loop_lag", max_loop_lag, above=0.0, unit="seconds")
    return (
        _Endpoint(queue, ready=False, max_loop_lag=lag),
        _Endpoint(queue, ready=True, max_loop_lag=lag),
    )


def health_app(
    queue: CollectorQueue,
    *,
    live_path: str = "/livez",
    ready_path: str = "/readyz",
    max_loop_lag: float = DEFAULT_MAX_LOOP_LAG,
) -> _ASGIApp:
    """A plain ASGI application serving ``queue``'s liveness probe at
    ``live_path`` and its readiness probe at ``ready_path``.

    It answers ``GET`` and ``HEAD`` there (405 for another method), 404 at
    any other path, and the ``lifespan`` protocol with nothing to do: serve
    it on a port of its own (``uvicorn.Server``), or mount it in a framework
    that mounts ASGI apps. Under a mount, the paths are relative to the
    mount point (``scope["root_path"]``).

    :param queue: the queue to report on; it may be started later.
    :param live_path: the liveness probe's path.
    :param ready_path: the readiness probe's path.
    :param max_loop_lag: seconds of event-loop lag
        (:attr:`Health.loop_lag_max`) above which the liveness probe fails.
    :raises ~event_collector.exceptions.ConfigError: a path that does not
        start with ``/``, two equal paths, or a ``max_loop_lag`` not above 0.
    """
    live, ready = _endpoints(queue, live_path, ready_path, max_loop_lag)
    routes = {live_path: live, ready_path: ready}

    async def app(scope: _Scope, receive: _Receive, send: _Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if kind != "http":
            raise RuntimeError(f"the health app serves HTTP (got a {kind} scope)")
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        endpoint = routes.get(path)
        if endpoint is None:
            await _respond(send, 404, b"", [(b"content-length", b"0")])
            return
        await endpoint(scope, receive, send)

    return app


def health_routes(
    queue: CollectorQueue,
    *,
    live_path: str = "/livez",
    ready_path: str = "/readyz",
    max_loop_lag: float = DEFAULT_MAX_LOOP_LAG,
) -> list[Route]:
    """Starlette routes (FastAPI takes them too) for ``queue``'s liveness
    probe at ``live_path`` and its readiness probe at ``ready_path``; they
    answer ``GET`` and ``HEAD``.

    The parameters are those of :func:`health_app`. Starlette is imported
    here: this module itself does not need it.

    :raises ImportError: Starlette is not installed.
    :raises ~event_collector.exceptions.ConfigError: as :func:`health_app`.
    """
    live, ready = _endpoints(queue, live_path, ready_path, max_loop_lag)
    try:
        from starlette.routing import Route
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "event_collector.health.health_routes needs Starlette (FastAPI "
            "brings it): pip install starlette; health_app needs nothing"
        ) from exc
    return [
        Route(live_path, live, methods=["GET"], name="event_collector_livez"),
        Route(ready_path, ready, methods=["GET"], name="event_collector_readyz"),
    ]
