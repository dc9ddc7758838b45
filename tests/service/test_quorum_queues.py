"""`JICM_QUEUE_TYPE=quorum` on the real local broker: every durable queue a service declares
(event consumers, their dead letters, the delay queues, the unrouted queue and nameko's
RPC queue) is a quorum queue, and events still flow, retry, dead-letter and replay as on
classic queues. The dead-letter queues are bounded by a policy that refuses, never drops."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import pika
import pytest
import requests
from nameko.testing.services import entrypoint_hook

from shared.config import SETTINGS_CONFIG_KEY, QueueType, load_settings
from shared.events import OutboxRelay, event_handler, new_document_with_events, new_event
from shared.events import topology as topo
from shared.events.consumer import DeadLetter
from shared.events.deadletters import connect, replay
from shared.events.management_api import POLICY_NAME
from shared.rpc.entrypoint import rpc
from shared.storage import Index
from shared.storage.provider import Storage
from tests.helpers import dead_letters, publish, wait_for

pytestmark = pytest.mark.service

MANAGEMENT = "http://127.0.0.1:15672/api"
AUTH = ("guest", "guest")
DEAD = "jicm.quorum_listener.UserRegistered.dead"

HANDLED: list[str] = []
BEHAVIOUR = {"fail_times": 0, "refuse": False}
FAILURES: dict[str, int] = {}


def registered(user_id: str) -> dict[str, Any]:
    return new_event("UserRegistered", {"user_id": user_id, "email": "ada@example.org",
                                        "policy_version": "2024-04-29"},
                     producer="quorum_producer", now=datetime.now(UTC))


class QuorumProducer:
    name = "quorum_producer"
    store = Storage({"things": [Index.on("name")]})
    outbox = OutboxRelay("things")

    @rpc
    def make_thing(self, thing_id: str) -> None:
        self.store.collection("things").insert(
            new_document_with_events({"_id": thing_id}, registered(thing_id),
                                     now=datetime.now(UTC)))


class QuorumListener:
    name = "quorum_listener"
    store = Storage({})

    @event_handler("UserRegistered")
    def on_user_registered(self, event) -> None:
        if BEHAVIOUR["refuse"]:
            raise DeadLetter("never")
        seen = FAILURES.get(event.event_id, 0)
        if seen < BEHAVIOUR["fail_times"]:
            FAILURES[event.event_id] = seen + 1
            raise RuntimeError(f"temporary failure {seen + 1}")
        HANDLED.append(event.data.user_id)


@pytest.fixture(autouse=True)
def _fresh_state(monkeypatch):
    HANDLED.clear()
    FAILURES.clear()
    BEHAVIOUR.update(fail_times=0, refuse=False)
    monkeypatch.setattr(topo, "RETRY_DELAYS_SECONDS", (1, 1))


@pytest.fixture
def quorum_config(rabbit_config, tmp_path) -> dict[str, Any]:
    settings = load_settings({"JICM_ENV": "test", "AMQP_URI": rabbit_config["AMQP_URI"],
                              "JICM_DATA_DIR": str(tmp_path / "data"),
                              "JICM_QUEUE_TYPE": "quorum", "JICM_DEAD_LETTER_MAX_LENGTH": "2"})
    return {**rabbit_config, SETTINGS_CONFIG_KEY: settings, "max_workers": 4}


@pytest.fixture
def services(container_factory, quorum_config):
    listener = container_factory(QuorumListener, quorum_config)
    producer = container_factory(QuorumProducer, quorum_config)
    listener.start()
    producer.start()
    return producer


def vhost_of(amqp_uri: str) -> str:
    return urlsplit(amqp_uri).path[1:]


def queues(amqp_uri: str) -> dict[str, dict]:
    answer = requests.get(f"{MANAGEMENT}/queues/{quote(vhost_of(amqp_uri), safe='')}",
                          auth=AUTH, timeout=10)
    answer.raise_for_status()
    return {queue["name"]: queue for queue in answer.json()}


def test_every_durable_queue_a_service_declares_is_a_quorum_queue(services, quorum_config):
    declared = queues(quorum_config["AMQP_URI"])
    durable = {name: queue["type"] for name, queue in declared.items() if queue["durable"]}
    assert {"rpc-quorum_producer", "jicm.quorum_listener.UserRegistered", DEAD,
            topo.UNROUTED_NAME, "jicm.retry.1s"} <= set(durable)
    assert set(durable.values()) == {"quorum"}
    # Reply queues belong to one process and expire with it: they stay classic.
    transient = [queue for queue in declared.values() if not queue["durable"]]
    assert all(queue["type"] == "classic" for queue in transient)


def test_an_event_from_the_outbox_reaches_its_consumer_through_quorum_queues(services):
    with entrypoint_hook(services, "make_thing") as make_thing:
        make_thing("q-1")
    wait_for(lambda: HANDLED == ["q-1"], what="the listener to handle the event")


def test_a_failing_handler_is_retried_through_the_quorum_delay_queues(services, quorum_config):
    BEHAVIOUR["fail_times"] = 2
    publish(quorum_config["AMQP_URI"], registered("q-retry"))
    wait_for(lambda: HANDLED == ["q-retry"], timeout=20, what="two retries, then success")
    assert dead_letters(quorum_config["AMQP_URI"], DEAD) == []


def test_a_refused_event_is_dead_lettered_and_an_operator_can_replay_it(services, quorum_config):
    amqp_uri = quorum_config["AMQP_URI"]
    BEHAVIOUR["refuse"] = True
    event = registered("q-dead")
    publish(amqp_uri, event)
    parked = wait_for(lambda: dead_letters(amqp_uri, DEAD), what="the dead letter")
    assert parked[0].event_id == event["event_id"]
    assert parked[0].origin == "jicm.quorum_listener.UserRegistered"

    BEHAVIOUR["refuse"] = False
    connection = connect(amqp_uri)
    try:
        assert replay(connection.channel(), DEAD) == 1
    finally:
        connection.close()
    wait_for(lambda: HANDLED == ["q-dead"], what="the replayed event to be handled")


def test_the_policy_bounds_the_dead_letter_queues_by_refusing_not_dropping(services,
                                                                         quorum_config):
    amqp_uri = quorum_config["AMQP_URI"]
    vhost = quote(vhost_of(amqp_uri), safe="")
    policy = requests.get(f"{MANAGEMENT}/policies/{vhost}/{POLICY_NAME}", auth=AUTH, timeout=10)
    assert policy.json()["definition"] == {"max-length": 2, "overflow": "reject-publish"}
    wait_for(lambda: queues(amqp_uri)[DEAD].get("policy") == POLICY_NAME,
             what="the broker to apply the policy to the dead-letter queue")
    assert not queues(amqp_uri)["jicm.quorum_listener.UserRegistered"].get("policy")

    connection = connect(amqp_uri)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        outcomes = [_publish_confirmed(channel, f"dead letter {n}".encode()) for n in range(5)]
    finally:
        connection.close()
    # A quorum queue applies its bound once it is over it: one message may slip past.
    assert outcomes[:2] == ["accepted", "accepted"]
    assert outcomes[-1] == "refused"
    assert len(dead_letters(amqp_uri, DEAD)) == outcomes.count("accepted") <= 3


def _publish_confirmed(channel, body: bytes) -> str:
    try:
        channel.basic_publish("", DEAD, body, pika.BasicProperties(delivery_mode=2))
    except pika.exceptions.NackError:
        return "refused"
    return "accepted"


def test_classic_stays_the_default_for_a_single_local_broker():
    assert load_settings({"JICM_ENV": "test"}).queue_type is QueueType.CLASSIC
    assert topo.consumer_queue("x", "UserRegistered").queue_arguments == {}
