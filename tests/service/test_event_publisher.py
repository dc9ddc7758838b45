"""The event publisher against the real RabbitMQ: a batch confirmed at once, every event
as its consumers expect it, and nothing counted as published that the broker did not
confirm."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from kombu import Connection, Queue

from shared.events import new_event
from shared.events.publisher import EventPublisher, NotConfirmed
from shared.events.topology import EVENTS_EXCHANGE
from tests.helpers import wait_for

pytestmark = pytest.mark.service

MANAGEMENT = "http://127.0.0.1:15672/api"


def registered(n: int) -> dict[str, Any]:
    return new_event("UserRegistered", {"user_id": f"user-{n}", "email": "ada@example.org",
                                        "policy_version": "2024-04-29"},
                     producer="test", now=datetime.now(UTC), request_id=f"request-{n}")


@pytest.fixture
def queue(rabbit_config: dict[str, Any]) -> Queue:
    """A durable queue that takes every UserRegistered, as a consumer's would."""
    bound = Queue(f"test-{uuid.uuid4().hex[:8]}", exchange=EVENTS_EXCHANGE,
                  routing_key="UserRegistered", durable=True)
    with Connection(rabbit_config["AMQP_URI"]) as conn:
        bound(conn.channel()).declare()
    return bound


@pytest.fixture
def publisher(rabbit_config: dict[str, Any]) -> Iterator[EventPublisher]:
    made = EventPublisher(rabbit_config["AMQP_URI"])
    yield made
    made.close()


def drain(amqp_uri: str, queue: Queue, count: int) -> list:
    """Take `count` messages off the queue, in order."""
    taken = []
    with Connection(amqp_uri) as conn:
        channel = conn.channel()
        for _ in range(count):
            message = wait_for(lambda: queue(channel).get(no_ack=True), what="a message")
            taken.append(message)
    return taken


def test_a_batch_is_confirmed_at_once_and_arrives_whole_and_in_order(rabbit_config, queue,
                                                                    publisher):
    envelopes = [registered(n) for n in range(50)]
    assert publisher.publish_all(envelopes) == [True] * 50
    messages = drain(rabbit_config["AMQP_URI"], queue, 50)
    assert [json.loads(m.body) for m in messages] == envelopes
    first = messages[0]
    assert first.properties["message_id"] == envelopes[0]["event_id"]
    assert first.properties["delivery_mode"] == 2, "persistent"
    assert first.content_type == "application/json"
    assert first.headers["x-event-id"] == envelopes[0]["event_id"]
    assert first.headers["nameko.request_id"] == "request-0"


def test_nothing_counts_as_published_on_a_connection_the_broker_closed(rabbit_config, queue,
                                                                       publisher):
    publisher.publish(registered(1))
    vhost = rabbit_config["vhost"]
    management = requests.Session()
    management.auth = ("guest", "guest")
    # The management API lists a connection only after its next stats emission (5 s).
    [name] = wait_for(lambda: [c["name"] for c in management.get(
        f"{MANAGEMENT}/vhosts/{vhost}/connections", timeout=5).json()], timeout=10.0,
        what="the publisher's connection")
    management.delete(f"{MANAGEMENT}/connections/{name}", timeout=5).raise_for_status()

    assert publisher.publish_all([registered(2)]) == [False]
    assert publisher.publish_all([registered(3)]) == [True], "on a new connection"
    users = [json.loads(m.body)["data"]["user_id"]
             for m in drain(rabbit_config["AMQP_URI"], queue, 2)]
    assert users == ["user-1", "user-3"]


def test_a_publisher_that_cannot_reach_the_broker_confirms_nothing():
    unreachable = EventPublisher("amqp://guest:guest@127.0.0.1:1//")
    assert unreachable.publish_all([registered(1), registered(2)]) == [False, False]
    with pytest.raises(NotConfirmed):
        unreachable.publish(registered(3))
