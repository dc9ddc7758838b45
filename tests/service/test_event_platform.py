"""The event platform against the real RabbitMQ: outbox, idempotent consumers, retries,
dead letters and their replay. Two small services stand in for real ones: `producer`
writes documents that announce themselves through the outbox, `listener` handles
UserRegistered and records what it saw."""

from __future__ import annotations

import contextlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import eventlet
import pytest
from kombu import Connection
from nameko.rpc import rpc
from nameko.testing.services import entrypoint_hook

from shared.events import OutboxRelay, event_handler, new_document_with_events, new_event
from shared.events import topology as topo
from shared.events.consumer import DeadLetter
from shared.events.deadletters import connect, replay
from shared.events.outbox import is_pending
from shared.storage import DuplicateKeyError, Index, open_database
from shared.storage.provider import PROCESSED_EVENTS, Storage, database_of
from tests.helpers import dead_letters as _dead_letters
from tests.helpers import wait_for

pytestmark = pytest.mark.service

HANDLED: list[str] = []
FAILURES: dict[str, int] = {}
BEHAVIOUR = {"fail_times": 0, "refuse": False, "slow": 0.0}


def registered_event(user_id: str | None = None) -> dict[str, Any]:
    return new_event(
        "UserRegistered",
        {"user_id": user_id or str(uuid.uuid4()), "email": "ada@example.org",
         "policy_version": "2024-04-29"},
        producer="producer",
        now=datetime.now(UTC),
    )


class Producer:
    name = "producer"
    store = Storage({"things": [Index.on("name")]})
    outbox = OutboxRelay("things")

    @rpc
    def make_thing(self, thing_id: str) -> str:
        event = registered_event(thing_id)
        self.store.collection("things").insert(
            new_document_with_events({"_id": thing_id}, event, now=datetime.now(UTC))
        )
        return event["event_id"]


class Listener:
    name = "listener"
    store = Storage({})

    @event_handler("UserRegistered")
    def on_user_registered(self, event) -> None:
        if BEHAVIOUR["refuse"]:
            raise DeadLetter("this event can never be handled")
        seen = FAILURES.get(event.event_id, 0)
        if seen < BEHAVIOUR["fail_times"]:
            FAILURES[event.event_id] = seen + 1
            raise RuntimeError(f"temporary failure {seen + 1}")
        eventlet.sleep(BEHAVIOUR["slow"])
        HANDLED.append(event.data.user_id)


class KeyedListener:
    """Keeps one record per event, under the event's id."""

    name = "keyed_listener"
    store = Storage({})

    @event_handler("UserRegistered", keyed_by_event=True)
    def on_user_registered(self, event) -> None:
        seen = FAILURES.get(event.event_id, 0)
        if seen < BEHAVIOUR["fail_times"]:
            FAILURES[event.event_id] = seen + 1
            raise RuntimeError(f"temporary failure {seen + 1}")
        eventlet.sleep(BEHAVIOUR["slow"])
        with contextlib.suppress(DuplicateKeyError):
            self.store.collection("registrations").insert(
                {"_id": event.event_id, "user_id": event.data.user_id})
        HANDLED.append(event.data.user_id)


@pytest.fixture(autouse=True)
def _fresh_state(monkeypatch):
    HANDLED.clear()
    FAILURES.clear()
    BEHAVIOUR.update(fail_times=0, refuse=False, slow=0.0)
    # Real back-off is 1 s, 5 s, 30 s...; two quick retries keep the tests quick.
    monkeypatch.setattr(topo, "RETRY_DELAYS_SECONDS", (1, 1))


@pytest.fixture
def listener(container_factory, service_config):
    container = container_factory(Listener, service_config)
    container.start()
    return container


@pytest.fixture
def producer(container_factory, service_config):
    container = container_factory(Producer, service_config)
    container.start()
    return container


def publish_raw(amqp_uri: str, body: bytes | dict, content_type: str = "application/json",
                routing_key: str = "UserRegistered") -> None:
    payload = json.dumps(body).encode() if isinstance(body, dict) else body
    with Connection(amqp_uri) as conn:
        producer = conn.Producer()
        producer.publish(payload, exchange=topo.EVENTS_EXCHANGE_NAME, routing_key=routing_key,
                         content_type=content_type, content_encoding="utf-8",
                         delivery_mode=2)


def dead_letters(amqp_uri: str, queue: str = "jicm.listener.UserRegistered.dead") -> list:
    return _dead_letters(amqp_uri, queue)


def test_an_event_written_with_its_document_reaches_the_consumer(listener, producer):
    with entrypoint_hook(producer, "make_thing") as make_thing:
        make_thing("u-1")
    wait_for(lambda: HANDLED == ["u-1"], what="the listener to handle the event")


def test_a_redelivered_event_is_handled_once(listener, service_config):
    event = registered_event("u-2")
    publish_raw(service_config["AMQP_URI"], event)
    publish_raw(service_config["AMQP_URI"], event)
    publish_raw(service_config["AMQP_URI"], registered_event("u-3"))
    wait_for(lambda: "u-3" in HANDLED and "u-2" in HANDLED)
    # The third event was published after the duplicate, so the duplicate was seen first.
    wait_for(lambda: len(dead_letters(service_config["AMQP_URI"])) == 0)
    assert HANDLED.count("u-2") == 1


def test_two_copies_in_flight_at_once_run_the_handler_once(listener, service_config, caplog):
    caplog.set_level("INFO", logger="shared.events.consumer")
    BEHAVIOUR["slow"] = 0.5  # the first copy is still running when the second arrives
    event = registered_event("u-dup")
    publish_raw(service_config["AMQP_URI"], event)
    publish_raw(service_config["AMQP_URI"], event)
    wait_for(lambda: f"deferring UserRegistered {event['event_id']}" in caplog.text)
    wait_for(lambda: f"skipping UserRegistered {event['event_id']}" in caplog.text,
             what="the deferred copy to come back and be skipped")
    assert HANDLED == ["u-dup"]


def test_a_handler_keyed_by_the_event_keeps_one_record_of_copies_in_flight_at_once(
    container_factory, service_config
):
    keyed = container_factory(KeyedListener, service_config)
    keyed.start()
    BEHAVIOUR["slow"] = 0.5  # the first copy is still running when the second arrives
    event = registered_event("u-keyed")
    publish_raw(service_config["AMQP_URI"], event)
    publish_raw(service_config["AMQP_URI"], event)
    wait_for(lambda: HANDLED == ["u-keyed", "u-keyed"], what="both copies to run")
    db = database_of(keyed)
    assert db.collection("registrations").find({}) == [
        {"_id": event["event_id"], "user_id": "u-keyed"}]
    assert db.collection(PROCESSED_EVENTS).find({}) == [], "no claim, no processed mark"


def test_a_failing_handler_keyed_by_the_event_is_retried_until_it_succeeds(
    container_factory, service_config
):
    keyed = container_factory(KeyedListener, service_config)
    keyed.start()
    BEHAVIOUR["fail_times"] = 2
    publish_raw(service_config["AMQP_URI"], registered_event("u-keyed-retry"))
    wait_for(lambda: HANDLED == ["u-keyed-retry"], timeout=15,
             what="the third attempt to succeed")
    assert sum(FAILURES.values()) == 2
    assert len(database_of(keyed).collection("registrations").find({})) == 1


def test_a_failing_handler_is_retried_until_it_succeeds(listener, service_config):
    BEHAVIOUR["fail_times"] = 2
    publish_raw(service_config["AMQP_URI"], registered_event("u-4"))
    wait_for(lambda: HANDLED == ["u-4"], timeout=15, what="the third attempt to succeed")
    assert sum(FAILURES.values()) == 2


def test_a_handler_that_keeps_failing_ends_in_the_dead_letter_queue_with_the_reason(
    listener, service_config
):
    BEHAVIOUR["fail_times"] = 99
    event = registered_event("u-5")
    publish_raw(service_config["AMQP_URI"], event)
    parked = wait_for(lambda: dead_letters(service_config["AMQP_URI"]), timeout=15)
    assert parked[0].event_id == event["event_id"]
    assert "failed 3 times" in parked[0].reason
    assert "temporary failure 3" in parked[0].reason
    assert HANDLED == []


def test_a_handler_can_refuse_an_event_for_good_without_retries(listener, service_config):
    BEHAVIOUR["refuse"] = True
    publish_raw(service_config["AMQP_URI"], registered_event("u-6"))
    parked = wait_for(lambda: dead_letters(service_config["AMQP_URI"]))
    assert "can never be handled" in parked[0].reason


@pytest.mark.parametrize(
    "body, content_type, reason",
    [
        (b"{not json", "application/json", "undecodable"),
        (b"plain text", "text/plain", "undecodable"),
        ({"type": "UserRegistered"}, "application/json", "envelope lacks"),
        ({**registered_event(), "data": {"user_id": 1}}, "application/json", "user_id"),
    ],
)
def test_a_malformed_event_is_dead_lettered_and_the_consumer_keeps_working(
    listener, service_config, body, content_type, reason
):
    publish_raw(service_config["AMQP_URI"], body, content_type)
    parked = wait_for(lambda: dead_letters(service_config["AMQP_URI"]))
    assert reason in parked[0].reason
    publish_raw(service_config["AMQP_URI"], registered_event("after"))
    wait_for(lambda: HANDLED == ["after"], what="the consumer to survive the bad message")


def test_an_event_written_just_before_a_crash_is_published_after_the_restart(
    listener, container_factory, service_config, settings
):
    # The producer wrote its document and died before relaying: the event is only in
    # the document's outbox, in the producer's database file.
    db = open_database("producer", mongo_uri=None, data_dir=settings.data_dir)
    db.collection("things").insert(
        new_document_with_events({"_id": "u-7"}, registered_event("u-7"), now=datetime.now(UTC))
    )
    db.close()
    restarted = container_factory(Producer, service_config)
    restarted.start()
    wait_for(lambda: HANDLED == ["u-7"], what="the relay to publish the pending event")
    things = database_of(restarted).collection("things")
    wait_for(lambda: not is_pending(things.get("u-7")), what="the outbox to be cleared")
    assert things.get("u-7")["outbox"] == []


def test_an_event_published_while_its_consumer_is_down_waits_for_it(
    container_factory, service_config, monkeypatch
):
    monkeypatch.setitem(topo.CONSUMERS, "listener", ("UserRegistered",))
    producer = container_factory(Producer, service_config)
    producer.start()  # declares the whole topology, the listener's queue included
    with entrypoint_hook(producer, "make_thing") as make_thing:
        make_thing("u-8")
    things = database_of(producer).collection("things")
    wait_for(lambda: not is_pending(things.get("u-8")), what="the event to be published")
    listener = container_factory(Listener, service_config)
    listener.start()
    wait_for(lambda: HANDLED == ["u-8"], what="the late listener to receive the event")


def test_an_event_nobody_consumes_is_parked_not_dropped(producer, service_config):
    # DeliveryFailed is for operators and metrics: no service consumes it.
    publish_raw(service_config["AMQP_URI"], registered_event("u-9"),
                routing_key="DeliveryFailed")
    parked = wait_for(lambda: dead_letters(service_config["AMQP_URI"], topo.UNROUTED_NAME))
    assert parked[0].routing_key == "DeliveryFailed"


def test_an_operator_can_replay_a_dead_letter_once_the_bug_is_fixed(listener, service_config):
    BEHAVIOUR["refuse"] = True
    event = registered_event("u-10")
    publish_raw(service_config["AMQP_URI"], event)
    wait_for(lambda: dead_letters(service_config["AMQP_URI"]))
    BEHAVIOUR["refuse"] = False  # the fix is deployed
    connection = connect(service_config["AMQP_URI"])
    try:
        replayed = replay(connection.channel(), "jicm.listener.UserRegistered.dead")
    finally:
        connection.close()
    assert replayed == 1
    wait_for(lambda: HANDLED == ["u-10"], what="the replayed event to be handled")
    assert dead_letters(service_config["AMQP_URI"]) == []
