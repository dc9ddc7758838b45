"""A scheduler in a box for unit tests: the real domain code over a real embedded SQLite
store, a frozen clock, and delivery's answers decided by the test (default: "sent").

Delivery is faithful where the loop depends on it: it refuses a question about more
references than the real one takes, and its word that a reminder settled reaches the
scheduler only when a test says so (`settle`), as `ReminderSettled` would.

No relay runs, so every event the scheduler wrote stays in its document's outbox, where
`events()` reads it: exactly what would have been published.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from services.delivery.schemas import MAX_STATUS_REFERENCES
from services.scheduler.loop import DueSwitches, LoopSettings, TickReport, reminder_reference
from services.scheduler.scheduler import Scheduler, switch_id_for
from services.scheduler.schemas import ClientContext, SwitchSettings, SwitchUpdate
from services.scheduler.storage import INDEXES, SchedulerRepository
from services.scheduler.tokens import link_key
from shared.clock import FrozenClock
from shared.errors import InvalidInput
from shared.events.schemas import PlanChanged, ReminderSettled
from shared.storage.provider import open_store

START = datetime(2030, 1, 1, tzinfo=UTC)
SECRET = b"s" * 32
CLIENT = ClientContext(ip="203.0.113.9", user_agent="pytest")


class World:
    def __init__(self, data_dir: Path, *, min_interval: int = 60) -> None:
        self.db = open_store("scheduler", INDEXES, data_dir=data_dir)
        self.repo = SchedulerRepository(self.db)
        self.clock = FrozenClock(START)
        self.min_interval = min_interval
        self.key = link_key(SECRET)
        self.mail: dict[str, str] = {}
        self.mail_default = "sent"
        # When delivery says a reminder settled (default: long before anything was due).
        self.mail_settled_at: dict[str, datetime] = {}
        self.mail_questions: list[list[str]] = []
        self.mail_error: Exception | None = None

    # Time and the loop ----------------------------------------------------------------

    @property
    def now(self) -> datetime:
        return self.clock.now()

    def advance(self, seconds: float) -> datetime:
        return self.clock.advance(seconds)

    def loop_settings(self, instance: str = "test-instance", batch: int = 100,
                      lease: float = 30, recheck: float = 15) -> LoopSettings:
        return LoopSettings(instance=instance, batch=batch, lease=timedelta(seconds=lease),
                            recheck=timedelta(seconds=recheck), link_key=self.key)

    def tick(self, **settings: Any) -> TickReport:
        return DueSwitches(self.repo, self.now, self.loop_settings(**settings),
                           self.mail_status).tick()

    def mail_status(self, references: list[str]) -> dict[str, dict[str, Any]]:
        """Delivery's `reminder_status`, as the test decides it."""
        self.mail_questions.append(list(references))
        if self.mail_error is not None:
            raise self.mail_error
        if len(references) > MAX_STATUS_REFERENCES:
            raise InvalidInput(f"references: at most {MAX_STATUS_REFERENCES}")
        return {ref: self._mail_answer(ref) for ref in references}

    def _mail_answer(self, reference: str) -> dict[str, Any]:
        status = self.mail.get(reference, self.mail_default)
        settled = status in ("sent", "bounced")
        at = self.mail_settled_at.get(reference, START)
        return {"status": status, "settled_at": at.isoformat() if settled else None,
                "last_error": None if settled else "connection refused"}

    def settle(self, switch_id: str, step: int, outcome: str = "sent",
               at: datetime | None = None) -> None:
        """Delivery's ReminderSettled for reminder `step` of the switch's current cycle."""
        doc = self.switch(switch_id)
        at = at or self.now
        self.mail[reminder_reference(switch_id, doc["cycle"], step)] = outcome
        self.mail_settled_at[reminder_reference(switch_id, doc["cycle"], step)] = at
        self.scheduler().on_reminder_settled(ReminderSettled(
            user_id=doc["user_id"], switch_id=switch_id, cycle=doc["cycle"], step=step,
            outcome=outcome, settled_at=at))

    def forget_mail(self) -> None:
        """Delivery's retention: every record reduced to counts, every answer `unknown`."""
        self.mail.clear()
        self.mail_default = "unknown"

    # The owner's side ---------------------------------------------------------------

    def scheduler(self) -> Scheduler:
        return Scheduler(self.repo, self.now, min_interval=self.min_interval, link_key=self.key)

    def registered_user(self, user_id: str | None = None) -> str:
        user_id = user_id or str(uuid.uuid4())
        self.scheduler().on_user_registered(user_id, f"{user_id[:8]}@example.org")
        return user_id

    def verified_user(self, user_id: str | None = None, **settings: Any) -> tuple[str, str]:
        """A registered, verified user; returns (user_id, default switch id)."""
        user_id = self.registered_user(user_id)
        self.scheduler().on_email_verified(user_id, f"{user_id[:8]}@example.org")
        switch_id = switch_id_for(user_id, 0)
        if settings:
            self.update(user_id, switch_id, **settings)
        return user_id, switch_id

    def update(self, user_id: str, switch_id: str, **changes: Any):
        return self.scheduler().update(user_id, switch_id, SwitchUpdate.model_validate(changes))

    def plan(self, user_id: str, revision: int = 1, plan: str = "premium_monthly",
             status: str = "active", switches: int = 3) -> None:
        """Billing's PlanChanged for the user, as the scheduler's consumer handles it."""
        self.scheduler().on_plan_changed(PlanChanged(
            user_id=user_id, plan=plan, status=status, revision=revision,
            entitlements={"switches": switches, "messages_per_switch": 3,
                          "recipients_per_message": 3, "body_bytes": 10_240}))

    def create(self, user_id: str, **settings: Any):
        return self.scheduler().create(user_id, SwitchSettings.model_validate(settings))

    def check_in(self, user_id: str, switch_id: str | None = None):
        return self.scheduler().check_in(user_id, switch_id, CLIENT)

    def switch(self, switch_id: str) -> dict[str, Any]:
        doc = self.repo.switch(switch_id)
        assert doc is not None
        return doc

    # What was announced --------------------------------------------------------------

    def events(self, event_type: str | None = None,
               switch_id: str | None = None) -> list[dict[str, Any]]:
        """Every event written so far, oldest first, optionally of one type or switch."""
        found = []
        for doc in self.repo.switches.find({}):
            found += doc.get("outbox", [])
        found.sort(key=lambda e: e["occurred_at"])
        return [
            e for e in found
            if (event_type is None or e["type"] == event_type)
            and (switch_id is None or e["data"]["switch_id"] == switch_id)
        ]

    def close(self) -> None:
        self.db.close()
