"""Erasing a user from billing, as the privacy saga's `ErasureRequested` asks.

Order matters for a retry after a crash: Stripe first (cancel every subscription, then
delete the customer: both idempotent, and "already gone" counts as done), our own
records last, so the Stripe ids needed to finish are never lost before the job is.

What stays: the invoices, because tax law requires them (GDPR Art. 17(3)(b)); only
amount, currency, dates and Stripe's invoice id and number are kept, and the user id is
replaced by a random pseudonym fixed at the first attempt (so every invoice of one
person carries the same one, even across retries). Once the customer document is gone
nothing here links the pseudonym back to the person; Stripe keeps its own copy of each
invoice under its own legal duty.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from services.billing.storage import BillingRepository
from services.billing.stripe_api import Payments

log = logging.getLogger(__name__)

# Stripe statuses after which there is nothing left to cancel.
ENDED = frozenset({"canceled", "incomplete_expired"})


def erase_customer(repo: BillingRepository, payments: Payments, user_id: str,
                   now: datetime) -> dict[str, int]:
    """Cancel, delete, pseudonymise. Idempotent; returns what this call did."""
    summary = {"subscriptions_canceled": 0, "customers_deleted": 0, "invoices_pseudonymised": 0,
               "records_deleted": 0}
    customer = repo.begin_erasure(user_id, f"erased-{uuid.uuid4()}", now)
    if customer is None:
        return summary  # billing never knew this user, or a previous call finished
    for subscription_id, snapshot in (customer.get("subscriptions") or {}).items():
        if snapshot["status"] not in ENDED and payments.cancel_subscription(subscription_id):
            summary["subscriptions_canceled"] += 1
    stripe_customer_id = customer.get("stripe_customer_id") or _unlinked_customer(
        payments, customer)
    # Deleting the customer also cancels any subscription we had not heard of yet.
    if stripe_customer_id and payments.delete_customer(stripe_customer_id):
        summary["customers_deleted"] += 1
    summary["invoices_pseudonymised"] = repo.pseudonymise_invoices(
        user_id, customer["erasure"]["pseudonym"], now)
    summary["records_deleted"] = int(repo.forget_customer(user_id))
    log.info("erased billing data of a user: %s", summary)
    return summary


def _unlinked_customer(payments: Payments, customer: dict) -> str | None:
    """A Stripe customer created for the user but never recorded (crash in between)."""
    if not customer.get("email"):
        return None
    found = payments.find_customer(user_id=customer["_id"], email=customer["email"])
    return found["id"] if found else None
