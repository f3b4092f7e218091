"""event-collector: concurrent event processing for asyncio services.

Publishers send values to a :class:`CollectorQueue`; a pool of consumer tasks
that grows and shrinks with the load hands each one to the collectors (your
handlers) and brings their results back to the publisher.
"""

from .collector import BatchCollector, Collector, CollectorDict, CollectorList
from .data import (
    Context,
    Delivery,
    Error,
    Ok,
    Payload,
    Record,
    Result,
    ResultList,
    abind,
)
from .exceptions import (
    ConfigError,
    DeliveryExhausted,
    EventCancelled,
    EventCollectorException,
    EventLost,
    QueueClosed,
    QueueFull,
    RemoteError,
    RetryAfter,
    Superseded,
)
from .flow import DeadLettered, RateLimit, Retry
from .health import Health
from .messagebus import BusEvent, BusEventQueue, Command, Message, MessageBus
from .publisher import CollectorEvent, EventPublisher, QueueType
from .queue import (
    CollectorQueue,
    InitializedQueue,
    Load,
    Metrics,
    ReportedMetrics,
    ShutDownQueue,
)
from .router import Router, SimpleRouter
from .types import EventObserver, LifecycleManager, Processor

__version__ = "0.3.0.dev0"

__all__ = [
    "BatchCollector",
    "BusEvent",
    "BusEventQueue",
    "Collector",
    "CollectorDict",
    "CollectorEvent",
    "CollectorList",
    "CollectorQueue",
    "Command",
    "ConfigError",
    "Context",
    "DeadLettered",
    "Delivery",
    "DeliveryExhausted",
    "Error",
    "EventCancelled",
    "EventCollectorException",
    "EventLost",
    "EventObserver",
    "EventPublisher",
    "Health",
    "InitializedQueue",
    "LifecycleManager",
    "Load",
    "Message",
    "MessageBus",
    "Metrics",
    "Ok",
    "Payload",
    "Processor",
    "QueueClosed",
    "QueueFull",
    "QueueType",
    "RateLimit",
    "Record",
    "RemoteError",
    "ReportedMetrics",
    "Result",
    "ResultList",
    "Retry",
    "RetryAfter",
    "Router",
    "ShutDownQueue",
    "SimpleRouter",
    "Superseded",
    "__version__",
    "abind",
]
