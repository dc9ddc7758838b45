"""The loop that moves time forward for every switch: reminders, overdue, firing, pauses.

Each tick claims a batch of due switches (oldest due first, with a lease, so that several
scheduler instances share the work and each due switch is handled by exactly one), decides
what each needs with `switches.next_action`, and carries that out with one conditional
update per switch, holding the claim. The events it emits (ReminderDue, CheckInMissed)
travel in the same write, through the outbox.

Before firing it asks delivery whether every reminder of the cycle has left: our own
outage is not the owner's silence. It asks once per tick for the whole batch, with a
deadline, and never while any database write is in progress. Anything but "sent" or
"failed" for every reminder (including no answer) postpones the firing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.scheduler import tokens
from services.scheduler.storage import SchedulerRepository
from services.scheduler.switches import (
    BecomeOverdue,
    Fire,
    Remind,
    Resume,
    Switch,
    Wait,
    fresh_cycle,
    next_action,
    seconds,
)
from shared.events import new_event

log = logging.getLogger(__name__)

PRODUCER = "scheduler"
REMINDER_KIND = "reminder"
# Statuses that mean a reminder is no longer waiting to leave.
SETTLED = ("sent", "failed")
# A check-in link outlives its cycle's grace by this much, then expires.
LINK_MARGIN = timedelta(days=1)

# references -> {reference: "unknown" | "pending" | "sent" | "failed"}; raises when
# delivery cannot answer.
MailStatus = Callable[[list[str]], dict[str, str]]


def reminder_reference(switch_id: str, cycle: int, step: int) -> str:
    """How delivery names the mail of one reminder (kind "reminder")."""
    return f"{switch_id}:{cycle}:{step}"


@dataclass(frozen=True)
class LoopSettings:
    instance: str
    batch: int
    lease: timedelta
    recheck: timedelta
    link_key: bytes


@dataclass
class TickReport:
    """What one tick did, for logs, heartbeats and tests."""

    claimed: int = 0
    reminded: int = 0
    overdue: int = 0
    fired: int = 0
    postponed: int = 0
    resumed: int = 0
    lost: int = 0  # the owner's write landed first: nothing to do
    errors: int = 0
    order: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in
                ("claimed", "reminded", "overdue", "fired", "postponed", "resumed", "lost",
                 "errors")}


class DueSwitches:
    """One tick of the loop, at one moment."""

    def __init__(self, repo: SchedulerRepository, now: datetime, settings: LoopSettings,
                 mail_status: MailStatus) -> None:
        self.repo = repo
        self.now = now
        self.settings = settings
        self.mail_status = mail_status

    def tick(self) -> TickReport:
        """Claim, decide, act, then record a heartbeat."""
        report = TickReport()
        claimed = self.repo.claim_due(self.now, self.settings.instance, self.settings.batch,
                                      self.settings.lease)
        report.claimed = len(claimed)
        # Catching up after downtime: the earliest deadlines first.
        claimed.sort(key=_deadline_order)
        decided = [(doc, next_action(Switch.from_doc(doc), self.now)) for doc in claimed]
        delivered = self._reminders_left([doc for doc, action in decided
                                          if isinstance(action, Fire)])
        for doc, action in decided:
            report.order.append(doc["_id"])
            try:
                self._carry_out(doc, action, delivered, report)
            except Exception:
                # The claim stays until its lease ends; then this switch is simply due again.
                log.exception("handling switch %s failed; it will be retried", doc["_id"])
                report.errors += 1
        self.repo.beat(self.settings.instance, self.now, **report.figures())
        if any((report.reminded, report.overdue, report.fired, report.postponed,
                report.resumed, report.errors)):
            log.info("tick: %s", report.figures())
        return report

    def _carry_out(self, doc: dict[str, Any], action: Any, delivered: set[str],
                   report: TickReport) -> None:
        if isinstance(action, Remind):
            written = self.repo.remind(doc, action.step, "upcoming", action.due_at,
                                       self._reminder(doc, action.step, "upcoming"), self.now)
            report.reminded += written is not None
        elif isinstance(action, BecomeOverdue):
            written = self.repo.become_overdue(
                doc, action.step, action.grace_ends_at,
                self._reminder(doc, action.step, "overdue", action.grace_ends_at), self.now,
            )
            report.overdue += written is not None
        elif isinstance(action, Fire):
            written = self._fire_or_postpone(doc, doc["_id"] in delivered, report)
        elif isinstance(action, Resume):
            fields = fresh_cycle(Switch.from_doc(doc).schedule, self.now)
            written = self.repo.resume(doc, fields, self.now)
            report.resumed += written is not None
        else:
            assert isinstance(action, Wait)
            written = self.repo.release(doc, action.due_at)
        if written is None:
            report.lost += 1

    def _fire_or_postpone(self, doc: dict[str, Any], delivered: bool,
                          report: TickReport) -> dict | None:
        if not delivered:
            log.warning("switch %s: grace is over but a reminder of cycle %d has not left "
                        "yet; firing waits", doc["_id"], doc["cycle"])
            report.postponed += 1
            return self.repo.release(doc, self.now + self.settings.recheck)
        written = self.repo.fire(doc, self._missed(doc), self.now)
        if written is not None:
            log.warning("switch %s fired (cycle %d)", doc["_id"], doc["cycle"])
            report.fired += 1
        return written

    def _reminders_left(self, docs: list[dict[str, Any]]) -> set[str]:
        """Ids of the switches whose every reminder of this cycle was sent or bounced."""
        if not docs:
            return set()
        references = {doc["_id"]: [reminder_reference(doc["_id"], doc["cycle"], r["step"])
                                   for r in doc.get("reminders", [])] for doc in docs}
        wanted = [ref for refs in references.values() for ref in refs]
        statuses: dict[str, str] = {}
        if wanted:
            try:
                statuses = self.mail_status(wanted)
            except Exception as exc:
                log.warning("delivery cannot say whether reminders left (%s: %s); firing "
                            "waits", type(exc).__name__, exc)
                return set()
        return {switch_id for switch_id, refs in references.items()
                if all(statuses.get(ref) in SETTLED for ref in refs)}

    # Events ---------------------------------------------------------------------------

    def _reminder(self, doc: dict[str, Any], step: int, stage: str,
                  grace_ends_at: datetime | None = None) -> dict:
        deadline = doc["deadline"]
        ends = grace_ends_at or deadline + seconds(doc["grace_seconds"])
        token = tokens.issue(self.settings.link_key, doc["_id"], doc["cycle"],
                             ends + LINK_MARGIN)
        return new_event("ReminderDue", {
            "user_id": doc["user_id"], "switch_id": doc["_id"], "cycle": doc["cycle"],
            "step": step, "stage": stage, "deadline": deadline.isoformat(),
            "email": doc["email"], "checkin_token": token,
        }, producer=PRODUCER, now=self.now)

    def _missed(self, doc: dict[str, Any]) -> dict:
        return new_event("CheckInMissed", {
            "user_id": doc["user_id"], "switch_id": doc["_id"], "cycle": doc["cycle"],
            "deadline": doc["deadline"].isoformat(), "fired_at": self.now.isoformat(),
        }, producer=PRODUCER, now=self.now)


def _deadline_order(doc: dict[str, Any]) -> datetime:
    return doc.get("grace_ends_at") or doc.get("deadline") or doc["due_at"]


def liveness(repo: SchedulerRepository, now: datetime) -> dict[str, Any]:
    """The loop's heartbeat and lag, and switch counts by state: for /readyz and /metrics."""
    beat = repo.newest_heartbeat()
    oldest_due = repo.oldest_due(now)
    return {
        "heartbeat_at": beat["at"].isoformat() if beat else None,
        "heartbeat_age_seconds": (now - beat["at"]).total_seconds() if beat else None,
        "instance": beat["_id"] if beat else None,
        "lag_seconds": (now - oldest_due).total_seconds() if oldest_due else 0.0,
        "due_switches": repo.due_count(now),
        "held_back_switches": repo.held_back_count(now),
        "switches": repo.count_by_state(),
    }
