"""Commands packed by hiredis's C packer on the asyncio client.

redis-py's synchronous connections pack commands with hiredis when it is
installed; its asyncio connections always pack them in Python, which cost
a quarter of a worker's CPU time and a sixth of a publisher's on the
``redis`` benchmark (``python -m benchmarks --only redis``: every event
is an ``XADD`` to pack on each side, and an acknowledgement holds one
argument per entry id). Connections made here pack with hiredis instead,
and fall back to redis-py's own packing for what hiredis does not take
(a memoryview, a bool: redis-py then raises its usual ``DataError``).
Re-run that benchmark before removing this.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis comes with the redis extra
    _hiredis_pack = None  # type: ignore[assignment]

__all__ = ["client_from_url"]

_classes: dict[type[Any], type[Any]] = {}


def _packing(base: type[Any]) -> type[Any]:
    """``base`` (a redis-py asyncio connection class) packing with hiredis."""
    made = _classes.get(base)
    if made is None:
        pack = _hiredis_pack
        assert pack is not None

        def pack_command(self: Any, *args: Any) -> list[bytes]:
            # As redis-py does: a first argument with spaces ("XINFO
            # CONSUMERS") is several words of the command.
            first = args[0]
            if isinstance(first, str):
                if " " in first:
                    args = (*first.encode().split(), *args[1:])
            elif isinstance(first, bytes) and b" " in first:
                args = (*first.split(), *args[1:])
            try:
                return [pack(args)]
            except TypeError:
                packed: list[bytes] = base.pack_command(self, *args)
                return packed

        made = _classes[base] = type(
            f"HiredisPacking{base.__name__}", (base,), {"pack_command": pack_command}
        )
    return made


def client_from_url(url: str, **options: Any) -> Any:
    """``redis.asyncio.Redis.from_url(url, **options)``, whose connections
    pack commands with hiredis when it is installed and the encoding is
    UTF-8 (hiredis encodes text as UTF-8 only)."""
    pool = aioredis.ConnectionPool.from_url(url, **options)
    kwargs = pool.connection_kwargs
    if (
        _hiredis_pack is not None
        and str(kwargs.get("encoding", "utf-8")).lower().replace("-", "") in ("utf8",)
        and kwargs.get("encoding_errors", "strict") == "strict"
    ):
        pool.connection_class = _packing(pool.connection_class)
    client = aioredis.Redis(connection_pool=pool)
    # As from_url does: closing the client closes its pool.
    client.auto_close_connection_pool = True
    return client
