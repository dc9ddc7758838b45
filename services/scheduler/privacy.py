"""The scheduler's part in privacy: check-in history, export and erasure.

- **Check-in history.** Every check-in is announced as `CheckedIn` (the switch's own
  outbox); the scheduler consumes its own event into `checkins` (one document per event,
  so a redelivery adds nothing), kept `JICM_RETENTION_CHECKIN_DAYS`. The history is for
  the owner's export; nothing decides anything from it.
- **Export.** Every switch of the owner with its schedule, state, deadlines and the
  reminders of the current cycle (and its trusted contacts' holds and confirmation), the
  check-in history, the plan kept for limits, and the trusted contacts the owner named
  (with each one's decision and its receipt; never their invitation's token hash).
- **Erasure.** The owner's switches (whatever their state: an erasure the owner asked
  for means nothing is released), their history, their cached plan, the check-in and
  invitation rate-limit counters, and their trusted contacts: other people's names and
  addresses, kept only for this owner's switch, go with it. An erasure for `retention`
  never touches a switch that was ever armed: retention only erases accounts that were
  never verified, whose switches never armed; if one was, something is wrong, and the
  erasure is refused (dead-lettered, so an operator sees it) rather than silence a switch
  that may be someone's last words.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from services.scheduler.contacts import INVITATIONS_PER_USER
from services.scheduler.scheduler import CHECKINS_PER_USER
from services.scheduler.storage import SchedulerRepository
from services.scheduler.switches import UNARMED
from shared.events.schemas import CheckedIn
from shared.privacy import forget_throttle
from shared.storage import DuplicateKeyError

SWITCH_FIELDS = (
    "state", "cycle", "interval_seconds", "grace_seconds", "reminders_seconds", "paused_until",
    "deadline", "grace_ends_at", "last_checkin_at", "overdue_at", "fired_at", "released_at",
    "email", "email_verified", "default", "created_at", "updated_at",
    "hold_seconds", "confirmation", "confirmation_wait_seconds", "holds_used", "holds",
    "confirmed",
)
CONTACT_FIELDS = ("switch_id", "name", "email", "status", "invited_at", "decided_at",
                  "consent", "created_at", "updated_at")


class ArmedSwitchKept(Exception):
    """A retention erasure met a switch that was armed: nothing was erased."""


def record_check_in(repo: SchedulerRepository, event_id: str, checked_in: CheckedIn,
                    at: datetime, keep_for: timedelta) -> bool:
    """Keep one check-in in the owner's history (once per event). True if new."""
    try:
        repo.checkins.insert({
            "_id": event_id,
            "user_id": checked_in.user_id,
            "switch_id": checked_in.switch_id,
            "cycle": checked_in.cycle,
            "method": checked_in.method,
            "deadline": checked_in.deadline,
            "at": at,
            "expires_at": at + keep_for,
        })
    except DuplicateKeyError:
        return False
    return True


def export_user(repo: SchedulerRepository, user_id: str) -> dict[str, Any]:
    """The scheduler's part of an export."""
    switches = []
    for doc in repo.switches_of(user_id):
        switch = {"id": doc["_id"], **{key: doc.get(key) for key in SWITCH_FIELDS}}
        switch["reminders_this_cycle"] = [
            {"step": r["step"], "stage": r["stage"], "at": r["at"]}
            for r in doc.get("reminders", [])
        ]
        switches.append(switch)
    history = repo.checkins.find({"user_id": user_id}, sort=[("at", 1)])
    plan = repo.cached_plans.get(user_id)
    contacts = [{"id": doc["_id"], **{key: doc.get(key) for key in CONTACT_FIELDS}}
                for doc in repo.contacts_of_owner(user_id)]
    return {
        "trusted_contacts": contacts,
        "switches": switches,
        "check_ins": [{key: entry.get(key) for key in (
            "switch_id", "cycle", "method", "at", "deadline")} for entry in history],
        "plan": None if plan is None else {
            key: value for key, value in plan.items() if key != "_id"},
    }


def retention_refusal(repo: SchedulerRepository, user_id: str) -> str | None:
    """Why retention may not erase this user (a switch of theirs was armed), or None.

    Every service that erases for retention asks this first, so that all of them agree:
    none shreds a message that an armed switch may yet have to release.
    """
    armed = [doc["_id"] for doc in repo.switches_of(user_id) if doc["state"] != UNARMED]
    if not armed:
        return None
    return f"retention may not erase user {user_id}: switch(es) {', '.join(armed)} were armed"


def erase_user(repo: SchedulerRepository, user_id: str, reason: str) -> dict[str, int]:
    """Delete the owner's switches and everything the scheduler keeps about them."""
    refusal = retention_refusal(repo, user_id) if reason == "retention" else None
    if refusal:
        raise ArmedSwitchKept(refusal)
    return {
        "switches": repo.switches.delete_many({"user_id": user_id}),
        "check_ins": repo.checkins.delete_many({"user_id": user_id}),
        "plans": int(repo.cached_plans.delete_one({"_id": user_id})),
        "trusted_contacts": repo.contacts.delete_many({"user_id": user_id}),
        "throttle_counters": forget_throttle(repo.throttle.collection,
                                             (CHECKINS_PER_USER.scope,
                                              INVITATIONS_PER_USER.scope), user_id),
    }
