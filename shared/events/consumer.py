"""`@event_handler("EventType")`: consume an event at least once, act on it once.

nameko's own event handler acknowledges a message even when the handler raises, so a
failure loses the event. This entrypoint keeps nameko's consumer machinery but decides
the fate of every message itself:

- a body that is not a valid envelope of the expected type goes straight to the
  consumer's dead-letter queue with the reason (it never reaches, or crashes, a worker);
- each event is claimed in the service's own database before a worker runs it (one
  record per consumer and event id under a unique key, with an expiry): an event already
  processed is acknowledged and skipped, and a copy that arrives while another worker
  still holds the claim is put back for later instead of running twice at once; a claim
  whose worker died expires after a lease, so the event is never stranded;
- a handler that raises is retried after 1 s, 5 s, 30 s, 2 min and 10 min (delay queues
  in the broker, so the schedule survives a restart), then dead-lettered with the error;
- a message is acknowledged only after its retry or dead letter was confirmed by the
  broker, so a crash at any point redelivers rather than loses it.

Handlers must make their effect idempotent (conditional writes, deterministic ids): a
crash after the effect and before the processed mark runs the handler again.

`@event_handler("EventType", keyed_by_event=True)` declares a handler whose whole effect
is one insert under the event's own id (a record kept per event): a second run, even
alongside the first, changes nothing by itself, so the claim and the processed mark, two
writes per event, are left out. Retries and dead letters are as for any handler.

`@event_handler("EventType", unless_erased=True)` declares a handler for events about a
user (`data.user_id`) that must change nothing once that user was erased here: such an
event waited in a retry queue behind the erasure, or was replayed from a dead letter,
and must not bring their data back. The service keeps its erasure records as
`erasures = Erasures()` (shared/privacy.py), which the handler asks first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial, wraps
from typing import Any

from kombu.common import maybe_declare
from nameko.amqp.publish import get_connection, get_producer
from nameko.exceptions import ContainerBeingKilled
from nameko.messaging import Consumer, QueueConsumer

from shared.clock import CLOCK_CONFIG_KEY, SystemClock
from shared.config import settings_of
from shared.events.envelope import Event, MalformedEvent, parse_event
from shared.events.schemas import EVENT_SCHEMAS
from shared.events.topology import (
    Topology,
    consumer_queue,
    dead_letter_queue,
    dead_letter_queue_name,
    retry_delay,
    retry_exchange_name,
)
from shared.metrics import (
    EVENTS_CONSUMED,
    EVENTS_DEAD_LETTERED,
    EVENTS_DUPLICATE,
    EVENTS_RETRIED,
)
from shared.storage import DuplicateKeyError
from shared.storage.provider import PROCESSED_EVENTS, database_of

log = logging.getLogger(__name__)

ATTEMPT_HEADER = "x-jicm-attempt"
PROCESSED_EVENT_TTL = timedelta(days=30)
CLAIM_LEASE = timedelta(minutes=5)

CLAIMED, DONE, BUSY = "claimed", "done", "busy"
MAX_REASON_LENGTH = 2000


class DeadLetter(Exception):
    """Raised by a handler for an event that no retry can fix: dead-letter it now."""


class EventQueueConsumer(QueueConsumer):
    """nameko's queue consumer, plus a home for bodies that cannot even be decoded.

    Without `on_decode_error`, kombu raises inside the consume loop and the broker
    redelivers the same undecodable message forever.
    """

    def get_consumers(self, consumer_cls, channel):
        consumers = super().get_consumers(consumer_cls, channel)
        for provider, consumer in self._consumers.items():
            consumer.on_decode_error = partial(provider.handle_undecodable)
        return consumers


class EventHandler(Consumer):
    """Entrypoint: run the decorated method once per distinct event of `event_type`."""

    queue_consumer = EventQueueConsumer()
    topology = Topology()

    def __init__(self, event_type: str, *, claims: bool = True, **kwargs: Any) -> None:
        if event_type not in EVENT_SCHEMAS:
            raise ValueError(f"unknown event type {event_type!r}")
        self.event_type = event_type
        self.claims = claims
        super().__init__(queue=None, requeue_on_error=False, **kwargs)

    def setup(self) -> None:
        settings = settings_of(self.container)
        self.queue = consumer_queue(self.container.service_name, self.event_type,
                                    settings.queue_type)
        self.dead_letter_queue = dead_letter_queue_name(self.queue.name)
        self.amqp_uri = settings.amqp_uri
        self.clock = self.container.config.get(CLOCK_CONFIG_KEY) or SystemClock()
        with get_connection(self.amqp_uri) as conn:
            channel = conn.channel()
            maybe_declare(self.queue, channel)
            maybe_declare(dead_letter_queue(self.queue.name, settings.queue_type), channel)
        super().setup()

    # Receiving ------------------------------------------------------------------

    def handle_message(self, body: Any, message) -> None:
        try:
            event = self._parse(body)
        except MalformedEvent as exc:
            self._dead_letter(message, reason=f"malformed event: {exc}", attempts=0,
                              why="malformed")
            return
        claim = self._claim(event)
        if claim == DONE:
            log.info("skipping %s %s: already processed", event.type, event.event_id)
            self.queue_consumer.ack_message(message)
            EVENTS_DUPLICATE.labels(self.queue.name).inc()
            return
        if claim == BUSY:
            log.info("deferring %s %s: another worker holds it", event.type, event.event_id)
            self._defer(message)
            return
        context_data = self.unpack_message_headers(message)
        context_data.update(event_id=event.event_id, request_id=event.request_id)
        try:
            self.container.spawn_worker(
                self,
                (event,),
                {},
                context_data=context_data,
                handle_result=partial(self.handle_result, message, event),
            )
        except ContainerBeingKilled:
            self.queue_consumer.requeue_message(message)

    def handle_undecodable(self, message, exc: Exception) -> None:
        """kombu could not decode the body (not JSON, wrong content type)."""
        self._dead_letter(message, reason=f"undecodable message: {exc}", attempts=0,
                          why="malformed")

    def _parse(self, body: Any) -> Event:
        event = parse_event(body)
        if event.type != self.event_type:
            raise MalformedEvent(f"expected {self.event_type}, got {event.type}")
        return event

    # After the handler ran ----------------------------------------------------------

    def handle_result(self, message, event: Event, worker_ctx, result=None, exc_info=None):
        if exc_info is None:
            self._finish(message, event)
        elif isinstance(exc_info[1], DeadLetter):
            self._release(event)
            self._dead_letter(message, reason=f"handler refused: {exc_info[1]}", attempts=1,
                              why="refused")
        else:
            self._retry_or_dead_letter(message, event, exc_info[1])
        return result, exc_info

    def _finish(self, message, event: Event) -> None:
        try:
            self._mark_processed(event)
        except Exception:
            # The effect happened but is not recorded: redeliver; the handler is idempotent.
            log.exception("could not record %s as processed; requeueing", event.event_id)
            self.queue_consumer.requeue_message(message)
            return
        self.queue_consumer.ack_message(message)
        EVENTS_CONSUMED.labels(self.queue.name).inc()

    def _retry_or_dead_letter(self, message, event: Event, error: BaseException) -> None:
        self._release(event)
        attempt = int((message.headers or {}).get(ATTEMPT_HEADER, 0)) + 1
        delay = retry_delay(attempt)
        reason = f"{type(error).__name__}: {error}"
        if delay is None:
            self._dead_letter(message, reason=f"handler failed {attempt} times; last: {reason}",
                              attempts=attempt, why="exhausted")
            return
        log.warning("handler for %s failed (attempt %d), retrying in %ds: %s",
                    self.queue.name, attempt, delay, reason)
        headers = {**(message.headers or {}), ATTEMPT_HEADER: attempt, "x-jicm-last-error": reason}
        if self._republish(message, exchange=retry_exchange_name(delay),
                           routing_key=self.queue.name, headers=headers):
            EVENTS_RETRIED.labels(self.queue.name).inc()

    def _defer(self, message) -> None:
        """Put a message back for later without counting an attempt."""
        delay = retry_delay(1)
        self._republish(message, exchange=retry_exchange_name(delay),
                        routing_key=self.queue.name, headers=dict(message.headers or {}))

    def _dead_letter(self, message, *, reason: str, attempts: int, why: str) -> None:
        log.error("dead-lettering a message of %s: %s", self.queue.name, reason)
        headers = {
            **(message.headers or {}),
            "x-jicm-reason": reason[:MAX_REASON_LENGTH],
            "x-jicm-queue": self.queue.name,
            "x-jicm-attempts": attempts,
            "x-jicm-dead-at": datetime.now(UTC).isoformat(),
        }
        if self._republish(message, exchange="", routing_key=self.dead_letter_queue,
                           headers=headers):
            EVENTS_DEAD_LETTERED.labels(self.queue.name, why).inc()

    def _republish(self, message, *, exchange: str, routing_key: str, headers: dict) -> bool:
        """Move the raw message elsewhere; ack only once the broker confirmed the copy.
        False when it could not (the message is back in its queue)."""
        try:
            with get_producer(self.amqp_uri, confirms=True) as producer:
                producer.publish(
                    message.body,
                    exchange=exchange,
                    routing_key=routing_key,
                    headers=headers,
                    content_type=message.content_type or "application/octet-stream",
                    content_encoding=message.content_encoding or "binary",
                    delivery_mode=2,
                    mandatory=True,
                    retry=True,
                )
        except Exception:
            log.exception("could not move a message of %s; requeueing it", self.queue.name)
            self.queue_consumer.requeue_message(message)
            return False
        self.queue_consumer.ack_message(message)
        return True

    # Claims and processed-event records -------------------------------------------------

    def _processed_id(self, event: Event) -> str:
        return f"{self.queue.name}:{event.event_id}"

    def _records(self):
        return database_of(self.container).collection(PROCESSED_EVENTS)

    def _claim(self, event: Event) -> str:
        """CLAIMED if this worker may run the event, else DONE or BUSY."""
        if not self.claims:
            return CLAIMED
        now = self.clock.now()
        try:
            self._records().update_one(
                {"_id": self._processed_id(event), "state": {"$ne": DONE},
                 "lease_until": {"$lte": now}},
                {
                    "$set": {"state": "processing", "lease_until": now + CLAIM_LEASE},
                    "$setOnInsert": {"consumer": self.queue.name, "event_id": event.event_id,
                                     "type": event.type, "expires_at": now + PROCESSED_EVENT_TTL},
                },
                upsert=True,
            )
        except DuplicateKeyError:
            record = self._records().get(self._processed_id(event))
            return DONE if record and record.get("state") == DONE else BUSY
        return CLAIMED

    def _release(self, event: Event) -> None:
        """Let the next attempt claim the event at once."""
        if not self.claims:
            return
        self._records().update_one(
            {"_id": self._processed_id(event)}, {"$set": {"lease_until": self.clock.now()}}
        )

    def _mark_processed(self, event: Event) -> None:
        if not self.claims:
            return
        now = self.clock.now()
        self._records().update_one(
            {"_id": self._processed_id(event)},
            {"$set": {"state": DONE, "processed_at": now, "expires_at": now + PROCESSED_EVENT_TTL}},
        )


def event_handler(event_type: str, *, unless_erased: bool = False, keyed_by_event: bool = False,
                  **kwargs: Any) -> Callable[[Callable], Callable]:
    """Declare a handler of `event_type` (see the module's docstring for `unless_erased`
    and `keyed_by_event`)."""
    register = EventHandler.decorator(event_type, claims=not keyed_by_event, **kwargs)
    if not unless_erased:
        return register
    return lambda handler: register(_skipping_erased_users(handler))


def _skipping_erased_users(handler: Callable) -> Callable:
    @wraps(handler)
    def handle(service: Any, event: Event) -> Any:
        if service.erasures.erased(event.data.user_id, event.type):
            return None
        return handler(service, event)
    return handle
