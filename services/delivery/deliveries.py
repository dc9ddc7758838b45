"""Delivery's use cases: accept a mail once, tell where mail stands, keep consent.

Accepting a mail stores a record (its values sealed) under the unique key
(kind, reference, recipient) and wakes the sending loop; a second request for the same
mail finds the first record and changes nothing. Whether marketing mail may go is
decided when it is sent, so an unsubscribe between the request and the sending wins.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from email_validator import EmailNotValidError, validate_email

from services.delivery import privacy
from services.delivery.kinds import kind_named
from services.delivery.render import placeholders, render
from services.delivery.schemas import Delivery, MailRequest, MailStatus, StatusRequest
from services.delivery.sealing import ContextSeal
from services.delivery.storage import (
    FAILED,
    QUEUED,
    SENT,
    SUPPRESSED,
    WAITING,
    DeliveryRepository,
)
from services.delivery.unsubscribe import BadToken, address_key, read_token
from shared.errors import InvalidInput, NotFound
from shared.events.schemas import ConsentChanged, ReminderDue

STATUS_OF_STATE: dict[str, MailStatus] = {
    **{state: "pending" for state in WAITING},
    SENT: "sent",
    FAILED: "failed",
    # Marketing mail held back for want of consent will never leave: as final as a bounce.
    SUPPRESSED: "failed",
}


def normalize_recipient(raw: str) -> tuple[str, str]:
    """(address to write to, key for the unique index); InvalidInput for a bad address."""
    try:
        checked = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidInput(f"to: {exc}", code="invalid_email", details={"field": "to"}) from None
    return checked.normalized, checked.normalized.casefold()


def format_deadline(moment: datetime) -> str:
    """A deadline as a person reads it: `Tuesday 3 June 2030 at 14:00 UTC`."""
    return f"{moment:%A} {moment.day} {moment:%B %Y at %H:%M} UTC"


def reminder_request(event: ReminderDue, public_url: str) -> MailRequest:
    """The reminder mail a ReminderDue event asks for, with its one-click check-in link."""
    return MailRequest(
        kind="reminder",
        reference=f"{event.switch_id}:{event.cycle}:{event.step}",
        to=event.email,
        user_id=event.user_id,
        context={
            "stage": event.stage,
            "link": f"{public_url}/c/{event.checkin_token}",
            "deadline": format_deadline(event.deadline),
        },
    )


class Deliveries:
    """Use cases of the delivery service (the sending itself is in `pipeline.py`)."""

    def __init__(
        self,
        repo: DeliveryRepository,
        seal: ContextSeal,
        now: datetime,
        *,
        public_url: str,
        unsubscribe_key: bytes,
        wake_sender: Callable[[], None] = lambda: None,
    ) -> None:
        self.repo = repo
        self.seal = seal
        self.now = now
        self.public_url = public_url
        self.unsubscribe_key = unsubscribe_key
        self.wake_sender = wake_sender

    # Accepting mail -------------------------------------------------------------------

    def request(self, request: MailRequest) -> Delivery:
        """Accept one mail (once); InvalidInput for a kind, address or context we cannot use."""
        kind = kind_named(request.kind)
        recipient, recipient_key = normalize_recipient(request.to)
        if kind.forget_recipient:
            recipient_key = address_key(recipient)  # the address itself goes once sent
        # Rendered once now only to refuse a bad request at the door; the loop renders again.
        render(kind, request.context, public_url=self.public_url, to_name=request.to_name,
               unsubscribe_link=self.public_url if kind.marketing else None,
               fetched=placeholders(kind, request.context))
        record, created = self.repo.add(self._new_record(request, recipient, recipient_key,
                                                         kind.marketing))
        if created:
            self.wake_sender()
        return _delivery(record, created)

    def _new_record(self, request: MailRequest, recipient: str, recipient_key: str,
                    marketing: bool) -> dict[str, Any]:
        record_id = uuid.uuid4().hex
        return {
            "_id": record_id,
            "kind": request.kind,
            "reference": request.reference,
            "recipient": recipient,
            "recipient_key": recipient_key,
            "to_name": request.to_name,
            "user_id": request.user_id,
            "marketing": marketing,
            "context_sealed": self.seal.seal(record_id, request.context),
            "state": QUEUED,
            "attempts": 0,
            "resends": 0,
            "next_attempt_at": self.now,
            "created_at": self.now,
            "queued_at": self.now,
        }

    # Where mail stands ------------------------------------------------------------------

    def status(self, request: StatusRequest) -> dict[str, MailStatus]:
        """Per reference: unknown, pending, sent or failed (all recipients taken together)."""
        statuses: dict[str, MailStatus] = {ref: "unknown" for ref in request.references}
        if not request.references:
            return statuses
        seen: dict[str, list[MailStatus]] = {}
        for record in self.repo.of_references(request.kind, list(set(request.references))):
            seen.setdefault(record["reference"], []).append(STATUS_OF_STATE[record["state"]])
        for reference, found in seen.items():
            statuses[reference] = _combined(found)
        return statuses

    # Consent ------------------------------------------------------------------------------

    def consent_changed(self, consent: ConsentChanged, occurred_at: datetime) -> None:
        """Keep the user's newest choice about marketing mail; an opt-in lifts old unsubscribes."""
        newer = self.repo.record_consent(consent.user_id, consent.marketing.email, occurred_at)
        if newer and consent.marketing.email:
            self.repo.lift_suppressions(consent.user_id, before=occurred_at)

    def check_unsubscribe(self, token: str) -> None:
        """NotFound unless `token` is one of our unsubscribe tokens (changes nothing)."""
        self._read_unsubscribe(token)

    def unsubscribe(self, token: str, source: str) -> None:
        """Stop marketing mail to the token's address, at once (idempotent)."""
        addr_key, user_id = self._read_unsubscribe(token)
        if user_id:
            # Privacy records the consent receipt from the announcement (privacy.py).
            privacy.announce_unsubscribe(self.repo, addr_key, user_id, source, self.now)
            self.repo.record_consent(user_id, False, self.now)
        else:
            self.repo.suppress(addr_key, user_id, source, self.now)

    def _read_unsubscribe(self, token: str) -> tuple[str, str | None]:
        try:
            return read_token(self.unsubscribe_key, token)
        except BadToken:
            raise NotFound("this unsubscribe link is not valid", code="invalid_link") from None



def marketing_allowed(repo: DeliveryRepository, record: dict[str, Any]) -> bool:
    """Marketing is opt-in: consent given by the user and the address never unsubscribed."""
    if not record.get("user_id") or repo.is_suppressed(address_key(record["recipient"])):
        return False
    consent = repo.consent(record["user_id"])
    return bool(consent and consent.get("marketing_email"))


def _combined(found: list[MailStatus]) -> MailStatus:
    if "pending" in found:
        return "pending"
    if "failed" in found:
        return "failed"
    return "sent"


def _delivery(record: dict[str, Any], created: bool) -> Delivery:
    return Delivery(id=record["_id"], kind=record["kind"], reference=record["reference"],
                    state=record["state"], status=STATUS_OF_STATE[record["state"]],
                    created=created)
