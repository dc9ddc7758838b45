"""The scheduler's collections, their indexes, and every write it makes, in plain sight.

Each state change is one conditional update (compare-and-set): the filter names the switch,
the state and the cycle the caller read, plus the claim token when the loop holds the
switch. Whoever's update lands first wins; the other sees `None` and re-reads. There is no
read-modify-write of a whole document anywhere, and no transaction to hold.

Switch documents:
  _id, user_id, email, default, state, cycle, interval_seconds, grace_seconds,
  reminders_seconds, paused_until, deadline, grace_ends_at, next_step,
  reminders [{step, stage, at}] (those emitted in this cycle), settled {step: {outcome, at}}
  (delivery's word that a reminder of this cycle left or bounced), due_at (indexed; absent
  when the switch needs no attention), claim {token, by, until} (while a loop instance
  holds it), held {reason, since, nudges, nudged_at} (while its firing waits for
  the overdue notice), last_checkin_at, overdue_at, fired_at, released_at, created_at,
  updated_at, and the outbox. With trusted contacts: hold_seconds, confirmation,
  confirmation_wait_seconds (settings), and for the current cycle holds_used, holds
  [{contact_id, at, grace_ends_at}] and confirmed {contact_id, at}.

Trusted contact documents (trusted_contacts.py), one per contact of a switch:
  _id, switch_id, user_id (the owner), slot (unique per switch: the plan's limit holds
  against racing requests), name, email, status, invited_at, decided_at, invitation
  {expires_at, used_at}, invitation_hash (the SHA-256 of the invitation's token,
  unique), consent (the decision's receipt),
  created_at, updated_at, and the outbox (the invitation mail).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from services.scheduler.switches import (
    ARMED,
    FIRED,
    OVERDUE,
    PAUSED,
    RELEASED,
    STATES,
    Settlement,
    Switch,
)
from shared.entitlements import ENTITLEMENTS, ENTITLEMENTS_INDEXES, EntitlementsCache
from shared.events.outbox import new_document_with_events, strip_outbox, with_event
from shared.storage import Database, DuplicateKeyError, Index
from shared.throttle import THROTTLE_INDEXES, Throttle

SWITCHES = "switches"
HEARTBEATS = "heartbeats"
THROTTLE = "throttle"
CHECKINS = "checkins"
CENSUS = "census"
CENSUS_ID = "switches"
TRUSTED_CONTACTS = "trusted_contacts"

HEARTBEAT_TTL = timedelta(days=1)
# "Held back at all", as a range on the indexed `held.since` (both stores answer a range
# from the index; `$exists` would be a scan on SQLite).
HELD_AT_ALL = {"$gte": datetime(2000, 1, 1, tzinfo=UTC)}

INDEXES: dict[str, list[Index]] = {
    SWITCHES: [
        Index.on("user_id"),
        # The loop's only query: "due_at <= now, oldest first". Cost per tick follows the
        # number of due switches, never the total.
        Index.on("due_at"),
        # By state, then id: the census counts one state in one range of ids at a time,
        # from the index alone.
        Index.on("state", "_id"),
        # Switches whose firing is held back, by why and since when (/readyz, /metrics).
        Index.on("held.reason"),
        Index.on("held.since"),
    ],
    **ENTITLEMENTS_INDEXES,
    HEARTBEATS: [Index.on("at"), Index.on("expires_at", expire_after_seconds=0)],
    THROTTLE: THROTTLE_INDEXES,
    # The owner's check-in history, for their export (privacy.py).
    CHECKINS: [Index.on("user_id", "at"), Index.on("expires_at", expire_after_seconds=0)],
    # The last complete census of switches by state (census.py): one document.
    CENSUS: [],
    TRUSTED_CONTACTS: [
        Index.on("switch_id", "slot", unique=True),
        Index.on("user_id"),
        Index.on("invitation_hash", unique=True),
    ],
}


class SchedulerRepository:
    """Switches, cached entitlements and loop heartbeats, over the scheduler's own database."""

    def __init__(self, db: Database) -> None:
        self.switches = db.collection(SWITCHES)
        # The scheduler's copy of each user's plan (billing's PlanChanged).
        self.entitlements = EntitlementsCache(db.collection(ENTITLEMENTS))
        self.heartbeats = db.collection(HEARTBEATS)
        self.throttle = Throttle(db.collection(THROTTLE))
        self.checkins = db.collection(CHECKINS)
        self.censuses = db.collection(CENSUS)
        self.contacts = db.collection(TRUSTED_CONTACTS)
        # The plan documents as stored: privacy exports and erases them whole.
        self.cached_plans = db.collection(ENTITLEMENTS)

    # Reading --------------------------------------------------------------------------

    def switch(self, switch_id: str) -> dict[str, Any] | None:
        return strip_outbox(self.switches.get(switch_id))

    def switches_of(self, user_id: str) -> list[dict[str, Any]]:
        found = self.switches.find({"user_id": user_id})
        return [strip_outbox(doc) for doc in sorted(found, key=lambda d: d["created_at"])]

    # Creating -------------------------------------------------------------------------

    def add_switch(self, doc: dict[str, Any], *events: dict, now: datetime) -> bool:
        """Insert a new switch; False if its (deterministic) id is already taken."""
        try:
            self.switches.insert(new_document_with_events(doc, *events, now=now))
        except DuplicateKeyError:
            return False
        return True

    # The owner's writes: {_id, state, cycle} must still be what the caller read ----------

    def start_cycle(self, switch: Switch, fields: dict[str, Any], *, now: datetime,
                    event: dict | None = None, unset: tuple[str, ...] = ()) -> dict | None:
        """Begin the next cycle (check-in, settings change, arming, end of a pause by the owner).

        Fences out the loop: a claim on the old cycle can no longer write anything.
        """
        update: dict[str, Any] = {
            "$set": {**fields, "updated_at": now},
            "$inc": {"cycle": 1},
            "$unset": {"claim": "", "held": "", **{name: "" for name in unset}},
        }
        if event is not None:
            update = with_event(update, event, now=now)
        return self.switches.update_one(
            {"_id": switch.id, "state": switch.state, "cycle": switch.cycle}, update
        )

    def set_email(self, user_id: str, email: str, now: datetime) -> int:
        """The owner verified `email`: reminders of every switch go there from now on."""
        return self.switches.update_many(
            {"user_id": user_id},
            {"$set": {"email": email, "email_verified": True}},
        )

    def record_settlement(self, switch: Switch, step: int, settlement: Settlement,
                          grace_ends_at: datetime | None, now: datetime) -> dict | None:
        """Note that reminder `step` of the switch's cycle settled, once per step; with a
        later `grace_ends_at` when the overdue notice left late (grace starts again)."""
        condition: dict[str, Any] = {"_id": switch.id, "state": switch.state,
                                     "cycle": switch.cycle,
                                     f"settled.{step}": {"$exists": False}}
        fields: dict[str, Any] = {f"settled.{step}": settlement.as_fields(), "updated_at": now}
        if grace_ends_at is not None:
            condition["grace_ends_at"] = switch.grace_ends_at
            fields["grace_ends_at"] = grace_ends_at
        update: dict[str, Any] = {"$set": fields}
        if step == switch.schedule.overdue_step:
            update["$unset"] = {"held": ""}
        return self.switches.update_one(condition, update)

    def mark_released(self, switch_id: str, cycle: int, now: datetime) -> dict | None:
        """fired -> released for this cycle (every message was handed to delivery)."""
        return self.switches.update_one(
            {"_id": switch_id, "state": FIRED, "cycle": cycle},
            {"$set": {"state": RELEASED, "released_at": now, "updated_at": now}},
        )

    # Trusted contacts' writes: {_id, state: overdue, cycle, holds_used} must still match --

    def hold_release(self, switch: Switch, contact_id: str, grace_ends_at: datetime,
                     events: list[dict], now: datetime) -> dict | None:
        """A trusted contact holds the release: the end of grace moves to `grace_ends_at`.

        Named by (id, overdue, cycle, holds used), like a check-in: if the loop fired this
        cycle first, this misses; if this lands first, it takes the loop's claim away, so
        a firing decided on the old end of grace misses instead.
        """
        update: dict[str, Any] = {
            "$set": {"grace_ends_at": grace_ends_at, "due_at": grace_ends_at,
                     "updated_at": now},
            "$inc": {"holds_used": 1},
            "$push": {"holds": {"contact_id": contact_id, "at": now,
                                "grace_ends_at": grace_ends_at}},
            # The later word wins: a contact says the owner is all right.
            "$unset": {"claim": "", "held": "", "confirmed": ""},
        }
        for event in events:
            update = with_event(update, event, now=now)
        return self.switches.update_one(self._answerable(switch), update)

    def confirm_absence(self, switch: Switch, contact_id: str, due_at: datetime,
                        now: datetime) -> dict | None:
        """A trusted contact confirms the owner cannot check in: the switch may fire at the
        end of grace. Takes the loop's claim away, so it decides again, at `due_at`."""
        return self.switches.update_one(
            {**self._answerable(switch), "confirmed": {"$exists": False}},
            {"$set": {"confirmed": {"contact_id": contact_id, "at": now}, "due_at": due_at,
                      "updated_at": now},
             "$unset": {"claim": ""}},
        )

    def _answerable(self, switch: Switch) -> dict[str, Any]:
        return {"_id": switch.id, "state": OVERDUE, "cycle": switch.cycle,
                "holds_used": switch.holds_used}

    # Trusted contacts -----------------------------------------------------------------

    def contact(self, contact_id: str) -> dict[str, Any] | None:
        return strip_outbox(self.contacts.get(contact_id))

    def contacts_of(self, switch_id: str) -> list[dict[str, Any]]:
        found = self.contacts.find({"switch_id": switch_id})
        return [strip_outbox(doc) for doc in sorted(found, key=lambda d: d["created_at"])]

    def contacts_of_owner(self, user_id: str) -> list[dict[str, Any]]:
        found = self.contacts.find({"user_id": user_id})
        return [strip_outbox(doc) for doc in sorted(found, key=lambda d: d["created_at"])]

    def invited_by_token(self, token_hash: str) -> dict[str, Any] | None:
        return strip_outbox(self.contacts.find_one({"invitation_hash": token_hash}))

    def add_contact(self, doc: dict[str, Any], event: dict, now: datetime) -> bool:
        """Insert a contact with its invitation mail; False if its slot is already taken."""
        try:
            self.contacts.insert(new_document_with_events(doc, event, now=now))
        except DuplicateKeyError:
            return False
        return True

    def decide_invitation(self, contact_id: str, token_hash: str, status: str,
                          consent: dict[str, Any], now: datetime) -> dict | None:
        """invited -> accepted or declined, once: the invitation is used up."""
        return self.contacts.update_one(
            {"_id": contact_id, "status": "invited", "invitation_hash": token_hash},
            # The hash stays, so that the used link can say it was used.
            {"$set": {"status": status, "decided_at": now, "consent": consent,
                      "invitation.used_at": now, "updated_at": now}},
        )

    def remove_contact(self, contact_id: str) -> bool:
        return self.contacts.delete_one({"_id": contact_id})

    # The loop's writes ----------------------------------------------------------------

    def claim_due(self, now: datetime, instance: str, limit: int,
                  lease: timedelta) -> list[dict[str, Any]]:
        """Claim up to `limit` due switches, oldest due first, for `lease`.

        The claim is a compare-and-set on the `due_at` that was read: of several instances
        reading the same switch, one moves its `due_at` to the end of the lease and the
        others miss. If the holder dies, the switch is simply due again when the lease ends.
        """
        claimed = []
        due = self.switches.find({"due_at": {"$lte": now}}, sort=[("due_at", 1)], limit=limit)
        until = now + lease
        with self.switches.group_writes():
            for doc in due:
                doc = self.switches.update_one(
                    {"_id": doc["_id"], "due_at": doc["due_at"]},
                    {"$set": {"due_at": until, "claim": {"token": uuid.uuid4().hex,
                                                         "by": instance, "until": until}}},
                )
                if doc is not None:
                    claimed.append(strip_outbox(doc))
        return claimed

    def _held(self, claimed: dict[str, Any], state: str) -> dict[str, Any]:
        return {"_id": claimed["_id"], "state": state, "cycle": claimed["cycle"],
                "claim.token": claimed["claim"]["token"]}

    def remind(self, claimed: dict, step: int, stage: str, due_at: datetime,
               event: dict, now: datetime) -> dict | None:
        """Emit upcoming reminder `step`; steps before it are skipped for this cycle."""
        update = {
            "$set": {"next_step": step + 1, "due_at": due_at, "updated_at": now},
            "$push": {"reminders": {"step": step, "stage": stage, "at": now}},
            "$unset": {"claim": ""},
        }
        return self.switches.update_one(self._held(claimed, ARMED),
                                        with_event(update, event, now=now))

    def become_overdue(self, claimed: dict, step: int, grace_ends_at: datetime,
                       event: dict, now: datetime,
                       contact_requests: tuple[dict, ...] = ()) -> dict | None:
        """armed -> overdue, with the overdue notice in the same write (and the mails that
        ask the accepted trusted contacts, `contact_requests`); the cycle's holds start
        from none."""
        update: dict[str, Any] = {
            "$set": {"state": OVERDUE, "overdue_at": now, "grace_ends_at": grace_ends_at,
                     "next_step": step + 1, "due_at": grace_ends_at, "updated_at": now,
                     "holds_used": 0, "holds": []},
            "$push": {"reminders": {"step": step, "stage": "overdue", "at": now}},
            "$unset": {"claim": "", "confirmed": ""},
        }
        update = with_event(update, event, now=now)
        for request in contact_requests:
            update = with_event(update, request, now=now)
        return self.switches.update_one(self._held(claimed, ARMED), update)

    def fire(self, claimed: dict, event: dict, now: datetime,
             notice: tuple[int, Settlement] | None = None) -> dict | None:
        """overdue -> fired, with CheckInMissed in the same write (and, `notice`, delivery's
        answer about the overdue notice, if the switch had not been told of it).

        This and the check-in's `start_cycle` name the same (id, state, cycle): exactly one
        of them can land.
        """
        fields: dict[str, Any] = {"state": FIRED, "fired_at": now, "updated_at": now}
        if notice is not None:
            fields[f"settled.{notice[0]}"] = notice[1].as_fields()
        update = {"$set": fields, "$unset": {"claim": "", "due_at": "", "held": ""}}
        return self.switches.update_one(self._held(claimed, OVERDUE),
                                        with_event(update, event, now=now))

    def settle_held(self, claimed: dict, step: int, settlement: Settlement,
                    grace_ends_at: datetime | None, now: datetime) -> dict | None:
        """What delivery answered for an overdue notice the switch was not told of: note
        it, holding the claim, and look again when the (possibly new) grace ends."""
        fields: dict[str, Any] = {f"settled.{step}": settlement.as_fields(), "updated_at": now,
                                  "due_at": grace_ends_at or now}
        if grace_ends_at is not None:
            fields["grace_ends_at"] = grace_ends_at
        return self.switches.update_one(
            {**self._held(claimed, OVERDUE), f"settled.{step}": {"$exists": False}},
            {"$set": fields, "$unset": {"claim": "", "held": ""}},
        )

    def hold(self, claimed: dict, held: dict[str, Any], due_at: datetime,
             event: dict | None, now: datetime) -> dict | None:
        """Grace is over but the overdue notice has not left: say why, look again at
        `due_at`, and (`event`) ask delivery for the notice again."""
        update: dict[str, Any] = {"$set": {"held": held, "due_at": due_at},
                                  "$unset": {"claim": ""}}
        if event is not None:
            update = with_event(update, event, now=now)
        return self.switches.update_one(self._held(claimed, OVERDUE), update)

    def resume(self, claimed: dict, fields: dict[str, Any], now: datetime) -> dict | None:
        """paused -> armed when the pause has run out, in a new cycle."""
        update = {
            "$set": {**fields, "state": ARMED, "paused_until": None, "updated_at": now},
            "$inc": {"cycle": 1},
            "$unset": {"claim": "", "grace_ends_at": ""},
        }
        return self.switches.update_one(self._held(claimed, PAUSED), update)

    def release(self, claimed: dict, due_at: datetime | None) -> dict | None:
        """Give the claim back, to be looked at again at `due_at` (None: not any more)."""
        if due_at is None:
            update: dict[str, Any] = {"$unset": {"claim": "", "due_at": "", "held": ""}}
        else:
            update = {"$set": {"due_at": due_at}, "$unset": {"claim": "", "held": ""}}
        return self.switches.update_one(
            {"_id": claimed["_id"], "claim.token": claimed["claim"]["token"]}, update
        )

    # Liveness -------------------------------------------------------------------------

    def beat(self, instance: str, now: datetime, **figures: Any) -> None:
        """Record that `instance` finished a tick at `now`."""
        self.heartbeats.update_one(
            {"_id": instance},
            {"$set": {"at": now, "expires_at": now + HEARTBEAT_TTL, **figures}},
            upsert=True,
        )

    def newest_heartbeat(self) -> dict[str, Any] | None:
        return self.heartbeats.find_one({"at": {"$exists": True}}, sort=[("at", -1)])

    def oldest_due(self, now: datetime) -> datetime | None:
        doc = self.switches.find_one({"due_at": {"$lte": now}}, sort=[("due_at", 1)])
        return doc["due_at"] if doc else None

    def due_count(self, now: datetime) -> int:
        return self.switches.count({"due_at": {"$lte": now}})

    def held_back_count(self, reason: str | None = None) -> int:
        """Switches past their grace whose firing waits for the overdue notice (by why)."""
        if reason is None:
            return self.switches.count({"held.since": HELD_AT_ALL})
        return self.switches.count({"held.reason": reason})

    def held_back(self, limit: int) -> list[dict[str, Any]]:
        """The switches held back longest, first."""
        return self.switches.find({"held.since": HELD_AT_ALL}, sort=[("held.since", 1)],
                                  limit=limit)

    def count_by_state(self) -> dict[str, int]:
        """How many switches are in each state, counted now, all at once (for tests and
        one-off checks; /readyz and /metrics report the census, counted in slices)."""
        return {state: self.switches.count({"state": state}) for state in STATES}

    # The census (census.py) -----------------------------------------------------------

    def count_slice(self, state: str, low: str | None, high: str | None) -> int:
        """Switches in `state` whose id is at least `low` and below `high` (None: open)."""
        ids: dict[str, str] = {}
        if low is not None:
            ids["$gte"] = low
        if high is not None:
            ids["$lt"] = high
        return self.switches.count({"state": state, **({"_id": ids} if ids else {})})

    def record_census(self, counts: dict[str, int], started_at: datetime,
                      counted_at: datetime, by: str) -> bool:
        """Store a complete census unless one started later is already stored."""
        try:
            written = self.censuses.update_one(
                {"_id": CENSUS_ID, "started_at": {"$lt": started_at}},
                {"$set": {"counts": counts, "started_at": started_at,
                          "counted_at": counted_at, "by": by}},
                upsert=True,
            )
        except DuplicateKeyError:
            return False  # a later census is stored: it stays
        return written is not None

    def census(self) -> dict[str, Any] | None:
        """The last complete census, as stored."""
        return self.censuses.get(CENSUS_ID)

