"""The use cases of trusted contacts: the owner names and removes them, a contact accepts or
declines the role, and, while the switch is overdue, holds the release or confirms that the
owner cannot check in. The rules are in `trusted_contacts.py`; the writes in `storage.py`.

Every answer of a contact is one conditional update on the switch, named by (id, overdue,
cycle, holds used), the same kind as a check-in's: when it misses, the switch fired, the
owner checked in, or another contact answered first, and the use case reads again and
says which.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from services.scheduler.scheduler import (
    CAS_ATTEMPTS,
    Scheduler,
    fired_conflict,
    unverified_conflict,
)
from services.scheduler.schemas import (
    ClientContext,
    ContactRequestView,
    InvitationView,
    TrustedContactList,
    TrustedContactRequest,
    TrustedContactView,
)
from services.scheduler.switches import FINAL, OVERDUE, Switch
from services.scheduler.trusted_contacts import (
    ACCEPTED,
    DECISIONS,
    INVITATION_VALID_FOR,
    INVITED,
    ROLE_NOTICE,
    ROLE_NOTICE_SHA256,
    ROLE_NOTICE_VERSION,
    BadToken,
    ConsentReceipt,
    Mailer,
    TrustedContact,
    asked_again_after_hold,
    can_hold,
    contact_limit,
    held_grace,
    holds_left,
    invitation_hash,
    new_invitation_token,
    request_key,
    validated_contact,
    verify_request,
)
from shared.client import truncate_ip
from shared.entitlements import limits_for
from shared.errors import Conflict, Gone, InvalidInput, NotFound, PaymentRequired
from shared.throttle import Limit, hashed_key

log = logging.getLogger(__name__)

# Invitations are mail we send to someone who never signed up: bounded per owner.
INVITATIONS_PER_USER = Limit("trusted-contact-invite-user", count=20, window_seconds=86_400)
CONTACT_LINK_USES_PER_CLIENT = Limit("trusted-contact-link-client", count=120,
                                     window_seconds=3600)


def contact_view(doc: dict[str, Any]) -> TrustedContactView:
    """A stored contact as the owner sees them."""
    return TrustedContactView(id=doc["_id"], name=doc["name"], email=doc["email"],
                              status=doc["status"], invited_at=doc["invited_at"],
                              decided_at=doc.get("decided_at"))


def _invalid_link() -> NotFound:
    return NotFound("this link is not valid", code="invalid_link")


class TrustedContacts:
    """Trusted contacts' use cases, over the scheduler's repository and moment."""

    def __init__(self, scheduler: Scheduler, public_url: str) -> None:
        self.scheduler = scheduler
        self.repo = scheduler.repo
        self.now = scheduler.now
        self.mailer = Mailer(request_key(scheduler.link_key), public_url, scheduler.now,
                             request_id=scheduler.request_id)

    # The owner's side ----------------------------------------------------------------

    def list(self, user_id: str, switch_id: str) -> TrustedContactList:
        self.scheduler.get(user_id, switch_id)  # another user's switch is a 404
        limits = limits_for(user_id, self.repo.entitlements, self.scheduler.billing)
        return TrustedContactList(
            trusted_contacts=[contact_view(doc) for doc in self.repo.contacts_of(switch_id)],
            limit=contact_limit(limits),
        )

    def add(self, user_id: str, switch_id: str,
            request: TrustedContactRequest) -> TrustedContactView:
        """Name a contact and mail them the invitation, within the plan's limit."""
        name, email = validated_contact(request.name, request.email)
        switch = self.scheduler.owned(user_id, switch_id)
        if switch["state"] in FINAL:
            raise fired_conflict(switch)
        if not switch.get("email_verified"):
            # The invitation names the owner's address: it must be theirs.
            raise unverified_conflict(switch_id)
        existing = self.repo.contacts_of(switch_id)
        if any(doc["email"].lower() == email.lower() for doc in existing):
            raise Conflict("this person is already a trusted contact of this switch",
                           code="trusted_contact_exists", details={"field": "email"})
        limit = contact_limit(limits_for(user_id, self.repo.entitlements,
                                         self.scheduler.billing))
        self.repo.throttle.consume(INVITATIONS_PER_USER, user_id, self.now)
        taken = {doc["slot"] for doc in existing}
        # A slot is unique per switch: two additions racing for the last one collide.
        for slot in (s for s in range(limit) if s not in taken):
            doc, event = self._invited(switch, slot, name, email)
            if self.repo.add_contact(doc, event, self.now):
                log.info("trusted contact %s invited for switch %s", doc["_id"], switch_id)
                return contact_view(doc)
        raise PaymentRequired(
            f"this switch already has {limit} trusted contacts, the most your plan allows",
            details={"limit": "trusted_contacts", "allowed": limit, "wanted": limit + 1},
        )

    def _invited(self, switch: dict[str, Any], slot: int, name: str,
                 email: str) -> tuple[dict[str, Any], dict]:
        token = new_invitation_token()
        expires_at = self.now + INVITATION_VALID_FOR
        doc = {
            "_id": str(uuid.uuid4()), "switch_id": switch["_id"], "user_id": switch["user_id"],
            "slot": slot, "name": name, "email": email, "status": INVITED,
            "invited_at": self.now, "decided_at": None,
            "invitation_hash": invitation_hash(token), "invitation": {"expires_at": expires_at},
            "created_at": self.now, "updated_at": self.now,
        }
        event = self.mailer.invitation(TrustedContact.from_doc(doc), switch["email"], token,
                                       expires_at)
        return doc, event

    def remove(self, user_id: str, switch_id: str, contact_id: str) -> None:
        """Remove a contact: they are asked nothing more, and nothing of them is kept."""
        self.scheduler.owned(user_id, switch_id)
        doc = self.repo.contact(contact_id)
        if doc is None or doc["switch_id"] != switch_id:
            raise NotFound("there is no such trusted contact", code="trusted_contact_not_found",
                           details={"contact_id": contact_id})
        self.repo.remove_contact(contact_id)

    # The invitation ------------------------------------------------------------------

    def inspect_invitation(self, token: str, client: ClientContext) -> InvitationView:
        """What the invitation page shows, changing nothing (scanners GET links)."""
        self._throttle(client)
        doc = self._invited_by(token)
        return self._invitation_view(doc)

    def decide_invitation(self, token: str, decision: str,
                          client: ClientContext) -> InvitationView:
        """Accept or decline the role, once, with a consent receipt."""
        self._throttle(client)
        if decision not in DECISIONS:
            raise InvalidInput("decision: must be accepted or declined",
                               code="invalid_decision", details={"field": "decision"})
        doc = self._invited_by(token)
        if doc["status"] != INVITED:
            raise Gone("you have already answered this invitation", code="link_used")
        receipt = ConsentReceipt(
            choice=decision, at=self.now, notice_version=ROLE_NOTICE_VERSION,
            notice_sha256=ROLE_NOTICE_SHA256, ip_truncated=truncate_ip(client.ip),
            user_agent=client.user_agent,
        )
        decided = self.repo.decide_invitation(doc["_id"], doc["invitation_hash"],
                                              decision, receipt.as_fields(), self.now)
        if decided is None:
            raise Gone("you have already answered this invitation", code="link_used")
        log.info("trusted contact %s %s the role", doc["_id"], decision)
        return self._invitation_view(decided)

    def _invited_by(self, token: str) -> dict[str, Any]:
        doc = self.repo.invited_by_token(invitation_hash(token)) if token.isascii() else None
        if doc is None:
            raise _invalid_link()
        if doc["status"] == INVITED and self.now >= doc["invitation"]["expires_at"]:
            raise Gone("this invitation has expired; ask for a new one", code="link_expired")
        return doc

    def _invitation_view(self, doc: dict[str, Any]) -> InvitationView:
        switch = self.repo.switch(doc["switch_id"])
        if switch is None:
            raise _invalid_link()
        return InvitationView(status=doc["status"], owner_email=switch["email"],
                              contact_name=doc["name"], notice=ROLE_NOTICE,
                              notice_version=ROLE_NOTICE_VERSION)

    # The request while the switch is overdue ---------------------------------------------

    def inspect_request(self, token: str, client: ClientContext) -> ContactRequestView:
        """What the contact's page offers, changing nothing."""
        self._throttle(client)
        switch, doc, _contact = self._answerable(token)
        return self._request_view(switch, doc, "asked")

    def hold(self, token: str, client: ClientContext) -> ContactRequestView:
        """"They are all right: hold the release": the end of grace moves by hold_seconds."""
        self._throttle(client)
        for _ in range(CAS_ATTEMPTS):
            switch, doc, contact = self._answerable(token)
            if not can_hold(switch):
                raise Conflict("the release has been held as often as it can be in this "
                               "cycle", code="holds_used_up")
            grace_ends_at = held_grace(switch, self.now)
            events = [self.mailer.owner_told(switch, doc["email"], contact, grace_ends_at)]
            if asked_again_after_hold(switch):
                contacts = [TrustedContact.from_doc(c) for c in self.repo.contacts_of(switch.id)]
                events += self.mailer.requests(switch, doc["email"], contacts,
                                               switch.holds_used + 1, grace_ends_at)
            held = self.repo.hold_release(switch, contact.id, grace_ends_at, events, self.now)
            if held is not None:
                log.warning("switch %s held by trusted contact %s until %s", switch.id,
                            contact.id, grace_ends_at.isoformat())
                return self._request_view(Switch.from_doc(held), held, "held")
        raise Conflict("the switch changed too often while we tried; try again", code="busy")

    def confirm(self, token: str, client: ClientContext) -> ContactRequestView:
        """"I confirm they cannot check in": with confirmation required, the switch may fire
        at the end of grace."""
        self._throttle(client)
        for _ in range(CAS_ATTEMPTS):
            switch, doc, contact = self._answerable(token)
            if not switch.contact_rules.confirmation_required:
                raise Conflict("this switch does not wait for a confirmation",
                               code="confirmation_not_asked")
            if switch.confirmed_at is not None:
                return self._request_view(switch, doc, "confirmed")
            assert switch.grace_ends_at is not None
            due_at = max(switch.grace_ends_at, self.now)
            confirmed = self.repo.confirm_absence(switch, contact.id, due_at, self.now)
            if confirmed is not None:
                log.warning("switch %s: trusted contact %s confirmed the owner cannot check "
                            "in", switch.id, contact.id)
                return self._request_view(Switch.from_doc(confirmed), confirmed, "confirmed")
        raise Conflict("the switch changed too often while we tried; try again", code="busy")

    def _answerable(self, token: str) -> tuple[Switch, dict[str, Any], TrustedContact]:
        """The switch a request link may answer for, or the precise reason it may not."""
        try:
            claim = verify_request(self.mailer.request_key, token)
        except BadToken:
            raise _invalid_link() from None
        contact_doc = self.repo.contact(claim.contact_id)
        doc = self.repo.switch(claim.switch_id)
        if (contact_doc is None or doc is None or contact_doc["switch_id"] != claim.switch_id
                or contact_doc["status"] != ACCEPTED):
            raise _invalid_link()
        if doc["state"] in FINAL:
            raise Conflict("it is too late to hold this release: the switch has already "
                           "fired", code="switch_fired", details={"state": doc["state"]})
        if doc["cycle"] != claim.cycle or doc["state"] != OVERDUE:
            raise Gone("nothing to do any more: they have checked in since this mail was "
                       "sent", code="no_longer_needed")
        if self.now >= claim.expires_at:
            raise Gone("this link has expired", code="link_expired")
        switch = Switch.from_doc(doc)
        if switch.holds_used != claim.round:
            raise Gone("this link was used: the release was held since, and a newer mail "
                       "was sent", code="link_used")
        return switch, doc, TrustedContact.from_doc(contact_doc)

    def _request_view(self, switch: Switch, doc: dict[str, Any],
                      status: str) -> ContactRequestView:
        assert switch.grace_ends_at is not None
        return ContactRequestView(
            status=status, owner_email=doc["email"], grace_ends_at=switch.grace_ends_at,
            holds_left=holds_left(switch), can_hold=can_hold(switch),
            can_confirm=(switch.contact_rules.confirmation_required
                         and switch.confirmed_at is None),
            hold_seconds=switch.contact_rules.hold_seconds,
        )

    def _throttle(self, client: ClientContext) -> None:
        if client.ip:
            self.repo.throttle.consume(CONTACT_LINK_USES_PER_CLIENT, hashed_key(client.ip),
                                       self.now)

