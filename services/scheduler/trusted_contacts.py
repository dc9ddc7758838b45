"""Trusted contacts: the people an owner names, per switch, who can hold a release of
someone alive but unreachable. Pure code over records and a moment: no storage, no broker.

- *Consent first.* A contact is `invited`, and only a contact who `accepted` on the page
  behind their invitation link is ever asked anything; one who declined (or never
  answered) receives nothing more. The decision is kept with a receipt: what the page
  said (its version and a SHA-256 of its text), the choice, when, and from where
  (a truncated IP and the user agent).
- *Asked when it matters.* When the switch becomes overdue, every accepted contact is
  mailed a link `/t/<token>`: "hold the release" moves the end of grace by the switch's
  `hold_seconds`, at most `MAX_HOLDS_PER_CYCLE` times per cycle, and the owner is told;
  with `confirmation: required`, "I confirm they cannot check in" lets the switch fire at
  the end of grace (without it, it waits `confirmation_wait_seconds` more).
- *Never more than that.* A contact's link names one switch, one contact, one cycle and
  the number of holds already used; it can hold or confirm, never check in for the
  owner, and nothing it opens shows a message or a recipient.

Tokens. An invitation token is random, mailed once and stored only as its SHA-256: it is
used up by the decision. A request token (`/t/<token>`) is signed like a check-in link
(HMAC-SHA256 with a key for this purpose only, nothing stored): bound to (switch,
contact, cycle, holds used), so any hold uses up every link of that round (a new round is
mailed), a check-in or a firing uses up every link of the cycle, and it expires.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import struct
import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from services.scheduler.switches import MAX_HOLDS_PER_CYCLE, Switch, seconds
from shared.errors import InvalidInput
from shared.events import new_event
from shared.plans import PLANS, PlanLimits

INVITED, ACCEPTED, DECLINED = "invited", "accepted", "declined"
STATUSES = (INVITED, ACCEPTED, DECLINED)
# The decisions a contact can make on the invitation page.
DECISIONS = (ACCEPTED, DECLINED)

FREE_PLAN_CONTACTS = 3
PAID_PLAN_CONTACTS = 5

NAME_MAX_LENGTH = 100
EMAIL_MAX_LENGTH = 254
INVITATION_VALID_FOR = timedelta(days=30)
# A request link outlives every moment at which the switch can still be held.
REQUEST_MARGIN = timedelta(days=1)

# What the invitation page says, word for word: the consent receipt proves what was agreed.
ROLE_NOTICE_VERSION = "trusted-contact/1"
ROLE_NOTICE = (
    "As a trusted contact you may be asked, by mail, whether the person who named you is "
    "all right, if they ever miss a check-in with Just in Case. You can then hold the "
    "release of what they prepared for a few days (at most three times), or confirm that "
    "they cannot check in. You will never see their messages or learn who receives them, "
    "and you cannot check in for them. We keep your name, your address, and this answer; "
    "if you decline, you receive nothing more from us about this."
)
ROLE_NOTICE_SHA256 = hashlib.sha256(ROLE_NOTICE.encode("utf-8")).hexdigest()

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def contact_limit(limits: PlanLimits) -> int:
    """How many trusted contacts one switch may have on the owner's plan."""
    plan = PLANS.get(limits.plan)
    return PAID_PLAN_CONTACTS if plan is not None and plan.paid else FREE_PLAN_CONTACTS


def validated_contact(name: Any, email: Any) -> tuple[str, str]:
    """The contact's name and address, trimmed; InvalidInput naming the field otherwise."""
    if not isinstance(name, str) or not name.strip():
        raise _refuse("name", "give the contact's name")
    if len(name.strip()) > NAME_MAX_LENGTH:
        raise _refuse("name", f"at most {NAME_MAX_LENGTH} characters")
    if any(unicodedata.category(c).startswith("C") for c in name):
        # The name goes into a mail header: no line breaks, no control characters.
        raise _refuse("name", "must not contain line breaks or control characters")
    if not isinstance(email, str) or not _EMAIL.fullmatch(email.strip()):
        raise _refuse("email", "must be an email address such as name@example.org")
    if len(email.strip()) > EMAIL_MAX_LENGTH:
        raise _refuse("email", f"at most {EMAIL_MAX_LENGTH} characters")
    return name.strip(), email.strip()


def _refuse(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", code="invalid_trusted_contact",
                        details={"field": field})


# --- records ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsentReceipt:
    """Proof of a contact's decision: what they were shown, what they chose, when, where."""

    choice: str
    at: datetime
    notice_version: str
    notice_sha256: str
    ip_truncated: str | None
    user_agent: str | None
    method: str = "web"

    def as_fields(self) -> dict[str, Any]:
        return {"choice": self.choice, "at": self.at, "method": self.method,
                "notice_version": self.notice_version, "notice_sha256": self.notice_sha256,
                "ip_truncated": self.ip_truncated, "user_agent": self.user_agent}


@dataclass(frozen=True)
class TrustedContact:
    """What the rules need to know about a stored contact."""

    id: str
    switch_id: str
    user_id: str
    name: str
    email: str
    status: str
    invited_at: datetime
    decided_at: datetime | None = None

    @property
    def asked_when_overdue(self) -> bool:
        """Only a contact who accepted the role is ever asked anything."""
        return self.status == ACCEPTED

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> TrustedContact:
        return cls(id=doc["_id"], switch_id=doc["switch_id"], user_id=doc["user_id"],
                   name=doc["name"], email=doc["email"], status=doc["status"],
                   invited_at=doc["invited_at"], decided_at=doc.get("decided_at"))


# --- invitation tokens: random, stored hashed, used up by the decision --------------------


INVITATION_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")


def new_invitation_token() -> str:
    """A fresh invitation token (256 random bits)."""
    return secrets.token_urlsafe(32)


def invitation_hash(token: str) -> str:
    """What is stored of an invitation token: its SHA-256, looked up by index."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


# --- request tokens: signed, bound to (switch, contact, cycle, round) ---------------------


REQUEST_PURPOSE = b"jicm/trusted-contact-link/v1"
_VERSION = 1
_BODY = struct.Struct(">B16s16sIIQ")
_MAC_BYTES = 32
REQUEST_TOKEN_LENGTH = len(base64.urlsafe_b64encode(b"\0" * (_BODY.size + _MAC_BYTES))
                           .rstrip(b"="))
REQUEST_TOKEN_PATTERN = re.compile(rf"[A-Za-z0-9_-]{{{REQUEST_TOKEN_LENGTH}}}")


class BadToken(Exception):
    """Not a token we issued (malformed, or its MAC does not match)."""


@dataclass(frozen=True)
class RequestClaim:
    """What a verified request token says: this contact may answer for this switch, in this
    cycle, while `round` holds have been used, until `expires_at`."""

    switch_id: str
    contact_id: str
    cycle: int
    round: int
    expires_at: datetime


def request_key(link_key: bytes) -> bytes:
    """The MAC key for contacts' links, derived from the check-in links' key so that the two
    can never stand in for each other."""
    return hmac.new(link_key, REQUEST_PURPOSE, hashlib.sha256).digest()


def issue_request(key: bytes, claim: RequestClaim) -> str:
    body = _BODY.pack(_VERSION, uuid.UUID(claim.switch_id).bytes,
                      uuid.UUID(claim.contact_id).bytes, claim.cycle, claim.round,
                      int(claim.expires_at.timestamp()))
    mac = hmac.new(key, body, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(body + mac).rstrip(b"=").decode("ascii")


def verify_request(key: bytes, token: str) -> RequestClaim:
    """What a genuine request token says; BadToken for anything we did not issue."""
    if not isinstance(token, str) or not REQUEST_TOKEN_PATTERN.fullmatch(token):
        raise BadToken("malformed")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise BadToken("malformed") from None
    body, mac = raw[: _BODY.size], raw[_BODY.size :]
    if not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()):
        raise BadToken("bad signature")
    version, switch_bytes, contact_bytes, cycle, round_, expires = _BODY.unpack(body)
    if version != _VERSION:
        raise BadToken("unknown version")
    return RequestClaim(switch_id=str(uuid.UUID(bytes=switch_bytes)),
                        contact_id=str(uuid.UUID(bytes=contact_bytes)), cycle=cycle,
                        round=round_, expires_at=datetime.fromtimestamp(expires, tz=UTC))


def request_expiry(switch: Switch, grace_ends_at: datetime) -> datetime:
    """When a request link of this round dies: after every hold still possible and the
    wait for a confirmation, plus a margin."""
    rules = switch.contact_rules
    holds_left = max(MAX_HOLDS_PER_CYCLE - switch.holds_used, 0)
    return (grace_ends_at + seconds(rules.hold_seconds * holds_left)
            + seconds(rules.confirmation_wait_seconds) + REQUEST_MARGIN)


# --- what a contact may do ----------------------------------------------------------------


def held_grace(switch: Switch, now: datetime) -> datetime:
    """The end of grace after one more hold: `hold_seconds` later than it was, and never
    less than `hold_seconds` from now (grace may already be over, the firing waiting)."""
    assert switch.grace_ends_at is not None
    return max(switch.grace_ends_at, now) + seconds(switch.contact_rules.hold_seconds)


def holds_left(switch: Switch) -> int:
    return max(MAX_HOLDS_PER_CYCLE - switch.holds_used, 0)


def can_hold(switch: Switch) -> bool:
    return holds_left(switch) > 0


def asked_again_after_hold(switch: Switch) -> bool:
    """Whether, after one more hold, the contacts still have something to answer."""
    return switch.holds_used + 1 < MAX_HOLDS_PER_CYCLE or switch.contact_rules.confirmation_required


# --- how moments read in mails ------------------------------------------------------------


def moment_words(moment: datetime) -> str:
    """A moment as a person reads it: `Tuesday 3 June 2030 at 14:00 UTC`."""
    return f"{moment:%A} {moment.day} {moment:%B %Y at %H:%M} UTC"


def duration_words(total_seconds: int) -> str:
    """A duration in days and hours: `7 days`, `1 day and 6 hours`, `3 hours` (minutes only
    below an hour, as test and local switches have)."""
    total = int(total_seconds)
    if total < 3600:
        minutes = max(total // 60, 1)
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    days, rest = divmod(total, 86_400)
    hours = rest // 3600
    parts = [f"{days} day{'s' if days != 1 else ''}"] if days else []
    if hours:
        parts.append(f"{hours} hour{'s' if hours != 1 else ''}")
    return " and ".join(parts)


# --- the mails (MailRequested, through the outbox of the write that needs them) -----------

PRODUCER = "scheduler"
INVITATION_KIND = "trusted_contact_invitation"
REQUEST_KIND = "trusted_contact_request"
HOLD_KIND = "trusted_contact_hold"


@dataclass(frozen=True)
class Mailer:
    """What the mails need besides the records: the links' key, the site, the moment."""

    request_key: bytes
    public_url: str
    now: datetime
    request_id: str | None = None

    def _mail(self, data: dict[str, Any]) -> dict:
        return new_event("MailRequested", data, producer=PRODUCER, now=self.now,
                         request_id=self.request_id)

    def invitation(self, contact: TrustedContact, owner_email: str, token: str,
                   expires_at: datetime) -> dict:
        """The invitation to accept or decline the role, with its single-use link."""
        return self._mail({
            "kind": INVITATION_KIND, "reference": f"{contact.id}:invitation",
            "to": contact.email, "to_name": contact.name, "user_id": contact.user_id,
            "context": {"owner_email": owner_email, "link": f"{self.public_url}/i/{token}",
                        "expires_at": moment_words(expires_at)},
        })

    def requests(self, switch: Switch, owner_email: str, contacts: list[TrustedContact],
                 round_: int, grace_ends_at: datetime) -> list[dict]:
        """One mail per accepted contact: the owner missed a check-in; hold or confirm.

        `round_` is the number of holds already used this cycle: the links are bound to it.
        """
        asked = [contact for contact in contacts if contact.asked_when_overdue]
        current = replace(switch, holds_used=round_, grace_ends_at=grace_ends_at)
        expires_at = request_expiry(current, grace_ends_at)
        mails = []
        for contact in asked:
            token = issue_request(self.request_key, RequestClaim(
                switch_id=switch.id, contact_id=contact.id, cycle=switch.cycle,
                round=round_, expires_at=expires_at))
            mails.append(self._mail({
                "kind": REQUEST_KIND,
                "reference": f"{switch.id}:{switch.cycle}:{round_}:{contact.id}",
                "to": contact.email, "to_name": contact.name, "user_id": switch.user_id,
                "context": {
                    "owner_email": owner_email, "link": f"{self.public_url}/t/{token}",
                    "grace_ends_at": moment_words(grace_ends_at),
                    "hold": duration_words(switch.contact_rules.hold_seconds),
                    "holds_left": str(holds_left(current)),
                    "confirmation": switch.contact_rules.confirmation,
                    "held_before": "yes" if round_ else "no",
                },
            }))
        return mails

    def owner_told(self, switch: Switch, owner_email: str, contact: TrustedContact,
                   grace_ends_at: datetime) -> dict:
        """The owner learns that a contact held the release, and until when."""
        return self._mail({
            "kind": HOLD_KIND,
            "reference": f"{switch.id}:{switch.cycle}:{switch.holds_used}:held",
            "to": owner_email, "user_id": switch.user_id,
            "context": {"contact_name": contact.name,
                        "grace_ends_at": moment_words(grace_ends_at),
                        "holds_left": str(max(holds_left(switch) - 1, 0))},
        })
