"""Scale out on Redis Streams: the same collectors on a fleet of worker
processes, at-least-once, with each answer routed back to its publisher.

Needs the ``redis`` extra (``pip install 'event-collector[redis]'``):
redis-py's asyncio client and hiredis. See the scaling-out guide.
"""

from ._acl import acl_rules
from ._codec import Codec, JsonCodec, MsgpackCodec
from ._fleet import FleetSnapshot, WorkerSnapshot, desired_workers, read_fleet
from ._publisher import RedisPublisher
from ._transport import RedisTransport

__all__ = [
    "Codec",
    "FleetSnapshot",
    "JsonCodec",
    "MsgpackCodec",
    "RedisPublisher",
    "RedisTransport",
    "WorkerSnapshot",
    "acl_rules",
    "desired_workers",
    "read_fleet",
]
