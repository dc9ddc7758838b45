"""Delivery's collections, their indexes, and the repository the domain logic uses.

`deliveries` holds one record per mail, keyed uniquely by (kind, reference, recipient).
A record that needs the sending loop carries `next_attempt_at` (indexed): when it is due,
or, while it is being sent, when the sender's claim expires. Records that need nothing
more (sent, failed, suppressed) have none, so the loop's query touches only due mail.

States: `queued` -> `sending` -> `sent`, or -> `retrying` -> `sending` ... -> `failed`;
marketing mail without consent ends `suppressed`. A failed record says why in `failure`:
`bounced` (the recipient's side refused the address for good), `refused` (the server
refused what we sent), `gave_up` (temporary failures outlasted the retry policy) or
`unbuildable` (the mail could not be built). `sending` is written before the SMTP
conversation starts and replaced after it ends: a record still `sending` once its claim
expired was interrupted by a crash, and is sent again with the same Message-ID.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.delivery.metrics import count_outcome
from shared.events.outbox import with_event
from shared.storage import Database, DuplicateKeyError, Index

DELIVERIES = "deliveries"
CONSENTS = "consents"
SUPPRESSIONS = "suppressions"
MAIL_COUNTS = "mail_counts"

QUEUED, SENDING, RETRYING = "queued", "sending", "retrying"
SENT, FAILED, SUPPRESSED = "sent", "failed", "suppressed"
WAITING = (QUEUED, SENDING, RETRYING)
BOUNCED, REFUSED, GAVE_UP, UNBUILDABLE = "bounced", "refused", "gave_up", "unbuildable"

INDEXES: dict[str, list[Index]] = {
    DELIVERIES: [
        # The identity of a mail: a redelivered request finds its record instead of a new one.
        Index.on("kind", "reference", "recipient_key", unique=True),
        Index.on("next_attempt_at"),
        Index.on("state", "created_at"),
        Index.on("created_at"),  # retention reduces old records to counts by age
        # A person's mail, for their export and erasure (privacy.py).
        Index.on("user_id"),
        Index.on("recipient_key"),
    ],
    CONSENTS: [],
    SUPPRESSIONS: [Index.on("user_id")],
    # The mail log reduced to counts, with no person in them (privacy.py).
    MAIL_COUNTS: [],
}


class DeliveryRepository:
    """Delivery records, marketing consent and the suppression list."""

    def __init__(self, db: Database) -> None:
        self.deliveries = db.collection(DELIVERIES)
        self.consents = db.collection(CONSENTS)
        self.suppressions = db.collection(SUPPRESSIONS)
        self.mail_counts = db.collection(MAIL_COUNTS)

    # Records ------------------------------------------------------------------------

    def add(self, record: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Store a new record; (the record, True), or (the existing one, False) if known."""
        try:
            return self.deliveries.insert(record), True
        except DuplicateKeyError:
            existing = self.by_key(record["kind"], record["reference"], record["recipient_key"])
            if existing is None:  # the clash was on the _id: not a redelivery, a bug
                raise
            return existing, False

    def by_key(self, kind: str, reference: str, recipient_key: str) -> dict[str, Any] | None:
        return self.deliveries.find_one(
            {"kind": kind, "reference": reference, "recipient_key": recipient_key}
        )

    def get(self, record_id: str) -> dict[str, Any] | None:
        return self.deliveries.get(record_id)

    def of_references(self, kind: str, references: list[str]) -> list[dict[str, Any]]:
        return self.deliveries.find({"kind": kind, "reference": {"$in": references}})

    def due(self, now: datetime, limit: int) -> list[dict[str, Any]]:
        """Records whose next attempt (or expired claim) is due, the longest waiting first."""
        return self.deliveries.find(
            {"next_attempt_at": {"$lte": now}}, sort=[("next_attempt_at", 1)], limit=limit
        )

    def claim(
        self, record_id: str, next_attempt_at: datetime | None, *, now: datetime, lease: str,
        lease_until: datetime,
    ) -> dict[str, Any] | None:
        """Compare-and-set: take the record for one attempt, unless another sender did
        (or it changed) since it was read with this `next_attempt_at`."""
        return self.deliveries.update_one(
            {"_id": record_id, "next_attempt_at": next_attempt_at},
            {
                "$set": {"state": SENDING, "lease": lease, "next_attempt_at": lease_until,
                         "last_attempt_at": now},
                "$inc": {"attempts": 1},
            },
        )

    def settle(self, record_id: str, lease: str, update: dict) -> dict[str, Any] | None:
        """Apply the outcome of an attempt, if this sender's claim still holds."""
        settled = self.deliveries.update_one(
            {"_id": record_id, "state": SENDING, "lease": lease}, update
        )
        if settled is not None:
            count_outcome(settled)
        return settled

    def settle_with_event(
        self, record_id: str, lease: str, update: dict, event: dict, now: datetime
    ) -> dict[str, Any] | None:
        """`settle`, announcing `event` through the record's outbox in the same write."""
        return self.settle(record_id, lease, with_event(update, event, now=now))

    def announce(self, record_id: str, event: dict, now: datetime) -> dict[str, Any] | None:
        """Publish `event` about a record through its outbox, changing nothing else."""
        return self.deliveries.update_one({"_id": record_id}, with_event({}, event, now=now))

    def waiting(self, kind: str | None, limit: int) -> list[dict[str, Any]]:
        """Mail not sent yet, oldest first (optionally of one kind)."""
        query: dict[str, Any] = {"state": {"$in": list(WAITING)}}
        if kind:
            query["kind"] = kind
        return self.deliveries.find(query, sort=[("created_at", 1)], limit=limit)

    def failed(self, limit: int) -> list[dict[str, Any]]:
        return self.deliveries.find({"state": FAILED}, sort=[("created_at", 1)], limit=limit)

    def requeue_failed(self, record_id: str, now: datetime) -> dict[str, Any] | None:
        """Give a failed record a fresh start (operator's resend); None unless it had failed."""
        return self.deliveries.update_one(
            {"_id": record_id, "state": FAILED},
            {
                "$set": {"state": QUEUED, "next_attempt_at": now, "queued_at": now,
                         "attempts": 0},
                "$inc": {"resends": 1},
                "$unset": {"failed_at": "", "failure": ""},
            },
        )

    # Consent and suppression -----------------------------------------------------------

    def consent(self, user_id: str) -> dict[str, Any] | None:
        return self.consents.get(user_id)

    def record_consent(self, user_id: str, marketing_email: bool, changed_at: datetime) -> bool:
        """Keep the newest consent per user; False if a newer one is already known."""
        try:
            self.consents.update_one(
                {"_id": user_id, "changed_at": {"$lt": changed_at}},
                {"$set": {"marketing_email": marketing_email, "changed_at": changed_at}},
                upsert=True,
            )
        except DuplicateKeyError:
            return False  # the document exists with a newer (or the same) change
        return True

    def is_suppressed(self, address_key: str) -> bool:
        return self.suppressions.get(address_key) is not None

    def suppress(self, address_key: str, user_id: str | None, source: str, now: datetime) -> None:
        self.suppressions.update_one(
            {"_id": address_key},
            {"$setOnInsert": {"user_id": user_id, "source": source, "created_at": now}},
            upsert=True,
        )

    def lift_suppressions(self, user_id: str, before: datetime) -> int:
        """Forget a user's unsubscribes older than a newer, explicit opt-in."""
        return self.suppressions.delete_many({"user_id": user_id, "created_at": {"$lt": before}})
