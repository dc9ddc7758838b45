"""Privacy's collections, their indexes, and every write it makes.

- `consents`: one document per user (`_id` = user id): the current choices, the policy
  version accepted, a `version` counter every change compares and sets, and `receipts`, the
  append-only list of consent receipts. A change, its receipt and its `ConsentChanged` event
  are one conditional update: a receipt can never exist for a change that did not happen,
  nor a change without its receipt.
- `visitor_consents`: the cookie choice of a visitor not signed in (`visitors.py`), under
  the SHA-256 of the token their browser keeps, with its receipts; it expires with the
  cookie, or moves into the account's consent when the visitor signs up.
- `requests`: data subject requests (export, erasure): status, due date, per-service status,
  and the outbox (`ErasureRequested`, receipts by mail). Exports due for gathering carry
  `next_attempt_at` (indexed). Finished requests are pseudonymised and carry `purge_at`.
- `export_chunks`: a finished export, sealed, in chunks of at most 1 MiB; expire with it.
- `ledger`: who asked what when and the outcome, no content, the subject as an HMAC of the
  user id; kept `JICM_RETENTION_LEDGER_DAYS` and never touched by an erasure.
- `throttle`: rate-limit counters (keyed by hashes, never by a raw id).
- `erasures`: privacy's own answers in the erasure saga (`shared.privacy`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.privacy.metrics import REQUESTS_MADE
from services.privacy.records import (
    COMPLETE,
    DONE,
    ERASURE,
    IN_PROGRESS,
    OPEN,
    PENDING,
    PrivacyRequest,
    RequestPart,
)
from shared.events.outbox import new_document_with_events, strip_outbox, with_event
from shared.storage import Database, DuplicateKeyError, Index
from shared.throttle import THROTTLE_INDEXES, Throttle

CONSENTS = "consents"
VISITOR_CONSENTS = "visitor_consents"
REQUESTS = "requests"
EXPORT_CHUNKS = "export_chunks"
LEDGER = "ledger"
THROTTLE = "throttle"

INDEXES: dict[str, list[Index]] = {
    CONSENTS: [],
    VISITOR_CONSENTS: [Index.on("expires_at", expire_after_seconds=0)],
    REQUESTS: [
        Index.on("user_id", "type", "status"),  # a user's requests, and the open one of a type
        Index.on("next_attempt_at"),  # exports due for gathering
        Index.on("status", "due_at"),  # operators: open and overdue requests
        Index.on("purge_at", expire_after_seconds=0),
    ],
    EXPORT_CHUNKS: [Index.on("request_id", "n"), Index.on("expires_at", expire_after_seconds=0)],
    LEDGER: [Index.on("subject"), Index.on("requested_at"),
             Index.on("expires_at", expire_after_seconds=0)],
    THROTTLE: THROTTLE_INDEXES,
}

# A user has a handful of requests in a lifetime; this only bounds a runaway answer.
LIST_LIMIT = 200


class PrivacyRepository:
    """Consents, requests, exports and the ledger, over privacy's own database."""

    def __init__(self, db: Database) -> None:
        self.consents = db.collection(CONSENTS)
        self.visitor_consents = db.collection(VISITOR_CONSENTS)
        self.requests = db.collection(REQUESTS)
        self.export_chunks = db.collection(EXPORT_CHUNKS)
        self.ledger = db.collection(LEDGER)
        self.throttle = Throttle(db.collection(THROTTLE))

    # Consent --------------------------------------------------------------------------

    def consent(self, user_id: str) -> dict[str, Any] | None:
        return strip_outbox(self.consents.get(user_id))

    def ensure_consent(self, user_id: str, defaults: dict[str, Any]) -> dict[str, Any]:
        """The user's consent document, created with everything off if there is none."""
        try:
            doc = self.consents.update_one({"_id": user_id}, {"$setOnInsert": defaults},
                                           upsert=True)
        except DuplicateKeyError:  # created by a racing request: read it
            doc = self.consents.get(user_id)
        return strip_outbox(doc)

    def change_consent(self, doc: dict[str, Any], fields: dict[str, Any], receipt: dict,
                       event: dict, now: datetime) -> dict | None:
        """Compare-and-set on `version`: new choices, their receipt and ConsentChanged in one
        write. None when the document changed since it was read (read it again)."""
        update = {"$set": {**fields, "updated_at": now}, "$inc": {"version": 1},
                  "$push": {"receipts": receipt}}
        return strip_outbox(self.consents.update_one(
            {"_id": doc["_id"], "version": doc["version"]}, with_event(update, event, now=now)))

    def add_receipt(self, doc: dict[str, Any], fields: dict[str, Any], receipt: dict,
                    now: datetime) -> dict | None:
        """A receipt that changes no choice (the policy accepted at sign-up)."""
        return strip_outbox(self.consents.update_one(
            {"_id": doc["_id"], "version": doc["version"]},
            {"$set": fields, "$inc": {"version": 1}, "$push": {"receipts": receipt}}))

    def adopt_receipts(self, doc: dict[str, Any], fields: dict[str, Any],
                       receipts: list[dict], event: dict | None, now: datetime) -> dict | None:
        """Compare-and-set on `version`: a visitor's choices and receipts join the account
        (with ConsentChanged when a choice changed), in one write."""
        update: dict[str, Any] = {"$set": {**fields, "updated_at": now}, "$inc": {"version": 1},
                                  "$push": {"receipts": {"$each": receipts}}}
        if event is not None:
            update = with_event(update, event, now=now)
        return strip_outbox(self.consents.update_one(
            {"_id": doc["_id"], "version": doc["version"]}, update))

    # Visitors' cookie choices -----------------------------------------------------------

    def visitor_consent(self, visitor_id: str) -> dict[str, Any] | None:
        return self.visitor_consents.get(visitor_id)

    def add_visitor_consent(self, doc: dict[str, Any]) -> dict[str, Any] | None:
        """The visitor's first choice; None if another request recorded one meanwhile."""
        try:
            return self.visitor_consents.insert(doc)
        except DuplicateKeyError:
            return None

    def change_visitor_consent(self, doc: dict[str, Any], cookies: dict[str, bool],
                               receipt: dict | None, now: datetime,
                               expires_at: datetime) -> dict | None:
        """Compare-and-set on `version`: the new choice (and its receipt, if it changed
        anything) and the record's new expiry."""
        update: dict[str, Any] = {"$set": {"cookies": cookies, "updated_at": now,
                                           "expires_at": expires_at},
                                  "$inc": {"version": 1}}
        if receipt is not None:
            update["$push"] = {"receipts": receipt}
        return self.visitor_consents.update_one(
            {"_id": doc["_id"], "version": doc["version"]}, update)

    def delete_visitor_consent(self, visitor_id: str) -> bool:
        return self.visitor_consents.delete_one({"_id": visitor_id})

    # Requests -------------------------------------------------------------------------

    def add_request(self, request: PrivacyRequest, *events: dict, now: datetime) -> None:
        self.requests.insert(new_document_with_events(request.to_doc(), *events, now=now))
        REQUESTS_MADE.labels(request.type).inc()

    def request(self, request_id: str) -> PrivacyRequest | None:
        return _record(self.requests.get(request_id))

    def request_of(self, user_id: str, request_id: str) -> PrivacyRequest | None:
        """The request if it is `user_id`'s; another user's is None, like none at all."""
        request = self.request(request_id)
        return request if request is not None and request.user_id == user_id else None

    def requests_of(self, user_id: str) -> list[PrivacyRequest]:
        found = self.requests.find({"user_id": user_id}, limit=LIST_LIMIT)
        return [PrivacyRequest.from_doc(doc)
                for doc in sorted(found, key=lambda d: d["created_at"])]

    def open_request(self, user_id: str, request_type: str) -> PrivacyRequest | None:
        for status in OPEN:
            doc = self.requests.find_one({"user_id": user_id, "type": request_type,
                                          "status": status})
            if doc is not None:
                return PrivacyRequest.from_doc(doc)
        return None

    def due_exports(self, now: datetime, limit: int) -> list[PrivacyRequest]:
        return [PrivacyRequest.from_doc(doc) for doc in self.requests.find(
            {"next_attempt_at": {"$lte": now}}, sort=[("next_attempt_at", 1)], limit=limit)]

    def claim_export(self, request: PrivacyRequest, lease_until: datetime,
                     now: datetime) -> PrivacyRequest | None:
        """Compare-and-set on the due time: of several gatherers, one takes the export."""
        return _record(self.requests.update_one(
            {"_id": request.id, "next_attempt_at": request.next_attempt_at},
            {"$set": {"next_attempt_at": lease_until, "status_changed_at": now},
             "$inc": {"attempts": 1}}))

    def update_held(self, request: PrivacyRequest, update: dict, event: dict | None = None,
                    now: datetime | None = None) -> PrivacyRequest | None:
        """Write `update` to an export while this gatherer's claim still holds."""
        if event is not None:
            update = with_event(update, event, now=now)
        return _record(self.requests.update_one(
            {"_id": request.id, "next_attempt_at": request.next_attempt_at}, update))

    def mark_part(self, request_id: str, service: str,
                  part: RequestPart) -> PrivacyRequest | None:
        """Record one service's answer to an erasure, once."""
        return _record(self.requests.update_one(
            {"_id": request_id, f"services.{service}.status": {"$ne": DONE}},
            {"$set": {f"services.{service}": part.to_doc()}}))

    def start_progress(self, request_id: str, now: datetime) -> None:
        self.requests.update_one({"_id": request_id, "status": PENDING},
                                 {"$set": {"status": IN_PROGRESS, "status_changed_at": now}})

    def complete_erasure(self, request_id: str, fields: dict[str, Any], event: dict | None,
                         now: datetime) -> PrivacyRequest | None:
        """Open -> complete, once; the request keeps no user id and no address after it."""
        update: dict[str, Any] = {"$set": {**fields, "status": COMPLETE},
                                  "$unset": {"user_id": "", "email": ""}}
        if event is not None:
            update = with_event(update, event, now=now)
        return _record(self.requests.update_one(
            {"_id": request_id, "status": {"$in": list(OPEN)}}, update))

    def delete_requests_of(self, user_id: str, keep: str) -> list[str]:
        """Delete the user's other requests (their exports); returns their ids."""
        removed = []
        for doc in self.requests.find({"user_id": user_id}, limit=LIST_LIMIT):
            if doc["_id"] != keep and self.requests.delete_one({"_id": doc["_id"]}):
                removed.append(doc["_id"])
        return removed

    # Exports --------------------------------------------------------------------------

    def store_chunks(self, request_id: str, chunks: list[dict[str, Any]]) -> None:
        # Chunks of an earlier attempt that died half-way go first: ids are deterministic.
        self.export_chunks.delete_many({"request_id": request_id})
        for chunk in chunks:
            self.export_chunks.insert(chunk)

    def chunks_of(self, request_id: str) -> list[dict[str, Any]]:
        return self.export_chunks.find({"request_id": request_id}, sort=[("n", 1)])

    def delete_chunks(self, request_id: str) -> int:
        return self.export_chunks.delete_many({"request_id": request_id})

    # Ledger ---------------------------------------------------------------------------

    def record(self, entry: dict[str, Any]) -> None:
        """Write the ledger entry of a request (upsert: every change of the request
        writes the whole entry again, so a crash between two writes heals itself)."""
        fields = {key: value for key, value in entry.items() if key != "_id"}
        self.ledger.update_one({"_id": entry["_id"]}, {"$set": fields}, upsert=True)

    def erasure_asked(self, subject: str) -> bool:
        """Whether the person with this pseudonym asked (or was made) to be erased."""
        return self.ledger.find_one({"subject": subject, "type": ERASURE}) is not None

    def ledger_entries(self, subject: str) -> list[dict[str, Any]]:
        return self.ledger.find({"subject": subject}, sort=[("requested_at", 1)])

    def open_requests(self, limit: int) -> list[PrivacyRequest]:
        found: list[dict[str, Any]] = []
        for status in OPEN:
            found += self.requests.find({"status": status}, sort=[("due_at", 1)], limit=limit)
        return [PrivacyRequest.from_doc(doc)
                for doc in sorted(found, key=lambda d: d["due_at"])][:limit]


def _record(doc: dict[str, Any] | None) -> PrivacyRequest | None:
    # The record reads only its own fields: the outbox stays with the document.
    return None if doc is None else PrivacyRequest.from_doc(doc)
