"""The switch: its states, its schedule, and all of its time arithmetic, in one place.

Pure code over a `Switch` snapshot and a moment: no storage, no broker, no clock. The loop
asks `next_action(switch, now)` what a due switch needs, and the repository carries the
answer out with one narrow conditional update.

States: `unarmed` (until the owner's address is verified) -> `armed` -> (deadline passes)
-> `overdue` -> (grace ends) -> `fired` -> (every message handed to delivery) -> `released`;
`paused` stops the clock until `paused_until`. Every check-in, settings change and end of a
pause starts a new `cycle`, and everything the loop does is keyed by the cycle it saw.

Reminders are numbered per cycle. With offsets `reminders_seconds` sorted farthest first,
upcoming reminder `k` is due at `deadline - reminders_seconds[k]`, and the overdue notice is
step `len(reminders_seconds)`, due at the deadline. `next_step` is the first step not yet
decided in this cycle, so a step is emitted at most once per cycle.

Our own outage is not the owner's silence. Delivery says when a reminder settled
(`settled`: sent, or bounced for good), and a switch fires only once the cycle's overdue
notice has settled: it is the last and most urgent reminder, so an earlier one still on
its way means nothing more once it has left. Grace counts from the moment the notice was
accepted by the mail server, if that was later than the deadline (delivery was down).

Trusted contacts (trusted_contacts.py) may move the end of grace while the switch is
overdue (`holds_used` counts their holds in this cycle), and with `confirmation:
required` an overdue switch past its grace fires only once a contact confirmed the owner
cannot check in, or `confirmation_wait_seconds` after the end of grace: that gate is part
of `next_action`, so firing stays the loop's one conditional update.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.clock import to_utc_ms
from shared.errors import InvalidInput

UNARMED = "unarmed"
ARMED = "armed"
OVERDUE = "overdue"
FIRED = "fired"
RELEASED = "released"
PAUSED = "paused"
STATES = (UNARMED, ARMED, OVERDUE, FIRED, RELEASED, PAUSED)

# A check-in (or a settings change, which is proof of life too) moves these...
LIVE = (ARMED, OVERDUE)
# ...and nothing undoes these.
FINAL = (FIRED, RELEASED)

DAY = 86_400
DEFAULT_INTERVAL_SECONDS = 30 * DAY
DEFAULT_GRACE_SECONDS = 7 * DAY
DEFAULT_REMINDERS_SECONDS = (3 * DAY, DAY, 3600)

MAX_INTERVAL_SECONDS = 366 * DAY
MAX_GRACE_SECONDS = 90 * DAY
MAX_REMINDERS = 10
# A pause is a promise that the owner will be back; a long one delays a release just as
# long, so it is bounded and must be renewed.
MAX_PAUSE_SECONDS = 90 * DAY

# Trusted contacts (trusted_contacts.py): how far a contact's hold moves the end of grace,
# whether the switch waits for a contact to confirm before firing, and for how long.
DEFAULT_HOLD_SECONDS = 7 * DAY
MAX_HOLD_SECONDS = 30 * DAY
NO_CONFIRMATION, CONFIRMATION_REQUIRED = "none", "required"
CONFIRMATIONS = (NO_CONFIRMATION, CONFIRMATION_REQUIRED)
DEFAULT_CONFIRMATION_WAIT_SECONDS = 14 * DAY
MAX_CONFIRMATION_WAIT_SECONDS = 90 * DAY
# Holds are bounded per cycle: a contact can delay a release, never cancel it.
MAX_HOLDS_PER_CYCLE = 3

SETTING_FIELDS = ("interval_seconds", "grace_seconds", "reminders_seconds", "paused_until",
                  "hold_seconds", "confirmation", "confirmation_wait_seconds")


# How a reminder settled (delivery's ReminderSettled).
SENT, BOUNCED = "sent", "bounced"


def seconds(n: int) -> timedelta:
    return timedelta(seconds=n)


# --- the schedule ------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """How often the owner must check in, the grace after that, and when to remind them."""

    interval_seconds: int
    grace_seconds: int
    reminders_seconds: tuple[int, ...]  # farthest from the deadline first

    @property
    def overdue_step(self) -> int:
        """The step number of the overdue notice (after every upcoming reminder)."""
        return len(self.reminders_seconds)

    def reminder_at(self, deadline: datetime, step: int) -> datetime:
        """When step `step` is due: an upcoming reminder before the deadline, or the deadline."""
        if step < self.overdue_step:
            return deadline - seconds(self.reminders_seconds[step])
        return deadline

    def as_fields(self) -> dict[str, Any]:
        return {
            "interval_seconds": self.interval_seconds,
            "grace_seconds": self.grace_seconds,
            "reminders_seconds": list(self.reminders_seconds),
        }


def default_schedule(min_interval: int) -> Schedule:
    """The schedule of a new switch: 30 days, 7 days of grace, reminders 3 days, 1 day, 1 hour
    before the deadline (never below the configured minimum)."""
    interval = max(DEFAULT_INTERVAL_SECONDS, min_interval)
    return Schedule(
        interval_seconds=interval,
        grace_seconds=max(DEFAULT_GRACE_SECONDS, min_interval),
        reminders_seconds=fitting_reminders(DEFAULT_REMINDERS_SECONDS, interval),
    )


def fitting_reminders(reminders: tuple[int, ...] | list[int], interval: int) -> tuple[int, ...]:
    """The offsets shorter than the interval, farthest first (a reminder must fall in the cycle)."""
    return tuple(sorted({r for r in reminders if 0 < r < interval}, reverse=True))


@dataclass(frozen=True)
class ContactRules:
    """What the switch's trusted contacts may do: hold the release by `hold_seconds`, and,
    when `confirmation` is required, confirm that the owner cannot check in; without that
    confirmation the switch fires only `confirmation_wait_seconds` after the end of grace."""

    hold_seconds: int = DEFAULT_HOLD_SECONDS
    confirmation: str = NO_CONFIRMATION
    confirmation_wait_seconds: int = DEFAULT_CONFIRMATION_WAIT_SECONDS

    @property
    def confirmation_required(self) -> bool:
        return self.confirmation == CONFIRMATION_REQUIRED

    def as_fields(self) -> dict[str, Any]:
        return {"hold_seconds": self.hold_seconds, "confirmation": self.confirmation,
                "confirmation_wait_seconds": self.confirmation_wait_seconds}

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> ContactRules:
        # Switches stored before these settings existed take the defaults.
        return cls(
            hold_seconds=doc.get("hold_seconds", DEFAULT_HOLD_SECONDS),
            confirmation=doc.get("confirmation", NO_CONFIRMATION),
            confirmation_wait_seconds=doc.get("confirmation_wait_seconds",
                                              DEFAULT_CONFIRMATION_WAIT_SECONDS),
        )


# --- the switch ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Settlement:
    """How and when one reminder of the cycle stopped waiting: sent or bounced."""

    outcome: str
    at: datetime

    def as_fields(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "at": self.at}


@dataclass(frozen=True)
class Switch:
    """What the rules need to know about a stored switch."""

    id: str
    user_id: str
    state: str
    cycle: int
    schedule: Schedule
    deadline: datetime | None = None
    grace_ends_at: datetime | None = None
    paused_until: datetime | None = None
    next_step: int = 0
    reminded_steps: tuple[int, ...] = ()
    settled: Mapping[int, Settlement] = field(default_factory=dict)
    contact_rules: ContactRules = ContactRules()
    holds_used: int = 0  # holds by trusted contacts in this cycle
    confirmed_at: datetime | None = None  # a trusted contact confirmed the owner cannot

    @property
    def awaits_confirmation_until(self) -> datetime | None:
        """While overdue with confirmation required and none given: the moment the switch
        may fire anyway (that long after the end of grace). None when nothing is awaited."""
        if (not self.contact_rules.confirmation_required or self.confirmed_at is not None
                or self.grace_ends_at is None):
            return None
        return self.grace_ends_at + seconds(self.contact_rules.confirmation_wait_seconds)

    @property
    def notice_settled(self) -> bool:
        """Whether the overdue notice of this cycle has left (or bounced for good)."""
        return self.schedule.overdue_step in self.settled

    def grace_after(self, step: int, settlement: Settlement) -> datetime | None:
        """The end of grace once reminder `step` settled so: later than now planned only
        when it is the overdue notice, accepted after the moment grace began."""
        if (self.state != OVERDUE or step != self.schedule.overdue_step
                or settlement.outcome != SENT or self.grace_ends_at is None):
            return None
        ends = settlement.at + seconds(self.schedule.grace_seconds)
        return ends if ends > self.grace_ends_at else None

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Switch:
        return cls(
            id=doc["_id"],
            user_id=doc["user_id"],
            state=doc["state"],
            cycle=doc["cycle"],
            schedule=Schedule(
                interval_seconds=doc["interval_seconds"],
                grace_seconds=doc["grace_seconds"],
                reminders_seconds=tuple(doc["reminders_seconds"]),
            ),
            deadline=doc.get("deadline"),
            grace_ends_at=doc.get("grace_ends_at"),
            paused_until=doc.get("paused_until"),
            next_step=doc.get("next_step", 0),
            reminded_steps=tuple(r["step"] for r in doc.get("reminders", [])),
            settled={int(step): Settlement(s["outcome"], s["at"])
                     for step, s in (doc.get("settled") or {}).items()},
            contact_rules=ContactRules.from_doc(doc),
            holds_used=doc.get("holds_used", 0),
            confirmed_at=(doc.get("confirmed") or {}).get("at"),
        )


def fresh_cycle(schedule: Schedule, now: datetime) -> dict[str, Any]:
    """The fields of a cycle that starts now: a deadline one interval away, nothing sent yet.

    Every reminder offset is shorter than the interval, so every step is still ahead.
    """
    deadline = now + seconds(schedule.interval_seconds)
    return {
        "deadline": deadline,
        "due_at": schedule.reminder_at(deadline, 0),
        "next_step": 0,
        "reminders": [],
        "settled": {},
    }


def is_paused_at(paused_until: datetime | None, now: datetime) -> bool:
    return paused_until is not None and paused_until > now


# --- what a due switch needs --------------------------------------------------------------


@dataclass(frozen=True)
class Remind:
    """Emit the upcoming reminder `step` (skipping older steps that no longer make sense)."""

    step: int
    due_at: datetime  # when the next step is due


@dataclass(frozen=True)
class BecomeOverdue:
    """The deadline passed: send the overdue notice and start the grace period."""

    step: int
    grace_ends_at: datetime


@dataclass(frozen=True)
class Fire:
    """Grace is over and the overdue notice has left (or bounced for good): fire."""


@dataclass(frozen=True)
class AwaitNotice:
    """Grace is over but the overdue notice has not been seen to leave: ask delivery."""


@dataclass(frozen=True)
class Resume:
    """The pause is over: arm again with a fresh cycle."""


@dataclass(frozen=True)
class Wait:
    """Nothing to do yet: look again at `due_at` (None: this switch needs no more looking at)."""

    due_at: datetime | None


Action = Remind | BecomeOverdue | Fire | AwaitNotice | Resume | Wait


def next_action(switch: Switch, now: datetime) -> Action:
    """What the loop must do for `switch` at `now`."""
    if switch.state == ARMED:
        return _armed(switch, now)
    if switch.state == OVERDUE:
        assert switch.grace_ends_at is not None
        if now < switch.grace_ends_at:
            return Wait(switch.grace_ends_at)
        # With confirmation required, grace alone is not enough: a trusted contact confirms,
        # or the wait after grace runs out (a switch must still fire if nobody answers).
        waits_until = switch.awaits_confirmation_until
        if waits_until is not None and now < waits_until:
            return Wait(waits_until)
        return Fire() if switch.notice_settled else AwaitNotice()
    if switch.state == PAUSED:
        return Wait(switch.paused_until) if is_paused_at(switch.paused_until, now) else Resume()
    return Wait(None)


def _armed(switch: Switch, now: datetime) -> Action:
    schedule, deadline = switch.schedule, switch.deadline
    assert deadline is not None
    if now >= deadline:
        # Grace counts from the moment the overdue notice goes out, never from a moment we
        # missed: after our own downtime the owner still gets the whole grace period.
        return BecomeOverdue(step=schedule.overdue_step,
                             grace_ends_at=max(deadline, now) + seconds(schedule.grace_seconds))
    passed = [
        step
        for step in range(switch.next_step, schedule.overdue_step)
        if schedule.reminder_at(deadline, step) <= now
    ]
    if not passed:
        return Wait(schedule.reminder_at(deadline, switch.next_step))
    # After downtime several reminders may be late: only the latest still makes sense.
    step = passed[-1]
    return Remind(step=step, due_at=schedule.reminder_at(deadline, step + 1))


# --- validating settings ------------------------------------------------------------------


def _refuse(field: str, message: str, **details: Any) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", code="invalid_setting",
                        details={"field": field, **details})


def validated_schedule(changes: Mapping[str, Any], current: Schedule, *,
                       min_interval: int) -> Schedule:
    """The schedule after applying `changes`; InvalidInput naming the field otherwise.

    When the interval changes and no reminders are given, reminders that no longer fit in
    the new interval are dropped, as for the defaults.
    """
    interval = changes.get("interval_seconds", current.interval_seconds)
    grace = changes.get("grace_seconds", current.grace_seconds)
    _check_duration("interval_seconds", interval, min_interval, MAX_INTERVAL_SECONDS)
    _check_duration("grace_seconds", grace, min_interval, MAX_GRACE_SECONDS)
    if "reminders_seconds" in changes:
        reminders = _checked_reminders(changes["reminders_seconds"], interval)
    else:
        reminders = fitting_reminders(current.reminders_seconds, interval)
    return Schedule(interval, grace, reminders)


def _check_duration(field: str, value: Any, minimum: int, maximum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _refuse(field, "must be a whole number of seconds")
    if value < minimum:
        raise _refuse(field, f"must be at least {minimum} seconds", minimum=minimum)
    if value > max(maximum, minimum):
        raise _refuse(field, f"must be at most {max(maximum, minimum)} seconds",
                      maximum=max(maximum, minimum))


def _checked_reminders(value: Any, interval: int) -> tuple[int, ...]:
    field = "reminders_seconds"
    if not isinstance(value, list | tuple):
        raise _refuse(field, "must be a list of offsets in seconds before the deadline")
    if len(value) > MAX_REMINDERS:
        raise _refuse(field, f"at most {MAX_REMINDERS} reminders", maximum=MAX_REMINDERS)
    for offset in value:
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 1:
            raise _refuse(field, "each offset must be a whole number of seconds, at least 1",
                          minimum=1)
        if offset >= interval:
            raise _refuse(field, f"each offset must be shorter than the interval ({interval} s)",
                          maximum=interval - 1)
    if len(set(value)) != len(value):
        raise _refuse(field, "an offset appears twice")
    return tuple(sorted(value, reverse=True))


def validated_contact_rules(changes: Mapping[str, Any], current: ContactRules, *,
                            min_interval: int) -> ContactRules:
    """The trusted contacts' rules after applying `changes`; InvalidInput naming the field."""
    hold = changes.get("hold_seconds", current.hold_seconds)
    confirmation = changes.get("confirmation", current.confirmation)
    wait = changes.get("confirmation_wait_seconds", current.confirmation_wait_seconds)
    _check_duration("hold_seconds", hold, min_interval, MAX_HOLD_SECONDS)
    if confirmation not in CONFIRMATIONS:
        raise _refuse("confirmation", f"must be one of {', '.join(CONFIRMATIONS)}",
                      choices=list(CONFIRMATIONS))
    _check_duration("confirmation_wait_seconds", wait, min_interval,
                    MAX_CONFIRMATION_WAIT_SECONDS)
    return ContactRules(hold, confirmation, wait)


def validated_pause(value: Any, now: datetime) -> datetime | None:
    """`paused_until` as given (None clears the pause); it must lie in the next 90 days."""
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise _refuse("paused_until", "must be a UTC date and time, or null to resume")
    if value <= now:
        raise _refuse("paused_until", "must be in the future (or null to resume now)")
    if value > now + seconds(MAX_PAUSE_SECONDS):
        raise _refuse("paused_until", f"a pause lasts at most {MAX_PAUSE_SECONDS // DAY} days",
                      maximum_seconds=MAX_PAUSE_SECONDS)
    return to_utc_ms(value)
