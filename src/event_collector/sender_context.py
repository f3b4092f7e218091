"""Handlers that see the context variables of the code that sent their event.

A handler normally runs in its consumer's context: a value the sending code
set in a :class:`contextvars.ContextVar` (a request id bound with
``structlog.contextvars.bind_contextvars`` in a web request, say) is not
there. :func:`carry` turns that on for one queue::

    from event_collector.sender_context import carry

    queue = CollectorQueue(collectors)
    carry(queue)

From then on, each send takes a copy of the sender's context (an O(1)
copy), and each collector call on that event runs in a copy of it of its
own: the handler reads the sender's values, and what it sets stays in its
call, seen neither by the sender nor by another collector. The call still
runs in its consumer's task, each of its steps in that copy; BENCHMARKS.md
gives the cost per event. A :class:`~event_collector.BatchCollector`'s call
handles the events of several senders at once, so it runs in its
consumer's context, as without :func:`carry`.

It works in memory only: a context cannot cross processes. On Redis, put
what the handler needs in the event's headers (``send(value,
headers={"request_id": ...})``) and bind it in the handler.
"""

from __future__ import annotations

import contextlib
import contextvars
import types
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, TypeVar

from ._consumers import current_owner
from ._instrument import install
from ._probes import Call, Probe
from .exceptions import ConfigError
from .transport import MemoryTransport

if TYPE_CHECKING:
    from .collector import Collector
    from .data import Payload
    from .queue import CollectorQueue

__all__ = ["carry"]

T = TypeVar("T")


def carry(queue: CollectorQueue) -> Callable[[], None]:
    """Run ``queue``'s collector calls in the context of the code that sent
    each event; return the function that turns it off again.

    Events sent from then on are carried; what was sent before runs in its
    consumer's context as before. It may be called before the queue starts
    or while it runs.

    :raises ConfigError: the queue's transport carries events to other
        processes (a context does not cross them), or the sender's context
        is carried for the queue already.
    :raises TypeError: ``queue`` is not a ``CollectorQueue``.
    """
    from .queue import CollectorQueue

    if not isinstance(queue, CollectorQueue):
        raise TypeError(f"carry() takes a CollectorQueue (got {type(queue).__name__})")
    if not isinstance(queue.transport, MemoryTransport):
        raise ConfigError(
            "sender context: a context does not cross processes, so it is "
            f"carried in memory only (this queue uses "
            f"{type(queue.transport).__name__}); put what handlers need in "
            "the event's headers instead"
        )
    if any(isinstance(p, _SenderContext) for p in queue.get_publisher()._probes):
        raise ConfigError("sender context: carried for this queue already")
    return install(queue, _SenderContext())


class _SenderContext(Probe):
    """The probe behind :func:`carry`: it keeps the sender's context on the
    payload and steps each collector call in that context's copy."""

    # Outermost: a trace's consumer span must be made current inside the
    # sender's context, where the handler runs, not around it.
    outer = True

    def sending(self, payload: Payload[Any]) -> contextlib.AbstractContextManager[Any]:
        payload._sent_in = contextvars.copy_context()
        return _NOTHING

    def wrap(self, collector: Collector, call: Call) -> Call:
        async def in_sender_context(payload: Payload[Any]) -> Any:
            sent_in: contextvars.Context | None = getattr(payload, "_sent_in", None)
            if sent_in is None:  # sent before carry() or by another process
                return await call(payload)
            context = sent_in.copy()
            # What consumers set for their handlers, set here too: the queue
            # that owns the handler (shut_down_queue from inside it).
            context.run(current_owner.set, current_owner.get())
            return await _step_in(context, call(payload))

        return in_sender_context


_NOTHING = contextlib.nullcontext()


async def _step_in(context: contextvars.Context, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` with each of its steps run in ``context``, in the
    running task: no task of its own, so no trip through the loop's ready
    queue to start it or to hear that it ended.

    What it yields (the future it waits for, or ``None`` for a bare yield)
    goes up to the task, and what the task sends or throws back (its own
    cancellation included) goes down to it.
    """
    steps = context.run(awaitable.__await__)
    send, throw = steps.send, steps.throw
    sent: Any = None
    thrown: BaseException | None = None
    # What a step yields goes up in a box, emptied on the way: no frame of
    # the stepping may keep the future it waited for, nor an exception, once
    # that step is over. A failed future's exception, thrown down and out of
    # the call, would hold those frames in its traceback: a cycle only the
    # garbage collector breaks, keeping the sender's context alive till then.
    box: list[Any] = []
    while True:
        try:
            if thrown is None:
                box.append(context.run(send, sent))
            else:
                try:
                    box.append(context.run(throw, thrown))
                finally:
                    thrown = None
        except StopIteration as stop:
            result: T = stop.value
            return result
        try:
            sent = await _suspend(box)
        except BaseException as exc:  # the task cancelled, or a failed future
            sent, thrown = None, exc


@types.coroutine
def _suspend(box: list[Any]) -> Generator[Any, Any, Any]:
    """Yield what ``box`` holds to the running task, emptying it; return
    what the task sends back."""
    return (yield box.pop())
