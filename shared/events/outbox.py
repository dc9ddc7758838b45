"""The transactional outbox, kept inside the very document whose change it announces.

A repository that changes a document and must announce it adds the event to the same
atomic write: `with_event(update, event, now=...)` pushes the envelope onto the document's
`outbox` list and marks the document due for relaying. One conditional update does
both, atomically on MongoDB and on SQLite alike, with no transaction. A crash after
that write loses nothing: the relay finds the pending event and publishes it.

The relay claims the due documents with a lease (several processes of one service may
relay at once), publishes all their pending events in one batch and waits for the
broker's confirms of all of it (`shared/events/publisher.py`), then removes exactly the
events that were confirmed. A crash between the confirm and the removal publishes them
again later, which is why every consumer deduplicates by `event_id`.

Whether anything is still pending is read from the outbox list itself, never from a
counter that could drift: a relay stops the document being due only if no event was
pushed since it read the list, which a compare-and-set on `outbox_seq` (incremented by
every push) decides. When nothing was pushed since the claim, removing what it published
and stopping are that one write; otherwise it removes what it published and stops only if
the list it got back is empty and, again, nothing was pushed since. Two relays of the
same document (one whose lease ran out, say) can therefore only publish an event twice,
never leave one behind.
"""

from __future__ import annotations

import copy
import logging
from datetime import datetime, timedelta
from typing import Any

import eventlet
from eventlet.event import Event as GreenEvent
from nameko.extensions import DependencyProvider

from shared.clock import CLOCK_CONFIG_KEY, SystemClock
from shared.config import settings_of
from shared.events.publisher import EventPublisher
from shared.events.topology import Topology
from shared.metrics import EVENTS_PUBLISHED, MetricsEndpoint, gauge
from shared.storage import Collection, Index
from shared.storage.provider import database_of

log = logging.getLogger(__name__)

OUTBOX = "outbox"
SEQ = "outbox_seq"
DUE_AT = "outbox_due_at"

LEASE = timedelta(seconds=30)
RETRY_AFTER_FAILURE = timedelta(seconds=5)
SWEEP_INTERVAL_SECONDS = 1.0
BATCH = 100

# Every collection with an outbox needs this index so the relay finds due documents
# without scanning the collection.
OUTBOX_INDEX = Index.on(DUE_AT)


def with_event(update: dict[str, Any], event: dict[str, Any], *, now: datetime) -> dict[str, Any]:
    """Return `update` extended to append `event` to the document's outbox, atomically.

    An update may carry several events: each call appends one more.
    """
    merged = copy.deepcopy(update)
    pushes = merged.setdefault("$push", {})
    earlier = pushes.get(OUTBOX, {"$each": []})["$each"]
    pushes[OUTBOX] = {"$each": [*earlier, event]}
    increments = merged.setdefault("$inc", {})
    increments[SEQ] = increments.get(SEQ, 0) + 1
    merged.setdefault("$set", {})[DUE_AT] = now
    return merged


def carries_events(update: dict[str, Any]) -> bool:
    """Whether `update` (built with `with_event`) appends events to an outbox."""
    return OUTBOX in update.get("$push", {})


def new_document_with_events(doc: dict[str, Any], *events: dict[str, Any], now: datetime) -> dict:
    """Return a new document (for insert) that already carries `events` in its outbox."""
    created = dict(doc)
    created[OUTBOX] = list(events)
    created[SEQ] = len(events)
    if events:
        created[DUE_AT] = now
    return created


def is_pending(doc: dict[str, Any]) -> bool:
    """Whether the document still holds events that have not been published."""
    return bool(doc.get(OUTBOX))


def strip_outbox(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    """The document without the relay's bookkeeping, for callers that show it."""
    if doc is None:
        return None
    return {key: value for key, value in doc.items() if key not in (OUTBOX, SEQ, DUE_AT)}


def relay_due(collection: Collection, publisher: EventPublisher, now: datetime) -> int:
    """Publish the pending events of every due document of `collection`, all of them in
    one batch of publisher confirms. Returns how many were published."""
    claimed = []
    due = collection.find({DUE_AT: {"$lte": now}}, sort=[(DUE_AT, 1)], limit=BATCH)
    with collection.group_writes():
        for doc in due:
            claim = collection.update_one(
                {"_id": doc["_id"], DUE_AT: doc[DUE_AT]}, {"$set": {DUE_AT: now + LEASE}}
            )
            if claim is not None:  # else another relay took it, or it changed: next sweep
                claimed.append(claim)
    confirmed = publisher.publish_all(
        [envelope for doc in claimed for envelope in doc.get(OUTBOX, [])])
    published, start = 0, 0
    with collection.group_writes():
        for doc in claimed:
            count = len(doc.get(OUTBOX, []))
            published += _settle_document(collection, doc, confirmed[start:start + count], now)
            start += count
    return published


def relay_backlog(collection: Collection, publisher: EventPublisher, now: datetime) -> int:
    """`relay_due` again and again while a sweep comes back full: a backlog (thousands of
    switches firing at once) leaves at the broker's pace, not a batch per sweep."""
    published = 0
    while True:
        sent = relay_due(collection, publisher, now)
        published += sent
        if sent < BATCH:
            return published


def _settle_document(collection: Collection, doc: dict[str, Any], confirmed: list[bool],
                     now: datetime) -> int:
    """Forget the document's events the broker confirmed, in order up to the first it did
    not: that one and those after it are published again later."""
    envelopes = doc.get(OUTBOX, [])
    failed = not all(confirmed)
    published = envelopes[:confirmed.index(False)] if failed else envelopes
    sent = [envelope["event_id"] for envelope in published]
    for envelope in published:
        EVENTS_PUBLISHED.labels(envelope.get("producer", ""), envelope["type"]).inc()
    if failed:
        log.error("%d event(s) of %s were not confirmed by the broker; will retry",
                  len(envelopes) - len(sent), doc["_id"])
    elif _forget_all(collection, doc, sent):
        return len(sent)
    left = _forget(collection, doc["_id"], sent)
    if failed:
        collection.update_one({"_id": doc["_id"]}, {"$set": {DUE_AT: now + RETRY_AFTER_FAILURE}})
    elif left is not None and not is_pending(left):
        # Nothing left to relay, unless an event was pushed since `left` was read: that
        # push also made the document due again, and this write then misses.
        collection.update_one({"_id": doc["_id"], SEQ: left.get(SEQ)}, {"$unset": {DUE_AT: ""}})
    return len(sent)


def _forget_all(collection: Collection, claimed: dict[str, Any], event_ids: list[str]) -> bool:
    """Remove the published events and stop the document being due, in one write, when no
    event was pushed since the claim (then every event still in the list was published).
    False when one was: the caller removes what it published and leaves the rest due."""
    update: dict[str, Any] = {"$unset": {DUE_AT: ""}}
    if event_ids:
        update["$pull"] = {OUTBOX: {"event_id": {"$in": event_ids}}}
    done = collection.update_one({"_id": claimed["_id"], SEQ: claimed.get(SEQ)}, update)
    return done is not None


def _forget(collection: Collection, doc_id: str, event_ids: list[str]) -> dict | None:
    """Remove the published events (those another relay removed already are simply absent);
    returns the document as it is afterwards."""
    if not event_ids:
        return collection.get(doc_id)
    return collection.update_one(
        {"_id": doc_id}, {"$pull": {OUTBOX: {"event_id": {"$in": event_ids}}}}
    )


def outbox_backlog(collection: Collection, now: datetime) -> tuple[int, float]:
    """How many documents of `collection` wait for the relay, and the age in seconds of the
    oldest event among the longest-waiting `BATCH` of them (0 when none waits)."""
    waiting = {DUE_AT: {"$exists": True}}
    count = collection.count(waiting)
    if not count:
        return 0, 0.0
    oldest = min(
        (datetime.fromisoformat(envelope["occurred_at"])
         for doc in collection.find(waiting, sort=[(DUE_AT, 1)], limit=BATCH)
         for envelope in doc.get(OUTBOX, [])),
        default=now,
    )
    return count, max((now - oldest).total_seconds(), 0.0)


class OutboxRelay(DependencyProvider):
    """Relays the outboxes of the named collections, right after each worker and every second.

    Workers that write events call nothing: the relay is woken when a worker finishes,
    so events leave promptly, and a periodic sweep catches everything else (events
    written just before a crash, or whose publish failed). A long-running worker (one
    that settles mail after mail) calls `wake()` after each write that carries events,
    so they leave right after that commit rather than when the worker ends. Waking only
    hurries the relay: what it publishes, and when it forgets it, is unchanged.
    """

    topology = Topology()
    metrics = MetricsEndpoint()

    def __init__(self, *collections: str) -> None:
        self.collections = collections
        self._wake = GreenEvent()
        self._running = False

    def setup(self) -> None:
        settings = settings_of(self.container)
        self.publisher = EventPublisher(settings.amqp_uri)
        self.clock = self.container.config.get(CLOCK_CONFIG_KEY) or SystemClock()
        self.metrics.figure_sources.append(self.backlog_figures)

    def backlog_figures(self) -> list:
        """The outboxes' backlog, read from the store when /metrics is scraped."""
        db = database_of(self.container)
        now = self.clock.now()
        service = self.container.service_name
        waiting = gauge("jicm_outbox_documents",
                        "documents whose events wait to be relayed to the broker",
                        labels=("service", "collection"))
        age = gauge("jicm_outbox_oldest_event_age_seconds",
                    "age of the oldest event still waiting in an outbox (0: none)",
                    labels=("service", "collection"))
        for name in self.collections:
            count, oldest = outbox_backlog(db.collection(name), now)
            waiting.add_metric([service, name], count)
            age.add_metric([service, name], oldest)
        return [waiting, age]

    def start(self) -> None:
        self._running = True
        db = database_of(self.container)
        for name in self.collections:
            db.ensure_indexes(name, [OUTBOX_INDEX])
        self.container.spawn_managed_thread(self._loop, identifier="outbox.relay")

    def stop(self) -> None:
        self._running = False
        self.wake()
        self.publisher.close()

    def kill(self) -> None:
        self.stop()

    def get_dependency(self, worker_ctx) -> OutboxRelay:
        return self

    def worker_result(self, worker_ctx, result=None, exc_info=None) -> None:
        self.wake()

    def wake(self) -> None:
        if not self._wake.ready():
            self._wake.send(True)

    def relay_now(self) -> int:
        """Relay everything due in every outbox (also used by tests and operator tools)."""
        db = database_of(self.container)
        now = self.clock.now()
        return sum(relay_backlog(db.collection(name), self.publisher, now)
                   for name in self.collections)

    def _loop(self) -> None:
        while self._running:
            try:
                self.relay_now()
            except Exception:
                log.exception("outbox relay sweep failed")
            with eventlet.Timeout(SWEEP_INTERVAL_SECONDS, False):
                self._wake.wait()
            self._wake = GreenEvent()
