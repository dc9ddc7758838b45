"""A mail record as the domain reads it: one mail to one recipient (`storage.py` says how
it is stored and which states it moves through)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.delivery.schemas import MailStatus
from services.delivery.storage import BOUNCED, FAILED, SENT, SUPPRESSED, WAITING

STATUS_OF_STATE: dict[str, MailStatus] = {
    **{state: "pending" for state in WAITING},
    SENT: "sent",
    FAILED: "failed",
    # Marketing mail held back for want of consent will never leave: as final as a bounce.
    SUPPRESSED: "failed",
}


@dataclass(frozen=True)
class MailRecord:
    """One stored mail. `recipient` is gone once a mail that forgets its address left."""

    id: str
    kind: str
    reference: str
    state: str
    attempts: int
    created_at: datetime
    queued_at: datetime
    recipient: str | None = None
    to_name: str | None = None
    user_id: str | None = None
    marketing: bool = False
    context_sealed: bytes | None = None
    next_attempt_at: datetime | None = None
    sent_at: datetime | None = None
    failed_at: datetime | None = None
    failure: str | None = None
    last_error: str | None = None

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> MailRecord:
        return cls(
            id=doc["_id"], kind=doc["kind"], reference=doc["reference"], state=doc["state"],
            attempts=doc.get("attempts", 0), created_at=doc["created_at"],
            queued_at=doc.get("queued_at", doc["created_at"]),
            recipient=doc.get("recipient"), to_name=doc.get("to_name"),
            user_id=doc.get("user_id"), marketing=doc.get("marketing", False),
            context_sealed=doc.get("context_sealed"),
            next_attempt_at=doc.get("next_attempt_at"), sent_at=doc.get("sent_at"),
            failed_at=doc.get("failed_at"), failure=doc.get("failure"),
            last_error=doc.get("last_error"),
        )

    @property
    def status(self) -> MailStatus:
        """pending, sent, bounced (the recipient's side refused the address for good) or
        failed (for any other reason: ours to fix)."""
        if self.state == FAILED and self.failure == BOUNCED:
            return "bounced"
        return STATUS_OF_STATE[self.state]

    @property
    def settled_at(self) -> datetime | None:
        """When it stopped waiting: sent, or failed for good."""
        return self.sent_at or self.failed_at
