"""Billing's part in privacy: export, erasure and the tax window for kept invoices.

- **Export.** The customer record (Stripe customer id, the address payment mail goes to,
  plan, status, entitlements, each subscription's snapshot, renewal and end dates) and
  every invoice kept for the person. Never the checkout's payment page URL: it is a
  capability at Stripe, not information about the person.
- **Erasure.** `erasure.erase_customer`: cancel at Stripe, delete the Stripe customer,
  keep the invoices under a random pseudonym (tax law, GDPR Art. 17(3)(b)), delete the
  rest; plus the rate-limit counters kept under the user's id. A Stripe outage fails the
  handler, which retries with back-off (and ends in the dead-letter queue an operator
  replays once Stripe answers); the erasure stays `in_progress` meanwhile.
- **Retention.** A pseudonymised invoice is deleted `JICM_RETENTION_INVOICE_DAYS` (ten
  years by default) after it was pseudonymised, which is never sooner than that long
  after it was issued: the longest tax retention we must honour.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from services.billing.billing import CHECKOUTS_PER_USER, PORTALS_PER_USER
from services.billing.erasure import erase_customer
from services.billing.storage import BillingRepository
from services.billing.stripe_api import Payments
from shared.privacy import forget_throttle

log = logging.getLogger(__name__)

CUSTOMER_FIELDS = ("stripe_customer_id", "email", "plan", "status", "entitlements",
                   "renews_at", "ends_at", "created_at", "updated_at")
INVOICE_FIELDS = ("number", "currency", "amount_due", "amount_paid", "total", "status",
                  "created", "period_start", "period_end", "paid_at", "subscription_id")


def export_user(repo: BillingRepository, user_id: str) -> dict[str, Any]:
    """Billing's part of an export."""
    customer = repo.customer(user_id)
    invoices = repo.invoices_of(user_id)
    exported_customer = None
    if customer is not None:
        exported_customer = {key: customer.get(key) for key in CUSTOMER_FIELDS}
        exported_customer["subscriptions"] = {
            subscription_id: dict(snapshot)
            for subscription_id, snapshot in (customer.get("subscriptions") or {}).items()
        }
        checkout = customer.get("checkout")
        if checkout:
            exported_customer["checkout"] = {key: checkout.get(key) for key in (
                "plan", "state", "attempt", "expires_at")}
    return {
        "customer": exported_customer,
        "invoices": [{"id": invoice["_id"], **{key: invoice.get(key) for key in INVOICE_FIELDS}}
                     for invoice in invoices],
    }


def erase_user(repo: BillingRepository, payments: Payments, user_id: str,
               now: datetime) -> dict[str, int]:
    """Billing's part of an erasure. Idempotent."""
    summary = erase_customer(repo, payments, user_id, now)
    summary["throttle_counters"] = forget_throttle(
        repo.throttle.collection, (CHECKOUTS_PER_USER.scope, PORTALS_PER_USER.scope), user_id)
    return summary


def purge_old_invoices(repo: BillingRepository, now: datetime, window: timedelta) -> int:
    """Retention: delete pseudonymised invoices past the tax window. Returns how many."""
    removed = repo.invoices.delete_many({"pseudonymised_at": {"$lt": now - window}})
    if removed:
        log.info("retention: %d pseudonymised invoice(s) past %s deleted", removed, window)
    return removed
