"""Reminders, as delivery keeps its side of the switch's rule "our own outage is not the
owner's silence".

- A `ReminderDue` becomes one reminder mail, named `<switch>:<cycle>:<step>` (the
  reference the scheduler uses too), so a redelivered or repeated event sends nothing new.
- When a reminder settles, delivery says so with `ReminderSettled`, in the same write that
  settles it (through the record's outbox): `sent` once the mail server accepted it,
  `bounced` when the owner's side refused the address for good. The scheduler records
  that on the switch, so the fact outlives delivery's own mail log (which retention
  reduces to counts).
- The scheduler asks for a reminder again (the same `ReminderDue`) while a switch waits
  for it. Asked again, delivery announces a settled reminder once more (the first
  announcement may have been lost), sends again one that failed on our side (relay down,
  login refused, message refused), and leaves one still on its way alone.
"""

from __future__ import annotations

from datetime import datetime

from services.delivery.records import MailRecord
from services.delivery.schemas import MailRequest
from shared.events import new_event
from shared.events.schemas import ReminderDue

KIND = "reminder"
PRODUCER = "delivery"


def reference(switch_id: str, cycle: int, step: int) -> str:
    """How one reminder mail is named (kind `reminder`)."""
    return f"{switch_id}:{cycle}:{step}"


def parts_of(reminder_reference: str) -> tuple[str, int, int]:
    """(switch_id, cycle, step) of a reminder's reference."""
    switch_id, cycle, step = reminder_reference.rsplit(":", 2)
    return switch_id, int(cycle), int(step)


def format_deadline(moment: datetime) -> str:
    """A deadline as a person reads it: `Tuesday 3 June 2030 at 14:00 UTC`."""
    return f"{moment:%A} {moment.day} {moment:%B %Y at %H:%M} UTC"


def reminder_request(event: ReminderDue, public_url: str) -> MailRequest:
    """The reminder mail a ReminderDue event asks for, with its one-click check-in link."""
    return MailRequest(
        kind=KIND,
        reference=reference(event.switch_id, event.cycle, event.step),
        to=event.email,
        user_id=event.user_id,
        context={
            "stage": event.stage,
            "link": f"{public_url}/c/{event.checkin_token}",
            "deadline": format_deadline(event.deadline),
        },
    )


def settled_event(record: MailRecord, outcome: str, settled_at: datetime) -> dict:
    """`ReminderSettled` for a reminder record that was just sent or bounced."""
    switch_id, cycle, step = parts_of(record.reference)
    return new_event("ReminderSettled", {
        "user_id": record.user_id, "switch_id": switch_id, "cycle": cycle, "step": step,
        "outcome": outcome, "settled_at": settled_at.isoformat(),
    }, producer=PRODUCER, now=settled_at)
