"""Events between services: schemas, envelope, topology, outbox and idempotent consumers."""

from shared.events.consumer import DeadLetter, event_handler
from shared.events.envelope import Event, MalformedEvent, new_event, parse_event
from shared.events.outbox import (
    OutboxRelay,
    new_document_with_events,
    strip_outbox,
    with_event,
)
from shared.events.topology import CONSUMERS, declare_topology

__all__ = [
    "CONSUMERS",
    "DeadLetter",
    "Event",
    "MalformedEvent",
    "OutboxRelay",
    "declare_topology",
    "event_handler",
    "new_document_with_events",
    "new_event",
    "parse_event",
    "strip_outbox",
    "with_event",
]
