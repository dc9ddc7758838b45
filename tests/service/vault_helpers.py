"""Helpers of the vault's service tests: events in and out of the real broker, and the
vault's SQLite file read as bytes."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kombu import Connection, Queue, binding

from shared.events import new_event
from shared.events.topology import EVENTS_EXCHANGE, EVENTS_EXCHANGE_NAME, declare_topology


def publish(amqp_uri: str, envelope: dict[str, Any]) -> None:
    """Put an event on the events exchange, as another service's relay would."""
    with Connection(amqp_uri) as conn:
        conn.Producer().publish(
            json.dumps(envelope).encode(), exchange=EVENTS_EXCHANGE_NAME,
            routing_key=envelope["type"], content_type="application/json",
            content_encoding="utf-8", delivery_mode=2,
        )


def check_in_missed(user_id: str, switch_id: str, cycle: int = 1) -> dict[str, Any]:
    now = datetime.now(UTC)
    return new_event("CheckInMissed", {"user_id": user_id, "switch_id": switch_id,
                                       "cycle": cycle, "deadline": now, "fired_at": now},
                     producer="scheduler", now=now)


class EventTap:
    """Every copy of the given events that reaches the exchange, duplicates included.

    A plain queue of the test's own, not a consumer: it sees what was published, before
    any deduplication.
    """

    def __init__(self, amqp_uri: str, *event_types: str) -> None:
        declare_topology(amqp_uri)
        self.connection = Connection(amqp_uri)
        self.queue = Queue(
            f"test-tap-{uuid.uuid4().hex[:8]}",
            bindings=[binding(EVENTS_EXCHANGE, routing_key=t) for t in event_types],
            exclusive=True,
        )
        self.channel = self.connection.channel()
        self.bound = self.queue(self.channel)
        self.bound.declare()
        self.raw: list[bytes] = []

    def drain(self) -> list[dict[str, Any]]:
        """Everything received so far, as envelopes."""
        while (message := self.bound.get(no_ack=True)) is not None:
            self.raw.append(message.body if isinstance(message.body, bytes)
                            else message.body.encode())
        return [json.loads(body) for body in self.raw]

    def close(self) -> None:
        self.connection.release()


def stored_bytes(data_dir: Path, service: str = "vault") -> bytes:
    """The service's SQLite file and its write-ahead log, as an attacker with a copy sees them."""
    return b"".join(path.read_bytes() for path in sorted(data_dir.glob(f"{service}.sqlite3*")))
