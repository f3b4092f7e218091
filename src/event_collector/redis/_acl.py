"""The Redis ACL rules the transport needs, and nothing more.

The lists below are every command this package sends, read from its
code, but ``XACKDEL``, which only ``acl_rules(xackdel=True)`` grants (a
Redis before 8.2 refuses a rule that names it). ``tests/test_redis_acl.py``
runs a worker, a publisher, answers, a dead letter, a bounded ``maxsize``
stream, a graceful shutdown and the fleet view as users that have only
these rules, and checks that Redis refused nothing and that each command
was used. A change that sends a new command fails that test until the
command is added here.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["COMMANDS", "Role", "acl_rules"]

Role = Literal["worker", "publisher", "viewer"]
"""Who the rules are for: a worker (it runs a queue on the transport, and
publishes too), a process that only publishes, or a process that only
reads the fleet's figures (``event-collector top``)."""

_PUBLISHER = (
    # Whichever side comes first creates the group and the epoch token.
    "xgroup|create",
    "set",
    "get",
    # Events in, a batch per script call (with maxsize, the script counts
    # the backlog with XLEN first). A script runs with its caller's rights.
    "xadd",
    "evalsha",
    "script|load",
    "xlen",
    # The publisher's reply stream: read, emptied, kept alive, deleted.
    "xread",
    "xdel",
    "pexpire",
    "del",
)

_WORKER = (
    *_PUBLISHER,
    # Fetching, leases, hand-back at shutdown and reclaiming.
    "xreadgroup",
    "xclaim",
    "xpending",
    # Acknowledgement, deletion and the answer, in one script call (dead
    # letters in a MULTI transaction). COMMAND INFO finds out whether the
    # server has XACKDEL (Redis 8.2 and later; acl_rules(xackdel=True)
    # grants it); without the right to look, or without XACKDEL, XACK and
    # XDEL do the work.
    "xack",
    "multi",
    "exec",
    "command|info",
    # Consumers that left, or died long ago and hold nothing.
    "xgroup|delconsumer",
    "xinfo|consumers",
    # The fleet's figures: a hash per worker, a sorted set of workers.
    "hset",
    "zadd",
    "zrem",
    "zremrangebyscore",
    "zcard",
)

_VIEWER = ("xlen", "xpending", "zrange", "hgetall")

COMMANDS: dict[str, tuple[str, ...]] = {
    "worker": _WORKER,
    "publisher": _PUBLISHER,
    "viewer": _VIEWER,
}
"""The commands of each :data:`Role`, in ACL notation."""

_GLOB_SPECIAL = "\\*?[]"


def _literal(key: str) -> str:
    """``key`` as a Redis glob pattern that matches it alone."""
    return "".join("\\" + ch if ch in _GLOB_SPECIAL else ch for ch in key)


def acl_rules(
    stream: str,
    *,
    role: Role = "worker",
    dead_letter_stream: str | None = None,
    xackdel: bool = False,
) -> list[str]:
    """The ``ACL SETUSER`` rules of a least-privilege Redis user for
    ``stream``: key patterns, then commands.

    The keys are the work stream itself and every key under ``<stream>:``
    (priority bands, reply streams, the dead-letter stream, the epoch
    token, the fleet's figures); a ``dead_letter_stream`` given by hand
    outside that prefix is added. The scaling-out guide lists the commands
    of each role. Give the rules after ``reset on >password``::

        ACL SETUSER orders-worker reset on >secret ~orders ~orders:* +xgroup|create ...

    :param stream: the transport's ``stream``, exactly as given to it.
    :param role: ``"worker"`` for a process that runs a queue on the
        transport (it may publish too), ``"publisher"`` for one that only
        publishes, ``"viewer"`` for one that only reads the fleet's figures
        (``event-collector top``).
    :param dead_letter_stream: the transport's ``dead_letter_stream``, when
        one was given.
    :param xackdel: the server has ``XACKDEL`` (Redis 8.2 and later): a
        worker's rules grant it, and the worker acknowledges and deletes
        its entries with it. Leave it false for an older server, which
        refuses a rule that names a command it does not know. Only a
        worker acknowledges, so the other roles' rules do not change.
    :raises ValueError: an empty ``stream``, or an unknown ``role``.
    """
    if not isinstance(stream, str) or not stream:
        raise ValueError(f"stream must be a non-empty string (got {stream!r})")
    commands = COMMANDS.get(role)
    if commands is None:
        raise ValueError(
            f"role must be one of {', '.join(map(repr, COMMANDS))} (got {role!r})"
        )
    base = _literal(stream)
    keys = [f"~{base}", f"~{base}:*"]
    if (
        role != "publisher"
        and dead_letter_stream
        and not dead_letter_stream.startswith(f"{stream}:")
    ):
        keys.append(f"~{_literal(dead_letter_stream)}")
    if xackdel and role == "worker":
        commands = (*commands, "xackdel")
    return [*keys, *(f"+{command}" for command in commands)]
