"""Delivery's part in privacy: the mail log's export, erasure and retention.

- **Export.** The mail sent for a person (by their account, or to their address for no
  other account), with kind, state and times; their marketing consent as delivery knows
  it; their unsubscribes (as address hashes). Never a mail's sealed values (its links).
- **Erasure.** The person's mail records are reduced to pseudonymised counts
  (`mail_counts`: per month, kind and outcome, no person in them) and deleted, pending
  ones included: nothing more is sent on their behalf. Their consent record goes. Their
  unsubscribes stay, without their id, and their address joins the suppression list as
  a hash (SHA-256 of the case-folded address), so an erased address never gets marketing
  again. Mail addressed to them on another sender's behalf (a released message) is that
  sender's, and is left to the mail-log retention.
- **Retention.** Records older than `JICM_RETENTION_MAIL_LOG_DAYS` that are settled (sent,
  failed, suppressed) are reduced to counts the same way, once their outbox is empty (a
  record's last word, such as a reminder's `ReminderSettled`, is never deleted unsaid).
- **Receipts that forget.** Mail about an erasure (`privacy_erasure_*`) carries the address
  the person had when they asked; once such a mail has left, its record keeps only a hash
  of that address (`pipeline.py` drops it in the write that marks it sent).

`Unsubscribed` goes out through the suppression's outbox in the same write as the
suppression, so privacy records a consent receipt for every unsubscribe link used, even
if privacy is down at that moment (it records it when it is back) and without making the
one-click POST wait for, or depend on, another service.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from services.delivery.storage import FAILED, SENT, SUPPRESSED, DeliveryRepository
from services.delivery.unsubscribe import address_key
from shared.events import new_event
from shared.events.outbox import DUE_AT, with_event
from shared.storage import DuplicateKeyError

log = logging.getLogger(__name__)

SETTLED = (SENT, FAILED, SUPPRESSED)
RETENTION_BATCH = 500
EXPORT_LIMIT = 10_000
RECORD_FIELDS = ("kind", "reference", "state", "recipient", "to_name", "marketing",
                 "attempts", "created_at", "sent_at", "failed_at", "suppressed_at",
                 "last_error")


def export_user(repo: DeliveryRepository, user_id: str) -> dict[str, Any]:
    """Delivery's part of an export."""
    records = repo.deliveries.find({"user_id": user_id}, sort=[("created_at", 1)],
                                   limit=EXPORT_LIMIT)
    consent = repo.consent(user_id)
    unsubscribes = repo.suppressions.find({"user_id": user_id})
    return {
        "mail": [{"id": record["_id"], **{key: record.get(key) for key in RECORD_FIELDS}}
                 for record in records],
        "marketing_consent": None if consent is None else {
            "email": consent.get("marketing_email"), "changed_at": consent.get("changed_at")},
        "unsubscribes": [{"address_sha256": doc["_id"], "source": doc.get("source"),
                          "created_at": doc.get("created_at")} for doc in unsubscribes],
    }


def erase_user(repo: DeliveryRepository, user_id: str, email: str | None,
               now: datetime) -> dict[str, int]:
    """Reduce the person's mail to counts, forget their consent, keep their address hashed
    on the suppression list. Idempotent."""
    reduced = 0
    for record in repo.deliveries.find({"user_id": user_id}):
        reduced += reduce_record(repo, record)
    if email:
        key = email.strip().casefold()
        # Mail to their address for no account (a sign-up attempt, say), once settled.
        for record in repo.deliveries.find({"recipient_key": key}):
            if record.get("user_id") is None and record["state"] in SETTLED:
                reduced += reduce_record(repo, record)
    consent = int(repo.consents.delete_one({"_id": user_id}))
    unlinked = repo.suppressions.update_many({"user_id": user_id}, {"$unset": {"user_id": ""}})
    if email:
        repo.suppress(address_key(email), None, "erasure", now)
    return {"mail_records_reduced": reduced, "consents": consent,
            "suppressions_unlinked": unlinked, "suppressed": int(bool(email))}


def reduce_old_records(repo: DeliveryRepository, now: datetime, window: timedelta) -> int:
    """Retention: settled records older than `window` become counts. Returns how many."""
    cutoff = now - window
    reduced = 0
    while True:
        old = repo.deliveries.find({"created_at": {"$lt": cutoff}}, sort=[("created_at", 1)],
                                   limit=RETENTION_BATCH)
        settled = [record for record in old if record["state"] in SETTLED]
        for record in settled:
            reduced += reduce_record(repo, record, only_if_relayed=True)
        if len(old) < RETENTION_BATCH or not settled:
            break
    if reduced:
        log.info("retention: %d mail record(s) older than %s reduced to counts", reduced,
                 window)
    return reduced


def reduce_record(repo: DeliveryRepository, record: dict[str, Any], *,
                  only_if_relayed: bool = False) -> int:
    """Delete one record and count it (only if this call deleted it: no double counts).

    `only_if_relayed`: leave it while its outbox still holds an event to publish.
    """
    condition: dict[str, Any] = {"_id": record["_id"], "state": record["state"]}
    if only_if_relayed:
        condition[DUE_AT] = {"$exists": False}
    if not repo.deliveries.delete_one(condition):
        return 0
    month = f"{record['created_at']:%Y-%m}"
    count_id = f"{month}:{record['kind']}:{record['state']}"
    update = {"$inc": {"count": 1},
              "$setOnInsert": {"month": month, "kind": record["kind"], "state": record["state"]}}
    try:
        repo.mail_counts.update_one({"_id": count_id}, update, upsert=True)
    except DuplicateKeyError:  # another process created the counter at this very moment
        repo.mail_counts.update_one({"_id": count_id}, {"$inc": {"count": 1}})
    return 1


def announce_unsubscribe(repo: DeliveryRepository, addr_key: str, user_id: str, source: str,
                         now: datetime) -> None:
    """Suppress the address and announce `Unsubscribed` in the same write."""
    event = new_event("Unsubscribed", {"user_id": user_id, "source": source},
                      producer="delivery", now=now)
    repo.suppressions.update_one(
        {"_id": addr_key},
        with_event({"$setOnInsert": {"user_id": user_id, "source": source, "created_at": now}},
                   event, now=now),
        upsert=True,
    )
