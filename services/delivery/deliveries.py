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

from services.delivery import privacy, reminders
from services.delivery.context_seal import ContextSeal
from services.delivery.kinds import kind_named
from services.delivery.records import MailRecord
from services.delivery.render import placeholders, render
from services.delivery.schemas import (
    Delivery,
    MailRequest,
    MailStatus,
    ReminderStatus,
    StatusRequest,
)
from services.delivery.storage import (
    QUEUED,
    WAITING,
    DeliveryRepository,
)
from services.delivery.unsubscribe import BadToken, address_key, read_token
from shared.errors import InvalidInput, NotFound
from shared.events.schemas import ConsentChanged


def normalize_recipient(raw: str) -> tuple[str, str]:
    """(address to write to, key for the unique index); InvalidInput for a bad address."""
    try:
        checked = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidInput(f"to: {exc}", code="invalid_email", details={"field": "to"}) from None
    return checked.normalized, checked.normalized.casefold()


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
        doc, created = self.repo.add(self._new_record(request, recipient, recipient_key,
                                                      kind.marketing))
        record = MailRecord.from_doc(doc)
        if not created and kind.holds_release:
            record = self._asked_again(record)
        if created or record.state in WAITING:
            self.wake_sender()
        return _delivery(record, created)

    def _asked_again(self, record: MailRecord) -> MailRecord:
        """A mail a switch waits for was asked for again: the switch has not heard of it."""
        if record.status in ("sent", "bounced"):
            # The first announcement was lost on the way (or is still on it): say it again.
            event = reminders.settled_event(record, record.status, record.settled_at or self.now)
            self.repo.announce(record.id, event, self.now)
            return record
        if record.status == "failed":
            requeued = self.repo.requeue_failed(record.id, self.now)
            return MailRecord.from_doc(requeued) if requeued else record
        return record

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
        """Per reference: unknown, pending, sent, bounced or failed (all recipients taken
        together: the gravest wins)."""
        statuses: dict[str, MailStatus] = {ref: "unknown" for ref in request.references}
        seen: dict[str, list[MailStatus]] = {}
        for record in self._records(request.kind, request.references):
            seen.setdefault(record.reference, []).append(record.status)
        for reference, found in seen.items():
            statuses[reference] = _combined(found)
        return statuses

    def reminder_status(self, references: list[str]) -> dict[str, ReminderStatus]:
        """Per reminder: its status, when it settled, and the last error while it waits."""
        answers = {ref: ReminderStatus(status="unknown") for ref in references}
        for record in self._records(reminders.KIND, references):
            answers[record.reference] = ReminderStatus(
                status=record.status, settled_at=record.settled_at, last_error=record.last_error)
        return answers

    def _records(self, kind: str, references: list[str]) -> list[MailRecord]:
        if not references:
            return []
        return [MailRecord.from_doc(doc)
                for doc in self.repo.of_references(kind, list(set(references)))]

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



def marketing_allowed(repo: DeliveryRepository, record: MailRecord) -> bool:
    """Marketing is opt-in: consent given by the user and the address never unsubscribed."""
    if not record.user_id or repo.is_suppressed(address_key(record.recipient)):
        return False
    consent = repo.consent(record.user_id)
    return bool(consent and consent.get("marketing_email"))


def _combined(found: list[MailStatus]) -> MailStatus:
    for status in ("pending", "failed", "bounced"):
        if status in found:
            return status
    return "sent"


def _delivery(record: MailRecord, created: bool) -> Delivery:
    return Delivery(id=record.id, kind=record.kind, reference=record.reference,
                    state=record.state, status=record.status, created=created)
