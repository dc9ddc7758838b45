"""The loop that moves time forward for every switch: reminders, overdue, firing, pauses.

Each tick claims a batch of due switches (oldest due first, with a lease, so that several
scheduler instances share the work and each due switch is handled by exactly one), decides
what each needs with `switches.next_action`, and carries that out with one conditional
update per switch, holding the claim. The events it emits (ReminderDue, CheckInMissed)
travel in the same write, through the outbox.

While a batch comes back full the tick claims the next one at once (a backlog after our
own outage, or thousands of deadlines in one second, is not worked off one batch per tick),
up to `TICK_LIMIT` switches a tick; a batch that lost some claims to another instance is
followed by another as long as switches are still due. Each batch is claimed at the
clock's time, so its leases are whole; between batches the tick gives the event loop a
turn (`pause`), so RPCs and the broker's heartbeats are answered while it works, and it
records a heartbeat after each batch.

Our own outage is not the owner's silence: a switch fires only once the cycle's overdue
notice has left (delivery's `ReminderSettled`, recorded on the switch). A switch whose
grace is over without that word is one delivery is asked about, for the whole batch at
once, in questions of at most `MAX_REFERENCES` (a question delivery refuses is asked again
switch by switch, so it holds back no switch it did not concern), with a deadline, and
never while any database write is in progress. Its answer is recorded like the event
would have been; anything else holds the firing back and says why on the switch
(`held`), for /readyz and /metrics:

- `notice_waiting`: delivery has the notice and is still trying to send it;
- `notice_failed`: delivery stopped trying (our relay, our credentials, a refusal of what
  we sent): the notice is asked for again, which makes delivery try again;
- `notice_unknown`: delivery never had it (a dead-lettered or lost event, a record gone):
  it is asked for again, which makes delivery send it;
- `delivery_unavailable`: delivery did not answer.

Asking again backs off (1 minute, doubling, at most an hour).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.scheduler import census, tokens
from services.scheduler.storage import SchedulerRepository
from services.scheduler.switches import (
    AwaitNotice,
    BecomeOverdue,
    Fire,
    Remind,
    Resume,
    Settlement,
    Switch,
    Wait,
    fresh_cycle,
    next_action,
    seconds,
)
from services.scheduler.trusted_contacts import Mailer, TrustedContact, request_key
from shared.events import new_event

log = logging.getLogger(__name__)

PRODUCER = "scheduler"
# Delivery answers at most this many references per question.
MAX_REFERENCES = 500
# Statuses of a reminder that mean it no longer waits to leave.
SETTLED = ("sent", "bounced")
HELD_REASONS = ("notice_waiting", "notice_failed", "notice_unknown", "delivery_unavailable")
REASON_OF_STATUS = {"pending": "notice_waiting", "failed": "notice_failed",
                    "unknown": "notice_unknown"}
# Reasons for which the notice is asked for again.
NUDGED = ("notice_failed", "notice_unknown")
NUDGE_BASE = timedelta(minutes=1)
NUDGE_CAP = timedelta(hours=1)
HELD_SAMPLE = 20
# At most this many switches claimed in one tick (at least one batch): the next tick, due
# as soon as this one ends, goes on where it stopped.
TICK_LIMIT = 10_000


class DeliveryUnavailable(Exception):
    """Delivery did not answer the question at all (down, or too slow)."""


# references -> {reference: {"status", "settled_at", "last_error"}}; raises
# DeliveryUnavailable when delivery does not answer, anything else when it refuses.
ReminderStatus = Callable[[list[str]], dict[str, dict[str, Any]]]


def nudge_delay(nudges: int) -> timedelta:
    """How long after the `nudges`-th request for a notice to ask for it once more."""
    return min(NUDGE_CAP, NUDGE_BASE * 2 ** max(nudges - 1, 0))


def reminder_reference(switch_id: str, cycle: int, step: int) -> str:
    """How delivery names the mail of one reminder (kind "reminder")."""
    return f"{switch_id}:{cycle}:{step}"


def notice_reference(doc: dict[str, Any]) -> str:
    """The reference of the overdue notice of the switch's current cycle."""
    return reminder_reference(doc["_id"], doc["cycle"], len(doc["reminders_seconds"]))


@dataclass(frozen=True)
class LoopSettings:
    instance: str
    batch: int
    lease: timedelta
    recheck: timedelta
    link_key: bytes
    # The site's address, for the links in the trusted contacts' mails.
    public_url: str = "http://127.0.0.1:8000"


@dataclass
class TickReport:
    """What one tick did, for logs, heartbeats and tests."""

    claimed: int = 0
    reminded: int = 0
    overdue: int = 0
    fired: int = 0
    postponed: int = 0  # held back: the overdue notice has not left
    settled: int = 0  # delivery's answer recorded in place of a lost ReminderSettled
    nudged: int = 0  # the overdue notice asked for again
    resumed: int = 0
    lost: int = 0  # the owner's write landed first: nothing to do
    errors: int = 0
    order: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in
                ("claimed", "reminded", "overdue", "fired", "postponed", "settled", "nudged",
                 "resumed", "lost", "errors")}


class DueSwitches:
    """One tick of the loop: batch after batch while they come back full.

    `now` is the moment of the first batch; `clock`, when given, says the moment of each
    later one (a test's frozen clock, or none, keeps them all at `now`). `pause` is called
    between batches: the service hands the event loop a turn there.
    """

    def __init__(self, repo: SchedulerRepository, now: datetime, settings: LoopSettings,
                 reminder_status: ReminderStatus, *,
                 clock: Callable[[], datetime] | None = None,
                 pause: Callable[[], None] = lambda: None) -> None:
        self.repo = repo
        self.now = now
        self.settings = settings
        self.reminder_status = reminder_status
        self.clock = clock
        self.pause = pause

    def tick(self) -> TickReport:
        """Claim, decide and act, batch after batch, recording a heartbeat after each."""
        report = TickReport()
        limit = max(TICK_LIMIT, self.settings.batch)
        while True:
            claimed = self._batch(report, min(self.settings.batch, limit - report.claimed))
            self.repo.beat(self.settings.instance, self.now, **report.figures())
            if not self._more_to_claim(claimed, report.claimed, limit):
                break
            self.pause()
            if self.clock is not None:
                self.now = self.clock()
        if any((report.reminded, report.overdue, report.fired, report.settled, report.nudged,
                report.resumed, report.errors)):
            log.info("tick: %s", report.figures())
        return report

    def _more_to_claim(self, claimed: int, so_far: int, limit: int) -> bool:
        # A batch that claimed nothing means the rest (if any) went to other instances; one
        # that lost some races to them need not be full for switches to be left over.
        if claimed == 0 or so_far >= limit:
            return False
        if claimed == self.settings.batch:
            return True
        return self.repo.oldest_due(self.now) is not None

    def _batch(self, report: TickReport, size: int) -> int:
        """Claim up to `size` due switches and carry out what each needs; how many claimed."""
        claimed = self.repo.claim_due(self.now, self.settings.instance, size,
                                      self.settings.lease)
        report.claimed += len(claimed)
        # Catching up after downtime: the earliest deadlines first.
        claimed.sort(key=_deadline_order)
        decided = [(doc, next_action(Switch.from_doc(doc), self.now)) for doc in claimed]
        answers = self._notice_statuses([doc for doc, action in decided
                                         if isinstance(action, AwaitNotice)])
        # Each switch's write stands alone; grouped, the batch pays for one commit.
        with self.repo.switches.group_writes():
            for doc, action in decided:
                report.order.append(doc["_id"])
                try:
                    self._carry_out(doc, action, answers, report)
                except Exception:
                    # The claim stays until its lease ends; then this switch is due again.
                    log.exception("handling switch %s failed; it will be retried", doc["_id"])
                    report.errors += 1
        return len(claimed)

    def _carry_out(self, doc: dict[str, Any], action: Any, answers: dict[str, dict[str, Any]],
                   report: TickReport) -> None:
        if isinstance(action, Remind):
            written = self.repo.remind(doc, action.step, "upcoming", action.due_at,
                                       self._reminder(doc, action.step, "upcoming"), self.now)
            report.reminded += written is not None
        elif isinstance(action, BecomeOverdue):
            written = self.repo.become_overdue(
                doc, action.step, action.grace_ends_at,
                self._reminder(doc, action.step, "overdue", action.grace_ends_at), self.now,
                contact_requests=self._contact_requests(doc, action.grace_ends_at),
            )
            report.overdue += written is not None
        elif isinstance(action, Fire):
            written = self._fire(doc, report)
        elif isinstance(action, AwaitNotice):
            written = self._await_notice(doc, answers[doc["_id"]], report)
        elif isinstance(action, Resume):
            fields = fresh_cycle(Switch.from_doc(doc).schedule, self.now)
            written = self.repo.resume(doc, fields, self.now)
            report.resumed += written is not None
        else:
            assert isinstance(action, Wait)
            written = self.repo.release(doc, action.due_at)
        if written is None:
            report.lost += 1

    # The overdue notice that has not been seen to leave -------------------------------

    def _notice_statuses(self, docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Delivery's answer about each switch's overdue notice, by switch id."""
        by_reference = {notice_reference(doc): doc["_id"] for doc in docs}
        references = list(by_reference)
        answers: dict[str, dict[str, Any]] = {}
        for start in range(0, len(references), MAX_REFERENCES):
            chunk = references[start:start + MAX_REFERENCES]
            for reference, answer in self._ask(chunk).items():
                answers[by_reference[reference]] = answer
        return answers

    def _ask(self, references: list[str], *, split: bool = True) -> dict[str, dict[str, Any]]:
        try:
            answered = self.reminder_status(references)
            return {ref: answered.get(ref) or {"status": "unknown"} for ref in references}
        except DeliveryUnavailable as exc:
            log.warning("delivery cannot say whether overdue notices left (%s); firing waits",
                        exc)
            return {ref: {"status": "unavailable", "last_error": str(exc)} for ref in references}
        except Exception as exc:
            if split and len(references) > 1:
                # One reference delivery cannot take must not hold back the others.
                return {ref: answer for one in references
                        for ref, answer in self._ask([one], split=False).items()}
            log.error("delivery refused the question about %s: %s", references, exc)
            return {ref: {"status": "unavailable", "last_error": f"refused: {exc}"}
                    for ref in references}

    def _await_notice(self, doc: dict[str, Any], answer: dict[str, Any],
                      report: TickReport) -> dict | None:
        switch = Switch.from_doc(doc)
        step = switch.schedule.overdue_step
        if answer["status"] not in SETTLED:
            return self._hold(doc, answer, report)
        settlement = Settlement(answer["status"], _moment(answer["settled_at"]))
        report.settled += 1
        grace_ends_at = switch.grace_after(step, settlement)
        if grace_ends_at is None or grace_ends_at <= self.now:
            return self._fire(doc, report, notice=(step, settlement))
        # The notice left late: the owner gets the whole grace from that moment.
        return self.repo.settle_held(doc, step, settlement, grace_ends_at, self.now)

    def _fire(self, doc: dict[str, Any], report: TickReport,
              notice: tuple[int, Settlement] | None = None) -> dict | None:
        written = self.repo.fire(doc, self._missed(doc), self.now, notice)
        if written is not None:
            log.warning("switch %s fired (cycle %d)", doc["_id"], doc["cycle"])
            report.fired += 1
        return written

    def _hold(self, doc: dict[str, Any], answer: dict[str, Any],
              report: TickReport) -> dict | None:
        reason = REASON_OF_STATUS.get(answer["status"], "delivery_unavailable")
        before = doc.get("held") or {}
        held = {"reason": reason, "since": before.get("since", self.now),
                "nudges": before.get("nudges", 0), "nudged_at": before.get("nudged_at")}
        event = None
        if reason in NUDGED and self._nudge_due(held):
            event = self._reminder(doc, len(doc["reminders_seconds"]), "overdue",
                                   doc["grace_ends_at"])
            held.update(nudges=held["nudges"] + 1, nudged_at=self.now)
            report.nudged += 1
        if before.get("reason") != reason:
            # Delivery's last error can name the owner's address: ids and reasons only here.
            log.warning("switch %s: grace is over but its overdue notice has not left (%s); "
                        "firing waits", doc["_id"], reason)
        report.postponed += 1
        return self.repo.hold(doc, held, self.now + self.settings.recheck, event, self.now)

    def _nudge_due(self, held: dict[str, Any]) -> bool:
        if held["nudged_at"] is None:
            return True
        return self.now >= held["nudged_at"] + nudge_delay(held["nudges"])

    # Events ---------------------------------------------------------------------------

    def _reminder(self, doc: dict[str, Any], step: int, stage: str,
                  grace_ends_at: datetime | None = None) -> dict:
        deadline = doc["deadline"]
        ends = grace_ends_at or deadline + seconds(doc["grace_seconds"])
        token = tokens.issue(self.settings.link_key, doc["_id"], doc["cycle"],
                             ends + tokens.LINK_MARGIN)
        return new_event("ReminderDue", {
            "user_id": doc["user_id"], "switch_id": doc["_id"], "cycle": doc["cycle"],
            "step": step, "stage": stage, "deadline": deadline.isoformat(),
            "email": doc["email"], "checkin_token": token,
        }, producer=PRODUCER, now=self.now)

    def _contact_requests(self, doc: dict[str, Any], grace_ends_at: datetime) -> tuple[dict, ...]:
        """The mails asking the switch's accepted trusted contacts whether to hold it."""
        contacts = [TrustedContact.from_doc(c) for c in self.repo.contacts_of(doc["_id"])]
        mailer = Mailer(request_key(self.settings.link_key), self.settings.public_url, self.now)
        return tuple(mailer.requests(Switch.from_doc(doc), doc["email"], contacts, 0,
                                     grace_ends_at))

    def _missed(self, doc: dict[str, Any]) -> dict:
        return new_event("CheckInMissed", {
            "user_id": doc["user_id"], "switch_id": doc["_id"], "cycle": doc["cycle"],
            "deadline": doc["deadline"].isoformat(), "fired_at": self.now.isoformat(),
        }, producer=PRODUCER, now=self.now)


def _deadline_order(doc: dict[str, Any]) -> datetime:
    return doc.get("grace_ends_at") or doc.get("deadline") or doc["due_at"]


def _moment(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def liveness(repo: SchedulerRepository, now: datetime) -> dict[str, Any]:
    """The loop's heartbeat and lag, switches by state (the last census, and its age: empty
    until the first is complete), and those held back and why: for /readyz and /metrics.
    Nothing here reads more than the due and the held-back switches."""
    beat = repo.newest_heartbeat()
    oldest_due = repo.oldest_due(now)
    last_census = census.last(repo)
    return {
        "heartbeat_at": beat["at"].isoformat() if beat else None,
        "heartbeat_age_seconds": (now - beat["at"]).total_seconds() if beat else None,
        "instance": beat["_id"] if beat else None,
        "lag_seconds": (now - oldest_due).total_seconds() if oldest_due else 0.0,
        "due_switches": repo.due_count(now),
        "held_back_switches": repo.held_back_count(),
        "held_back_by_reason": {reason: repo.held_back_count(reason) for reason in HELD_REASONS},
        "held_back": [held_view(doc, now) for doc in repo.held_back(HELD_SAMPLE)],
        "switches": last_census.counts if last_census else {},
        "switches_census": last_census.view(now) if last_census else None,
    }


def held_view(doc: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A held-back switch as operators see it: ids and reasons, nobody's address."""
    held = doc["held"]
    return {"switch_id": doc["_id"], "cycle": doc["cycle"], "reason": held["reason"],
            "since": held["since"].isoformat(),
            "held_seconds": (now - held["since"]).total_seconds(),
            "grace_ended_at": doc["grace_ends_at"].isoformat(),
            "nudges": held.get("nudges", 0)}
