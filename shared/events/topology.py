"""The broker topology for events, declared whole by every process at start-up.

nameko publishes events with `mandatory=False`, so an event published before its
consumer's queue exists vanishes. Here every process declares every consumer queue of
the table below before it publishes anything, and the events exchange has an
alternate exchange: an event that no queue takes is parked in `jicm.unrouted`, where an
operator can see and replay it, instead of being dropped.

Names (stable on purpose: they do not embed handler method names, so renaming a
handler never orphans a queue):
- `jicm.events`                   topic exchange, routing key = event type
- `jicm.<service>.<EventType>`    one durable queue per consumer
- `jicm.<service>.<EventType>.dead`  its dead-letter queue
- `jicm.retry.<N>s`               shared delay queues; a message waits N seconds, then
                                  the broker dead-letters it back to its consumer queue
- `jicm.unrouted`                 events no consumer was bound for
- `jicm.broadcast`                topic exchange of the events every process of a kind
                                  hears through a queue of its own (broadcast.py)

Every durable queue is `classic` or `quorum` as `JICM_QUEUE_TYPE` says (`queue_arguments`);
a queue keeps the type it was first declared with, so an installation changes type only
onto new, empty queues (docs/scaling.md). Quorum queues need more than the type to keep
the guarantees classic queues give here:
- the delay queues dead-letter expired messages `at-least-once` (the default for quorum
  queues is at-most-once, which could drop a retry on its way back), which in turn needs
  `reject-publish` overflow;
- consumer queues get a delivery limit (RabbitMQ 4 gives quorum queues one by default)
  whose overflow goes to the consumer's own dead-letter queue, so a message that keeps
  coming back ends where an operator can see and replay it, never dropped.
The dead-letter queues are bounded by a policy (`shared/events/management_api.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from kombu import Connection, Exchange, Queue
from kombu.common import maybe_declare
from nameko.extensions import SharedExtension

from shared.config import QueueType, settings_of
from shared.events.broadcast import BROADCAST_EXCHANGE
from shared.events.management_api import apply_dead_letter_policy

EVENTS_EXCHANGE_NAME = "jicm.events"
UNROUTED_NAME = "jicm.unrouted"
UNROUTED_MAX_LENGTH = 100_000

# Back-off between attempts of a failing handler; after the last, the dead-letter queue.
RETRY_DELAYS_SECONDS: tuple[int, ...] = (1, 5, 30, 120, 600)

# Which service consumes which events (a test holds this to the handlers they declare).
CONSUMERS: dict[str, tuple[str, ...]] = {
    "delivery": ("MailRequested", "ReminderDue", "ConsentChanged", "MessageReleased"),
    "vault": ("CheckInMissed", "PlanChanged"),
    "scheduler": ("UserRegistered", "EmailVerified", "PlanChanged", "ReminderSettled"),
    "privacy": ("UserRegistered", "ErasureCompleted", "AccountExpired", "Unsubscribed"),
}

# Every service that holds personal data takes part in the erasure saga: it erases its
# part on ErasureRequested and answers ErasureCompleted (privacy waits for each of them).
ERASING_SERVICES: tuple[str, ...] = ("accounts", "billing", "delivery", "privacy", "scheduler",
                                     "vault")
for _service in ERASING_SERVICES:
    CONSUMERS[_service] = (*CONSUMERS.get(_service, ()), "ErasureRequested")
# The scheduler keeps each owner's check-in history (for the export) from its own events.
CONSUMERS["scheduler"] = (*CONSUMERS["scheduler"], "CheckedIn")

# Which services publish which events (a test holds this to the code that writes them);
# with CONSUMERS, what docs/asyncapi.yaml publishes (shared/events/asyncapi.py).
PRODUCERS: dict[str, tuple[str, ...]] = {
    "UserRegistered": ("accounts",),
    "EmailVerified": ("accounts",),
    "AccountExpired": ("accounts",),
    "MailRequested": ("accounts", "billing", "privacy", "scheduler"),
    "CheckedIn": ("scheduler",),
    "ReminderDue": ("scheduler",),
    "CheckInMissed": ("scheduler",),
    "MessageReleased": ("vault",),
    "ReminderSettled": ("delivery",),
    "DeliveryFailed": ("delivery",),
    "Unsubscribed": ("delivery",),
    "PlanChanged": ("billing",),
    "ConsentChanged": ("privacy",),
    "ErasureRequested": ("privacy",),
    "ErasureCompleted": ERASING_SERVICES,
    # A broadcast (broadcast.py): heard by every gateway worker, on jicm.broadcast.
    "AccountChanged": ("accounts",),
}

EVENTS_EXCHANGE = Exchange(
    EVENTS_EXCHANGE_NAME,
    type="topic",
    durable=True,
    arguments={"alternate-exchange": UNROUTED_NAME},
)
UNROUTED_EXCHANGE = Exchange(UNROUTED_NAME, type="fanout", durable=True)

# A message redelivered this often (a handler that kills its worker every time, say) is
# dead-lettered by a quorum queue itself instead of coming back for ever.
QUORUM_DELIVERY_LIMIT = 100


def queue_arguments(queue_type: QueueType, **arguments: object) -> dict[str, object]:
    """`arguments` for a durable queue of `queue_type`; classic queues get them unchanged."""
    if queue_type is QueueType.CLASSIC:
        return dict(arguments)
    return {"x-queue-type": "quorum", **arguments}


def _at_least_once(queue_type: QueueType) -> dict[str, object]:
    """What a quorum queue needs so that its dead-lettering never drops a message."""
    if queue_type is QueueType.CLASSIC:
        return {}
    return {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}


def unrouted_queue(queue_type: QueueType = QueueType.CLASSIC) -> Queue:
    """Where events that no consumer queue takes are parked."""
    return Queue(
        UNROUTED_NAME,
        exchange=UNROUTED_EXCHANGE,
        durable=True,
        queue_arguments=queue_arguments(queue_type, **{"x-max-length": UNROUTED_MAX_LENGTH}),
    )


def consumer_queue_name(service: str, event_type: str) -> str:
    return f"jicm.{service}.{event_type}"


def dead_letter_queue_name(queue_name: str) -> str:
    return f"{queue_name}.dead"


def retry_exchange_name(delay: int) -> str:
    return f"jicm.retry.{delay}s"


def consumer_queue(service: str, event_type: str,
                   queue_type: QueueType = QueueType.CLASSIC) -> Queue:
    """The durable queue where `service` receives `event_type`."""
    name = consumer_queue_name(service, event_type)
    arguments: dict[str, object] = {}
    if queue_type is QueueType.QUORUM:
        arguments = {"x-delivery-limit": QUORUM_DELIVERY_LIMIT, "x-dead-letter-exchange": "",
                     "x-dead-letter-routing-key": dead_letter_queue_name(name),
                     **_at_least_once(queue_type)}
    return Queue(
        name,
        exchange=EVENTS_EXCHANGE,
        routing_key=event_type,
        durable=True,
        queue_arguments=queue_arguments(queue_type, **arguments),
    )


def dead_letter_queue(queue_name: str, queue_type: QueueType = QueueType.CLASSIC) -> Queue:
    """A consumer's dead-letter queue, reached through the default exchange."""
    return Queue(dead_letter_queue_name(queue_name), durable=True,
                 queue_arguments=queue_arguments(queue_type))


def retry_queue(delay: int, queue_type: QueueType = QueueType.CLASSIC) -> Queue:
    """Messages wait here `delay` seconds, then return to the queue named by their routing key."""
    return Queue(
        retry_exchange_name(delay),
        exchange=Exchange(retry_exchange_name(delay), type="fanout", durable=True),
        durable=True,
        queue_arguments=queue_arguments(
            queue_type, **{"x-message-ttl": delay * 1000, "x-dead-letter-exchange": ""},
            **_at_least_once(queue_type)),
    )


def retry_delay(attempt: int) -> int | None:
    """Seconds to wait before `attempt` (1-based), or None when retries are exhausted."""
    if 1 <= attempt <= len(RETRY_DELAYS_SECONDS):
        return RETRY_DELAYS_SECONDS[attempt - 1]
    return None


def all_entities(consumers: Mapping[str, Iterable[str]],
                 queue_type: QueueType = QueueType.CLASSIC) -> list:
    """Every exchange and queue of the topology, in declaration order."""
    entities: list = [UNROUTED_EXCHANGE, unrouted_queue(queue_type), EVENTS_EXCHANGE,
                      BROADCAST_EXCHANGE]
    entities += [retry_queue(delay, queue_type) for delay in RETRY_DELAYS_SECONDS]
    for service, event_types in consumers.items():
        for event_type in event_types:
            queue = consumer_queue(service, event_type, queue_type)
            entities += [queue, dead_letter_queue(queue.name, queue_type)]
    return entities


def declare_topology(amqp_uri: str, consumers: Mapping[str, Iterable[str]] | None = None,
                     queue_type: QueueType = QueueType.CLASSIC) -> None:
    """Declare the whole event topology (idempotent; every process calls it at start-up)."""
    with Connection(amqp_uri, connect_timeout=10) as conn:
        conn.ensure_connection(max_retries=5)
        channel = conn.channel()
        for entity in all_entities(CONSUMERS if consumers is None else consumers, queue_type):
            maybe_declare(entity, channel)


class Topology(SharedExtension):
    """Declares the whole topology once per container, before anything consumes or publishes,
    and the policy that bounds the dead-letter queues."""

    def setup(self) -> None:
        settings = settings_of(self.container)
        declare_topology(settings.amqp_uri, queue_type=settings.queue_type)
        apply_dead_letter_policy(settings)
