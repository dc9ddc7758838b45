"""Broadcast events: facts every process of a kind must hear, not one of its replicas.

The events exchange (`jicm.events`) gives each consuming service one durable queue, whose
replicas compete for its messages: right for work that must be done once. Some facts
must reach every process instead: when a session ends, every gateway worker that cached
it must forget it. Those events travel on an exchange of their own, `jicm.broadcast`
(topic, routing key = event type), published from the producer's outbox like any other
event. Each listening process declares its own queue, server-named, exclusive and
auto-delete, bound for the types it hears: the broker copies every broadcast into each
such queue, and the queue vanishes with its process.

A broadcast nobody hears is dropped (the exchange has no alternate exchange): a process
that was not listening holds nothing the event would correct, because a listener that
(re)connects starts from an empty cache (gateway/sessions.py). Broadcasts are therefore
hints to forget, never work to be done: nothing is lost when one is dropped.
"""

from __future__ import annotations

from collections.abc import Iterable

from kombu import Exchange, Queue, binding

BROADCAST_EXCHANGE_NAME = "jicm.broadcast"
BROADCAST_EXCHANGE = Exchange(BROADCAST_EXCHANGE_NAME, type="topic", durable=True)

# Which events are broadcast, and which kind of process hears them (every one of its
# processes, each through its own queue).
BROADCASTS: dict[str, tuple[str, ...]] = {
    "AccountChanged": ("gateway",),
}


def is_broadcast(event_type: str) -> bool:
    """Whether `event_type` travels on the broadcast exchange rather than the events one."""
    return event_type in BROADCASTS


def listener_queue(event_types: Iterable[str]) -> Queue:
    """A queue of this process's own for `event_types`: the broker names it, it is exclusive
    to this connection and deleted when the connection closes."""
    return Queue(
        "",
        bindings=[binding(BROADCAST_EXCHANGE, routing_key=event_type)
                  for event_type in event_types],
        exclusive=True,
        auto_delete=True,
        durable=False,
    )
