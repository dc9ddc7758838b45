"""Billing's collections, their indexes, and the repository the domain code uses.

- `customers`: one document per user who ever started a checkout, keyed by user id: the
  Stripe customer id (set once), the address payment mail goes to, a snapshot of each
  of the user's subscriptions, the plan they give (`plan`, `status`, `entitlements`),
  the open checkout, and the outbox (`PlanChanged`, `MailRequested`). `version` counts
  changes of the plan state; every such write is a compare-and-set on it.
- `invoices`: what tax law asks us to keep (amount, currency, dates, Stripe's invoice id
  and number), pseudonymised when the user is erased, never deleted by erasure.
- `stripe_events`: each Stripe event id once (it is the `_id`), with its outcome; expires
  after 30 days, far beyond Stripe's three days of retries.
- `throttle`: rate-limit counters.

Users billing never heard of have no document: they are on the free plan.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from services.billing.metrics import STRIPE_EVENTS_PROCESSED
from shared.events.outbox import strip_outbox, with_event
from shared.storage import Database, DuplicateKeyError, Index
from shared.throttle import THROTTLE_INDEXES, Throttle

CUSTOMERS = "customers"
INVOICES = "invoices"
STRIPE_EVENTS = "stripe_events"
THROTTLE = "throttle"

STRIPE_EVENT_TTL = timedelta(days=30)
STRIPE_EVENT_LEASE = timedelta(minutes=2)

INDEXES: dict[str, list[Index]] = {
    # One Stripe customer per user, and the way back from Stripe's ids to ours.
    CUSTOMERS: [Index.on("stripe_customer_id", unique=True)],
    INVOICES: [Index.on("user_id"), Index.on("pseudonymised_at")],
    STRIPE_EVENTS: [Index.on("expires_at", expire_after_seconds=0)],
    THROTTLE: THROTTLE_INDEXES,
}

CLAIMED, DONE, BUSY = "claimed", "done", "busy"


class BillingRepository:
    """Customers, invoices and processed Stripe events, over billing's own database."""

    def __init__(self, db: Database) -> None:
        self.customers = db.collection(CUSTOMERS)
        self.invoices = db.collection(INVOICES)
        self.stripe_events = db.collection(STRIPE_EVENTS)
        self.throttle = Throttle(db.collection(THROTTLE))

    # Customers ----------------------------------------------------------------------

    def customer(self, user_id: str) -> dict[str, Any] | None:
        return strip_outbox(self.customers.get(user_id))

    def customer_by_stripe_id(self, stripe_customer_id: str) -> dict[str, Any] | None:
        return strip_outbox(self.customers.find_one({"stripe_customer_id": stripe_customer_id}))

    def ensure_customer(self, user_id: str, email: str, now: datetime) -> dict[str, Any]:
        """The user's document, created on first use; the payment address kept current."""
        update = {"$set": {"email": email},
                  "$setOnInsert": {"created_at": now, "version": 0, "subscriptions": {},
                                   "sync_tickets": {}}}
        try:
            doc = self.customers.update_one({"_id": user_id}, update, upsert=True)
        except DuplicateKeyError:
            # Two first checkouts raced to insert; the loser updates the winner's document.
            doc = self.customers.update_one({"_id": user_id}, update)
        return strip_outbox(doc)

    def link_stripe_customer(self, user_id: str, stripe_customer_id: str) -> dict | None:
        """Record the Stripe customer once; None if the user already has one."""
        return strip_outbox(self.customers.update_one(
            {"_id": user_id, "stripe_customer_id": {"$exists": False}},
            {"$set": {"stripe_customer_id": stripe_customer_id}},
        ))

    # Checkout -----------------------------------------------------------------------

    def reserve_checkout(self, user_id: str, previous_attempt: int,
                         checkout: dict[str, Any]) -> bool:
        """Claim the next checkout attempt; False if another request claimed it first."""
        condition: Any = previous_attempt if previous_attempt else {"$exists": False}
        doc = self.customers.update_one(
            {"_id": user_id, "checkout.attempt": condition}, {"$set": {"checkout": checkout}}
        )
        return doc is not None

    def open_checkout(self, user_id: str, attempt: int, session: dict[str, Any]) -> dict | None:
        doc = self.customers.update_one(
            {"_id": user_id, "checkout.attempt": attempt},
            {"$set": {"checkout.state": "open", "checkout.session_id": session["id"],
                      "checkout.url": session["url"]}},
        )
        return strip_outbox(doc)

    def abandon_checkout(self, user_id: str, attempt: int) -> None:
        """Stripe refused to create this attempt's session: the next try is a new attempt."""
        self.customers.update_one(
            {"_id": user_id, "checkout.attempt": attempt, "checkout.state": "creating"},
            {"$set": {"checkout.state": "abandoned"}},
        )

    def close_checkout(self, user_id: str, session_id: str) -> None:
        """The session was paid (or replaced): the next checkout is a new attempt."""
        self.customers.update_one(
            {"_id": user_id, "checkout.session_id": session_id},
            {"$set": {"checkout.state": "done"}},
        )

    # Subscriptions and the plan they give --------------------------------------------

    def take_sync_ticket(self, user_id: str, subscription_id: str) -> int | None:
        """A number that orders this read of the subscription after every earlier one."""
        doc = self.customers.update_one(
            {"_id": user_id}, {"$inc": {f"sync_tickets.{subscription_id}": 1}}
        )
        return None if doc is None else int(doc["sync_tickets"][subscription_id])

    def apply_plan_state(self, user_id: str, version: int, fields: dict[str, Any],
                         event: dict | None, now: datetime) -> dict | None:
        """Compare-and-set on `version`: write `fields` (and `event`) unless the document
        changed since it was read. None when it did: read again and recompute."""
        update: dict[str, Any] = {"$set": {**fields, "updated_at": now},
                                  "$inc": {"version": 1}}
        if event is not None:
            update = with_event(update, event, now=now)
        return strip_outbox(self.customers.update_one({"_id": user_id, "version": version},
                                                      update))

    def request_payment_failure_mail(self, user_id: str, marker: str, event: dict,
                                     now: datetime) -> bool:
        """Queue the payment-failure mail once per (invoice, attempt)."""
        doc = self.customers.update_one(
            {"_id": user_id, "last_payment_failure_mailed": {"$ne": marker}},
            with_event({"$set": {"last_payment_failure_mailed": marker}}, event, now=now),
        )
        return doc is not None

    # Invoices -------------------------------------------------------------------------

    def record_invoice(self, invoice: dict[str, Any]) -> dict[str, Any]:
        """Insert or refresh an invoice; a paid or void one is final and never regresses."""
        try:
            return self.invoices.update_one(
                {"_id": invoice["_id"], "status": {"$nin": ["paid", "void"]}},
                {"$set": {k: v for k, v in invoice.items() if k != "_id"}},
                upsert=True,
            )
        except DuplicateKeyError:
            return self.invoices.get(invoice["_id"])

    def invoices_of(self, user_id: str) -> list[dict[str, Any]]:
        return self.invoices.find({"user_id": user_id}, sort=[("created", 1)])

    # Erasure --------------------------------------------------------------------------

    def begin_erasure(self, user_id: str, pseudonym: str, now: datetime) -> dict | None:
        """Block new checkouts and fix the pseudonym (kept if a retry finds one)."""
        self.customers.update_one(
            {"_id": user_id, "erasure.pseudonym": {"$exists": False}},
            {"$set": {"erasure": {"pseudonym": pseudonym, "started_at": now}}},
        )
        return self.customer(user_id)

    def pseudonymise_invoices(self, user_id: str, pseudonym: str, now: datetime) -> int:
        return self.invoices.update_many(
            {"user_id": user_id},
            {"$unset": {"user_id": ""},
             "$set": {"holder": pseudonym, "pseudonymised_at": now}},
        )

    def forget_customer(self, user_id: str) -> bool:
        return self.customers.delete_one({"_id": user_id})

    # Stripe events: each id once ----------------------------------------------------------

    def claim_stripe_event(self, event_id: str, event_type: str, now: datetime) -> str:
        """CLAIMED if this request may process the event, else DONE or BUSY."""
        try:
            self.stripe_events.update_one(
                {"_id": event_id, "state": {"$ne": DONE}, "lease_until": {"$lte": now}},
                {"$set": {"state": "processing", "lease_until": now + STRIPE_EVENT_LEASE},
                 "$setOnInsert": {"type": event_type, "received_at": now,
                                  "expires_at": now + STRIPE_EVENT_TTL}},
                upsert=True,
            )
        except DuplicateKeyError:
            record = self.stripe_events.get(event_id)
            return DONE if record and record.get("state") == DONE else BUSY
        return CLAIMED

    def release_stripe_event(self, event_id: str, now: datetime) -> None:
        """Processing failed: Stripe's retry may claim the event at once."""
        self.stripe_events.update_one({"_id": event_id}, {"$set": {"lease_until": now}})

    def finish_stripe_event(self, event_id: str, outcome: str, now: datetime) -> None:
        self.stripe_events.update_one(
            {"_id": event_id},
            {"$set": {"state": DONE, "outcome": outcome, "processed_at": now,
                      "expires_at": now + STRIPE_EVENT_TTL}},
        )
        STRIPE_EVENTS_PROCESSED.labels(outcome).inc()
