"""Helpers of the vault's service tests: events in and out of the real broker, switches in
the real scheduler's store, and the vault's SQLite file read as bytes."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kombu import Connection, Queue, binding

from services.scheduler.scheduler import Scheduler
from services.scheduler.schemas import SwitchSettings
from services.scheduler.storage import SchedulerRepository
from services.scheduler.tokens import link_key
from shared.config import settings_of
from shared.events import new_event
from shared.events.schemas import PlanChanged
from shared.events.topology import EVENTS_EXCHANGE, declare_topology
from shared.plans import PREMIUM_MONTHLY
from shared.storage.provider import database_of
from tests.helpers import publish  # noqa: F401 (the tests import it from here too)


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


class Switchboard:
    """Switches in the real scheduler's own store, made by its own domain code, so that
    the scheduler answers the vault's questions about them as it would for real users."""

    def __init__(self, scheduler_container) -> None:
        self.repo = SchedulerRepository(database_of(scheduler_container))
        self.settings = settings_of(scheduler_container)

    def _scheduler(self):
        return Scheduler(self.repo, datetime.now(UTC), min_interval=self.settings.min_interval,
                         link_key=link_key(self.settings.secret_key_bytes))

    def user(self, user_id: str) -> str:
        """A registered, verified user; returns the id of their (armed) default switch."""
        scheduler = self._scheduler()
        scheduler.on_user_registered(user_id, f"{user_id}@example.org")
        scheduler.on_email_verified(user_id, f"{user_id}@example.org")
        return scheduler.default_switch_id(user_id)

    def registered(self, user_id: str) -> str:
        """A registered user who never verified the address; their switch is unarmed."""
        scheduler = self._scheduler()
        scheduler.on_user_registered(user_id, f"{user_id}@example.org")
        return scheduler.default_switch_id(user_id)

    def another(self, user_id: str) -> str:
        """One more switch of the user (on a paid plan, so that the scheduler allows it)."""
        self.premium(user_id)
        return self._scheduler().create(user_id, SwitchSettings()).id

    def premium(self, user_id: str) -> None:
        self._scheduler().on_plan_changed(PlanChanged(
            user_id=user_id, plan="premium_monthly", status="active", revision=1,
            entitlements=PREMIUM_MONTHLY.entitlements.as_dict()))

    def fire(self, user_id: str, switch_id: str) -> int:
        """Mark the switch fired as the scheduler's loop would; returns its cycle."""
        doc = self.repo.switches.update_one(
            {"_id": switch_id, "user_id": user_id},
            {"$set": {"state": "fired", "fired_at": datetime.now(UTC)},
             "$unset": {"due_at": ""}},
        )
        return doc["cycle"]
