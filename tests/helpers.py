"""Small helpers shared by tests: polling with a deadline instead of sleeping, a look into
a dead-letter queue, and a service's part of an erasure asked as privacy's saga asks it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02,
             what: str = "") -> T:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def publish(amqp_uri: str, envelope: dict) -> None:
    """Put an event on the events exchange, as a service's relay would (persistent)."""
    import json

    from kombu import Connection

    from shared.events.topology import EVENTS_EXCHANGE_NAME

    with Connection(amqp_uri) as conn:
        conn.Producer().publish(
            json.dumps(envelope).encode(), exchange=EVENTS_EXCHANGE_NAME,
            routing_key=envelope["type"], content_type="application/json",
            content_encoding="utf-8", delivery_mode=2,
        )


def dead_letters(amqp_uri: str, queue: str) -> list:
    """What waits in the dead-letter queue `queue` (left there), up to 100 messages."""
    from shared.events.deadletters import connect, peek

    connection = connect(amqp_uri)
    try:
        return list(peek(connection.channel(), queue, 100))
    finally:
        connection.close()


def erase_part(container, user_id: str, reason: str = "user", timeout: float = 30.0) -> dict:
    """Publish `ErasureRequested` for `user_id` (as privacy's saga does) and wait until the
    service running in `container` has done its part; the summary it answered."""
    import uuid
    from datetime import UTC, datetime

    from shared.config import settings_of
    from shared.events import new_event
    from shared.storage.provider import ERASURES, database_of

    request_id = str(uuid.uuid4())
    publish(settings_of(container).amqp_uri, new_event(
        "ErasureRequested", {"request_id": request_id, "user_id": user_id, "reason": reason,
                             "email": f"{user_id}@example.org"},
        producer="privacy", now=datetime.now(UTC)))
    records = database_of(container).collection(ERASURES)
    done = wait_for(lambda: records.get(request_id), timeout=timeout,
                    what=f"{container.service_name}'s part of the erasure")
    return done["summary"]
