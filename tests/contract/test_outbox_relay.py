"""The outbox never strands an event: on both adapters, with writes racing relays, several
relays on one document, relays dying half-way and leases running out, every event written
is published at least once and every document ends with nothing pending."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.clock import FrozenClock
from shared.events.envelope import new_event
from shared.events.outbox import (
    BATCH,
    DUE_AT,
    LEASE,
    is_pending,
    new_document_with_events,
    outbox_backlog,
    relay_backlog,
    relay_due,
    with_event,
)
from shared.storage import Collection

PAST_A_LEASE = LEASE + timedelta(seconds=1)


class RelayDied(BaseException):
    """The relay's process died here (no `except Exception` sees it)."""


class World:
    """One collection of documents with outboxes, a frozen clock, and what was published."""

    def __init__(self, collection: Collection) -> None:
        self.collection = collection
        self.clock = FrozenClock()
        self.written: set[str] = set()
        self.published: list[str] = []
        self.during_publish: Callable[[dict[str, Any]], None] = lambda envelope: None
        # Events the broker refuses to confirm (a nack), the others of the batch still go.
        self.unconfirmed: set[str] = set()

    def write(self, doc_id: str) -> str:
        """A domain write that announces one event, through the document's outbox."""
        event_id = str(uuid.uuid4())
        envelope = {"event_id": event_id, "type": "Something"}
        update = with_event({"$set": {"touched_at": self.clock.now()}}, envelope,
                            now=self.clock.now())
        if self.collection.get(doc_id) is None:
            self.collection.insert({"_id": doc_id})
        self.collection.update_one({"_id": doc_id}, update)
        self.written.add(event_id)
        return event_id

    def publish_all(self, envelopes: list[dict[str, Any]]) -> list[bool]:
        """As the broker confirms a batch: each in order, until the connection fails."""
        confirmed: list[bool] = []
        for envelope in envelopes:
            try:
                self.during_publish(envelope)
            except Exception:
                return confirmed + [False] * (len(envelopes) - len(confirmed))
            if envelope["event_id"] in self.unconfirmed:
                confirmed.append(False)
                continue
            self.published.append(envelope["event_id"])
            confirmed.append(True)
        return confirmed

    def relay(self) -> int:
        try:
            return relay_due(self.collection, self, self.clock.now())
        except RelayDied:
            return 0

    def expire_leases(self) -> None:
        self.clock.advance((PAST_A_LEASE).total_seconds())

    def drain(self) -> None:
        """What the running relays do from now on, with nothing else happening."""
        self.during_publish = lambda envelope: None
        for _ in range(5):
            self.expire_leases()
            self.relay()

    def stranded(self) -> list[dict[str, Any]]:
        """Documents with events still pending, or still marked due with nothing to relay."""
        return [doc for doc in self.collection.find({})
                if is_pending(doc) or DUE_AT in doc]


@pytest.fixture
def world(database) -> World:
    return World(database.collection("things"))


def test_a_second_relay_of_the_same_document_strands_no_later_event(world):
    world.write("d")
    # Relay A is slow: its lease runs out while it publishes, relay B takes the document
    # over and finishes first, then A finishes too.
    def a_is_overtaken(envelope):
        world.during_publish = lambda envelope: None
        world.expire_leases()
        world.relay()
    world.during_publish = a_is_overtaken
    world.relay()
    # Later: an event written while a relay is publishing the one before it.
    world.write("d")
    def a_write_lands_meanwhile(envelope):
        world.during_publish = lambda envelope: None
        world.write("d")
    world.during_publish = a_write_lands_meanwhile
    world.relay()
    world.drain()
    assert world.written <= set(world.published)
    assert world.stranded() == []


def test_a_relay_that_dies_after_publishing_publishes_again_and_strands_nothing(world):
    world.write("d")
    def dies(envelope):
        world.published.append(envelope["event_id"])
        raise RelayDied
    world.during_publish = dies
    world.relay()
    world.drain()
    assert world.written <= set(world.published)
    assert world.stranded() == []


def test_a_failed_publish_is_retried(world):
    world.write("d")
    def broker_down(envelope):
        world.during_publish = lambda envelope: None
        raise ConnectionError("broker down")
    world.during_publish = broker_down
    assert world.relay() == 0
    world.drain()
    assert world.written <= set(world.published)
    assert world.stranded() == []


def test_an_event_the_broker_did_not_confirm_stays_pending_while_the_batch_leaves(world):
    refused = world.write("a")
    after_it = world.write("a")
    other = world.write("b")
    world.unconfirmed = {refused}
    assert world.relay() == 1, "of `a`, nothing from its unconfirmed event on counts"
    assert other in world.published
    assert [e["event_id"] for e in world.collection.get("a")["outbox"]] == [refused, after_it]
    assert not is_pending(world.collection.get("b"))
    world.unconfirmed = set()
    world.drain()
    assert world.written <= set(world.published)
    assert world.stranded() == []


def test_a_backlog_larger_than_a_batch_leaves_in_one_sweep(world):
    for n in range(2 * BATCH + 50):
        world.write(f"d{n}")
    assert relay_backlog(world.collection, world, world.clock.now()) == 2 * BATCH + 50
    assert world.written == set(world.published)
    assert world.stranded() == []


# What may happen while a relay is publishing one event.
INTERRUPTIONS = st.sampled_from(
    ["write", "write other", "second relay", "lease expires", "publish fails",
     "relay dies before", "relay dies after"]
)
# What happens between relays.
STEPS = st.sampled_from(["write", "write other", "relay", "relay", "lease expires"])


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_every_event_is_published_and_nothing_stays_pending(database, data):
    world = World(database.collection(f"things_{uuid.uuid4().hex[:12]}"))
    depth = {"now": 0}

    def interrupted(envelope: dict[str, Any]) -> None:
        if depth["now"] >= 2:
            return
        depth["now"] += 1
        try:
            for what in data.draw(st.lists(INTERRUPTIONS, max_size=3)):
                interrupt(what, envelope)
        finally:
            depth["now"] -= 1

    def interrupt(what: str, envelope: dict[str, Any]) -> None:
        if what == "write":
            world.write("d1")
        elif what == "write other":
            world.write("d2")
        elif what == "second relay":
            world.relay()
        elif what == "lease expires":
            world.expire_leases()
        elif what == "publish fails":
            raise ConnectionError("broker refused")
        elif what == "relay dies before":
            raise RelayDied
        elif what == "relay dies after":
            world.published.append(envelope["event_id"])
            raise RelayDied

    world.during_publish = interrupted
    for step in data.draw(st.lists(STEPS, min_size=1, max_size=12)):
        if step == "write":
            world.write("d1")
        elif step == "write other":
            world.write("d2")
        elif step == "relay":
            world.relay()
        else:
            world.expire_leases()
    world.drain()
    assert world.written <= set(world.published)
    assert world.stranded() == []


def test_the_backlog_counts_waiting_documents_and_the_age_of_their_oldest_event(database):
    collection = database.collection("things")
    clock = FrozenClock()
    assert outbox_backlog(collection, clock.now()) == (0, 0.0)
    for doc_id in ("a", "b"):
        event = new_event("UserRegistered", {"user_id": doc_id, "email": "a@example.org",
                                             "policy_version": "1"}, producer="t", now=clock.now())
        collection.insert(new_document_with_events({"_id": doc_id}, event, now=clock.now()))
        clock.advance(30)
    assert outbox_backlog(collection, clock.now()) == (2, 60.0)
    relay_due(collection, World(collection), clock.now())
    assert outbox_backlog(collection, clock.now()) == (0, 0.0)
