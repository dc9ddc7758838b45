"""The owner's side of the switch: switches created and armed, settings, check-ins, the
one-click link, and the vault's "released" hook.

Plain code over a repository and a moment; the nameko service only wires these together,
and unit tests drive this module directly. Every write is a conditional update on the
(id, state, cycle) just read; when it misses, something else happened in between (the loop
sent a reminder, the switch became overdue, another check-in landed), so the use case reads
again and decides again, a few times at most.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from services.scheduler import tokens
from services.scheduler.entitlements import switch_limit_reached, switch_slots
from services.scheduler.schemas import (
    CheckInResult,
    ClientContext,
    LinkCheckIn,
    ReleasedSwitch,
    SkippedSwitch,
    SwitchList,
    SwitchSettings,
    SwitchView,
)
from services.scheduler.storage import SchedulerRepository
from services.scheduler.switches import (
    ARMED,
    FINAL,
    LIVE,
    OVERDUE,
    PAUSED,
    RELEASED,
    UNARMED,
    ContactRules,
    Settlement,
    Switch,
    default_schedule,
    fresh_cycle,
    is_paused_at,
    validated_contact_rules,
    validated_pause,
    validated_schedule,
)
from shared.entitlements import limits_for
from shared.errors import Conflict, Gone, NotFound
from shared.events import new_event
from shared.events.schemas import PlanChanged, ReminderSettled
from shared.throttle import Limit, hashed_key

log = logging.getLogger(__name__)

PRODUCER = "scheduler"

# Switch ids are derived from the owner and a slot number: a redelivered UserRegistered
# cannot create a second default switch, and two racing creations cannot exceed a plan.
SWITCH_NAMESPACE = uuid.UUID("6f1c3f0e-5d0c-4b8e-9a57-1d2f3c4b5a69")
DEFAULT_SLOT = 0

# Generous: a check-in is how a user stays alive. These stop floods, not people.
CHECKINS_PER_USER = Limit("checkin-user", count=120, window_seconds=3600)
CHECKINS_PER_CLIENT = Limit("checkin-client", count=600, window_seconds=3600)
LINK_USES_PER_CLIENT = Limit("checkin-link-client", count=120, window_seconds=3600)

CAS_ATTEMPTS = 5


def switch_id_for(user_id: str, slot: int) -> str:
    """The id of the owner's `slot`-th switch (slot 0 is the default switch)."""
    return str(uuid.uuid5(SWITCH_NAMESPACE, f"{user_id}:switch:{slot}"))


def view(doc: dict[str, Any]) -> SwitchView:
    """A stored switch as its owner sees it."""
    return SwitchView(
        id=doc["_id"],
        state=doc["state"],
        cycle=doc["cycle"],
        interval_seconds=doc["interval_seconds"],
        grace_seconds=doc["grace_seconds"],
        reminders_seconds=doc["reminders_seconds"],
        paused_until=doc.get("paused_until"),
        deadline=doc.get("deadline"),
        grace_ends_at=doc.get("grace_ends_at"),
        last_checkin_at=doc.get("last_checkin_at"),
        fired_at=doc.get("fired_at"),
        created_at=doc["created_at"],
        **ContactRules.from_doc(doc).as_fields(),
        holds_used=doc.get("holds_used", 0) if doc["state"] == OVERDUE else 0,
        confirmed_at=(doc.get("confirmed") or {}).get("at"),
    )


def fired_conflict(doc: dict[str, Any]) -> Conflict:
    fired_at = doc.get("fired_at")
    return Conflict(
        "this switch has already fired: its messages are being released, and a check-in "
        "cannot undo that",
        code="switch_fired",
        details={"switch_id": doc["_id"], "state": doc["state"],
                 "fired_at": fired_at.isoformat() if fired_at else None},
    )


def unverified_conflict(switch_id: str | None = None) -> Conflict:
    return Conflict(
        "verify your email address first: a switch is armed once its owner's address is "
        "verified, so that every reminder reaches you",
        code="email_not_verified",
        details={"switch_id": switch_id, "state": UNARMED},
    )


def paused_conflict(doc: dict[str, Any]) -> Conflict:
    until = doc.get("paused_until")
    return Conflict(
        f"this switch is paused until {until.isoformat() if until else 'further notice'}; "
        "resume it (paused_until: null) to check in",
        code="switch_paused",
        details={"switch_id": doc["_id"], "state": PAUSED,
                 "paused_until": until.isoformat() if until else None},
    )


class Scheduler:
    """Use cases of the scheduler service for owners, links and other services."""

    def __init__(
        self,
        repo: SchedulerRepository,
        now: datetime,
        *,
        min_interval: int,
        link_key: bytes,
        request_id: str | None = None,
        billing: Any = None,
    ) -> None:
        self.repo = repo
        self.now = now
        self.min_interval = min_interval
        self.link_key = link_key
        self.request_id = request_id
        # Asked for the plan when the scheduler's own copy says "free" or nothing.
        self.billing = billing

    def _event(self, event_type: str, data: dict[str, Any]) -> dict:
        return new_event(event_type, data, producer=PRODUCER, now=self.now,
                         request_id=self.request_id)

    # Accounts' events -------------------------------------------------------------------

    def on_user_registered(self, user_id: str, email: str) -> None:
        """Create the new account's default switch, unarmed (idempotent)."""
        created = self.repo.add_switch(self._new_switch(user_id, DEFAULT_SLOT, email), now=self.now)
        if created:
            log.info("default switch created for user %s", user_id)

    def on_email_verified(self, user_id: str, email: str) -> None:
        """The owner proved the address: send reminders there and arm every unarmed switch.

        Idempotent, and correct in either order with UserRegistered.
        """
        self.repo.set_email(user_id, email, self.now)
        self.repo.add_switch(self._new_switch(user_id, DEFAULT_SLOT, email), now=self.now)
        for doc in self.repo.switches_of(user_id):
            if doc["state"] == UNARMED:
                self._retrying(doc["_id"], self._arm)

    def _new_switch(self, user_id: str, slot: int, email: str,
                    settings: dict[str, Any] | None = None) -> dict[str, Any]:
        schedule = validated_schedule(settings or {}, default_schedule(self.min_interval),
                                      min_interval=self.min_interval)
        paused_until = validated_pause((settings or {}).get("paused_until"), self.now)
        rules = validated_contact_rules(settings or {}, ContactRules(),
                                        min_interval=self.min_interval)
        return {
            "_id": switch_id_for(user_id, slot),
            "user_id": user_id,
            "email": email,
            "email_verified": False,
            "default": slot == DEFAULT_SLOT,
            "state": UNARMED,
            "cycle": 0,
            **schedule.as_fields(),
            **rules.as_fields(),
            "paused_until": paused_until,
            "deadline": None,
            "next_step": 0,
            "reminders": [],
            "created_at": self.now,
            "updated_at": self.now,
        }

    def _arm(self, doc: dict[str, Any]) -> dict | None:
        if doc["state"] != UNARMED:
            return doc  # armed meanwhile (a redelivered EmailVerified): nothing to do
        switch = Switch.from_doc(doc)
        return self.repo.start_cycle(
            switch, {"email_verified": True, **self._running_fields(switch, doc["paused_until"])},
            now=self.now,
        )

    def _running_fields(self, switch: Switch, paused_until: datetime | None) -> dict[str, Any]:
        """A running switch's next cycle: paused until a future `paused_until`, else armed."""
        if is_paused_at(paused_until, self.now):
            return {"state": PAUSED, "paused_until": paused_until, "deadline": None,
                    "due_at": paused_until, "next_step": 0, "reminders": []}
        return {"state": ARMED, "paused_until": None, **fresh_cycle(switch.schedule, self.now)}

    # Reading --------------------------------------------------------------------------

    def list(self, user_id: str) -> SwitchList:
        return SwitchList(switches=[view(doc) for doc in self.repo.switches_of(user_id)])

    def get(self, user_id: str, switch_id: str) -> SwitchView:
        return view(self._owned(user_id, switch_id))

    def owned(self, user_id: str, switch_id: str) -> dict[str, Any]:
        """The owner's switch as stored; NotFound for another user's or a missing one."""
        return self._owned(user_id, switch_id)

    def _owned(self, user_id: str, switch_id: str) -> dict[str, Any]:
        doc = self.repo.switch(switch_id)
        # Another user's switch is indistinguishable from one that does not exist.
        if doc is None or doc["user_id"] != user_id:
            raise NotFound("there is no such switch", code="switch_not_found",
                           details={"switch_id": switch_id})
        return doc

    # Creating and configuring ------------------------------------------------------------

    def create(self, user_id: str, settings: SwitchSettings) -> SwitchView:
        """Another switch, within the plan's limit; armed at once if the address is verified."""
        changes = settings.changes()
        # Bad settings are a 422 whatever the plan.
        self._new_switch(user_id, DEFAULT_SLOT, "", changes)
        existing = self.repo.switches_of(user_id)
        limits = limits_for(user_id, self.repo.entitlements, self.billing)
        verified = any(doc.get("email_verified") for doc in existing)
        email = existing[0]["email"] if existing else ""
        # Slots make the limit hold against racing requests: a taken slot's id is a
        # duplicate key, and the next slot is tried instead.
        for slot in switch_slots(limits)[len(existing):]:
            doc = self._new_switch(user_id, slot, email, changes)
            if verified:
                switch = Switch.from_doc(doc)
                doc.update(email_verified=True, cycle=1,
                           **self._running_fields(switch, doc["paused_until"]))
            if self.repo.add_switch(doc, now=self.now):
                return view(doc)
        raise switch_limit_reached(limits)

    def update(self, user_id: str, switch_id: str, settings: SwitchSettings) -> SwitchView:
        """Change settings. For a running switch this is proof of life: a new cycle begins."""
        changes = settings.changes()
        self._owned(user_id, switch_id)
        return view(self._retrying(switch_id, lambda doc: self._reconfigure(doc, changes)))

    def _reconfigure(self, doc: dict[str, Any], changes: dict[str, Any]) -> dict | None:
        if doc["state"] in FINAL:
            raise Conflict("this switch has fired; its settings can no longer change",
                           code="switch_fired", details={"state": doc["state"]})
        switch = Switch.from_doc(doc)
        schedule = validated_schedule(changes, switch.schedule, min_interval=self.min_interval)
        paused_until = (validated_pause(changes["paused_until"], self.now)
                        if "paused_until" in changes else doc.get("paused_until"))
        rules = validated_contact_rules(changes, switch.contact_rules,
                                        min_interval=self.min_interval)
        fields: dict[str, Any] = {**schedule.as_fields(), **rules.as_fields(),
                                  "paused_until": paused_until}
        if switch.state == UNARMED:
            return self.repo.start_cycle(switch, fields, now=self.now)
        running = Switch.from_doc({**doc, **schedule.as_fields()})
        fields.update(self._running_fields(running, paused_until))
        event = None
        if fields["state"] == ARMED:
            event = self._checked_in_event(switch, fields["deadline"], "api")
        return self.repo.start_cycle(switch, fields, now=self.now, event=event,
                                     unset=("grace_ends_at", "overdue_at"))

    # Checking in ------------------------------------------------------------------------

    def check_in(self, user_id: str, switch_id: str | None, client: ClientContext) -> CheckInResult:
        """Check in one switch, or every switch of the owner."""
        self.repo.throttle.consume(CHECKINS_PER_USER, user_id, self.now)
        if client.ip:
            self.repo.throttle.consume(CHECKINS_PER_CLIENT, hashed_key(client.ip), self.now)
        if switch_id is not None:
            doc = self._owned(user_id, switch_id)
            moved = self._retrying(switch_id, self._check_in_refusing, read=doc)
            return CheckInResult(switches=[view(moved)])
        return self._check_in_all(user_id)

    def _check_in_all(self, user_id: str) -> CheckInResult:
        moved, skipped, refusals = [], [], []
        for doc in self.repo.switches_of(user_id):
            try:
                moved.append(view(self._retrying(doc["_id"], self._check_in_refusing,
                                                 read=doc)))
            except Conflict as refusal:
                refusals.append(refusal)
                # A busy switch's refusal names no state: it is the one just read.
                state = refusal.details.get("state", doc["state"])
                skipped.append(SkippedSwitch(id=doc["_id"], state=state, reason=refusal.code))
        if moved or (skipped and all(s.state == PAUSED for s in skipped)):
            return CheckInResult(switches=moved, skipped=skipped)
        # Nothing could be checked in: say why, the gravest reason first.
        for code in ("switch_fired", "email_not_verified", "busy"):
            for refusal in refusals:
                if refusal.code == code:
                    raise refusal
        raise unverified_conflict()

    def _check_in_refusing(self, doc: dict[str, Any], method: str = "api") -> dict | None:
        if doc["state"] in FINAL:
            raise fired_conflict(doc)
        if doc["state"] == UNARMED:
            raise unverified_conflict(doc["_id"])
        if doc["state"] == PAUSED:
            raise paused_conflict(doc)
        return self._start_checked_in_cycle(doc, method)

    def _start_checked_in_cycle(self, doc: dict[str, Any], method: str) -> dict | None:
        """armed/overdue -> armed with a deadline one interval from now, in a new cycle.

        The filter is (id, state, cycle): if the loop fired this very cycle first, this
        misses and the caller sees the switch fired; if this lands first, the loop's firing
        misses instead, and no CheckInMissed is ever written.
        """
        switch = Switch.from_doc(doc)
        fields = {"state": ARMED, "last_checkin_at": self.now,
                  **fresh_cycle(switch.schedule, self.now)}
        event = self._checked_in_event(switch, fields["deadline"], method)
        return self.repo.start_cycle(switch, fields, now=self.now, event=event,
                                     unset=("grace_ends_at", "overdue_at"))

    def _checked_in_event(self, switch: Switch, deadline: datetime, method: str) -> dict:
        return self._event("CheckedIn", {
            "user_id": switch.user_id, "switch_id": switch.id, "cycle": switch.cycle + 1,
            "deadline": deadline.isoformat(), "method": method,
        })

    def _retrying(self, switch_id: str, write: Callable[[dict[str, Any]], dict | None],
                  read: dict[str, Any] | None = None) -> dict[str, Any]:
        """Read the switch and try `write` on it until its conditional update lands (the
        first try on `read`, the switch as the caller has just read it, if given)."""
        for _ in range(CAS_ATTEMPTS):
            doc = read if read is not None else self.repo.switch(switch_id)
            read = None  # a miss means the switch changed: read it again
            if doc is None:
                raise NotFound("there is no such switch", code="switch_not_found")
            written = write(doc)
            if written is not None:
                return written
        raise Conflict("the switch changed too often while we tried; try again",
                       code="busy")

    # The one-click link ------------------------------------------------------------------

    def inspect_link(self, token: str, client: ClientContext) -> LinkCheckIn:
        """What POSTing this link would do, changing nothing (scanners GET links)."""
        self._throttle_link(client)
        self._linked_switch(token)
        return LinkCheckIn(status="valid")

    def check_in_by_link(self, token: str, client: ClientContext) -> LinkCheckIn:
        """Check in the switch and cycle the token was issued for."""
        self._throttle_link(client)
        for _ in range(CAS_ATTEMPTS):
            doc, _claim = self._linked_switch(token)
            moved = self._start_checked_in_cycle(doc, "link")
            if moved is not None:
                return LinkCheckIn(status="checked_in", deadline=moved["deadline"])
        raise Conflict("the switch changed too often while we tried; try again",
                       code="busy")

    def _throttle_link(self, client: ClientContext) -> None:
        if client.ip:
            self.repo.throttle.consume(LINK_USES_PER_CLIENT, hashed_key(client.ip), self.now)

    def _linked_switch(self, token: str) -> tuple[dict[str, Any], tokens.LinkClaim]:
        """The switch a link may check in, or the precise reason it may not."""
        try:
            claim = tokens.verify(self.link_key, token)
        except tokens.BadToken:
            raise NotFound("this check-in link is not valid", code="invalid_link") from None
        doc = self.repo.switch(claim.switch_id)
        if doc is None:
            raise NotFound("this check-in link is not valid", code="invalid_link")
        if doc["state"] in FINAL:
            raise fired_conflict(doc)
        same_cycle = doc["cycle"] == claim.cycle
        if claim.expired(self.now, doc.get("grace_ends_at") if same_cycle else None):
            raise Gone("this check-in link has expired; log in to check in", code="link_expired")
        if not same_cycle or doc["state"] not in LIVE:
            raise Gone("this check-in link was already used: you have checked in since it "
                       "was sent", code="link_used")
        return doc, claim

    # The vault's questions and hook ----------------------------------------------------

    def default_switch_id(self, user_id: str) -> str:
        """The id of the owner's default switch (deterministic: it may not be stored yet)."""
        return switch_id_for(user_id, DEFAULT_SLOT)

    def owns_switch(self, user_id: str, switch_id: str) -> bool:
        """Whether a message may be written to this switch of `user_id`.

        False for an unknown switch, another user's, and one that has fired or been
        released: a message written to it now would never be delivered.
        """
        doc = self.repo.switch(switch_id)
        return doc is not None and doc["user_id"] == user_id and doc["state"] not in FINAL

    def mark_all_released(self, releases: list[ReleasedSwitch]) -> dict[str, str | None]:
        """`mark_released` for each switch: by switch id, None once it is released, or why
        it cannot be (it did not fire in that cycle, or it does not exist)."""
        answers: dict[str, str | None] = {}
        with self.repo.switches.group_writes():
            for release in releases:
                try:
                    self.mark_released(release.switch_id, release.cycle)
                    answers[release.switch_id] = None
                except (Conflict, NotFound) as refusal:
                    answers[release.switch_id] = f"{refusal.code}: {refusal}"
        return answers

    def mark_released(self, switch_id: str, cycle: int) -> dict[str, Any]:
        """fired -> released once every message of the switch was handed to delivery.

        Idempotent: calling it again for the same cycle answers the same.
        """
        doc = self.repo.mark_released(switch_id, cycle, self.now)
        if doc is not None:
            log.info("switch %s released (cycle %d)", switch_id, cycle)
            return {"switch_id": switch_id, "cycle": cycle, "state": RELEASED}
        current = self.repo.switch(switch_id)
        if current is None:
            raise NotFound("there is no such switch", code="switch_not_found")
        if current["state"] == RELEASED and current["cycle"] == cycle:
            return {"switch_id": switch_id, "cycle": cycle, "state": RELEASED}
        raise Conflict("this switch did not fire in that cycle", code="not_fired",
                       details={"state": current["state"], "cycle": current["cycle"]})

    # Delivery's word on a reminder ------------------------------------------------------

    def on_reminder_settled(self, settled: ReminderSettled) -> None:
        """Note on the switch that a reminder of this cycle left (or bounced for good).

        Recorded once per (cycle, step), so the fact outlives delivery's mail log. An overdue
        notice accepted later than grace allowed for starts grace again from that moment.
        A reminder of an earlier cycle no longer matters.
        """
        settlement = Settlement(settled.outcome, settled.settled_at)
        for _ in range(CAS_ATTEMPTS):
            doc = self.repo.switch(settled.switch_id)
            if doc is None or doc["cycle"] != settled.cycle:
                return
            switch = Switch.from_doc(doc)
            if settled.step in switch.settled:
                return  # a redelivery, or delivery's answer recorded by the loop
            grace_ends_at = switch.grace_after(settled.step, settlement)
            if self.repo.record_settlement(switch, settled.step, settlement, grace_ends_at,
                                           self.now) is not None:
                if grace_ends_at is not None:
                    log.warning("switch %s: the overdue notice left only at %s; grace now "
                                "ends %s", switch.id, settlement.at.isoformat(),
                                grace_ends_at.isoformat())
                return
        raise Conflict("the switch changed too often while we tried; try again", code="busy")

    # Plans ----------------------------------------------------------------------------

    def on_plan_changed(self, change: PlanChanged) -> None:
        """Remember the newest plan; it limits new switches and nothing else."""
        self.repo.entitlements.record(change, self.now)

