"""Stripe's webhooks: verified, each event processed once, harmless in any order.

- The gateway hands over the raw body and the `Stripe-Signature` header untouched;
  `stripe.Webhook.construct_event` checks the HMAC with `STRIPE_WEBHOOK_SECRET` and a
  300-second timestamp tolerance. A missing, forged or stale signature is a 400 and
  changes nothing.
- Each Stripe event id is claimed under a unique key before anything happens. An event
  already processed answers 200 and does nothing (Stripe retries and replays); one that
  another request is processing right now answers 409, so Stripe tries again later
  rather than believing it delivered; a failure releases the claim for Stripe's retry.
- Handlers never trust the order of events or the state inside them: subscription
  changes re-read the subscription from Stripe (`subscriptions.py`). Invoices are
  recorded for the tax records; a paid invoice never goes back to unpaid.
- Types we do not handle are acknowledged (200) and ignored.
- A failed payment mails the user through delivery (`MailRequested`, through the outbox,
  once per invoice and attempt). The address is the one the user had when they started
  the checkout (see docs/billing.md).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

import stripe

from services.billing.billing import price_plans
from services.billing.schemas import WebhookReceipt
from services.billing.storage import BUSY, DONE, BillingRepository
from services.billing.stripe_api import Payments
from services.billing.subscriptions import SubscriptionSync, from_timestamp
from shared.config import Settings
from shared.errors import Conflict, ServiceError, Unavailable
from shared.events import new_event
from shared.plans import PLANS

log = logging.getLogger(__name__)

SIGNATURE_TOLERANCE_SECONDS = 300

SUBSCRIPTION_EVENTS = ("customer.subscription.created", "customer.subscription.updated",
                       "customer.subscription.deleted")
# Currencies Stripe counts in whole units (no cents).
ZERO_DECIMAL_CURRENCIES = frozenset({
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga",
    "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf",
})


def verify(payload: bytes, signature: str | None, secret: str | None) -> dict[str, Any]:
    """The event in `payload` if Stripe signed it within the tolerance; else a 400."""
    if not secret:
        log.error("STRIPE_WEBHOOK_SECRET is not set: refusing every webhook")
        raise Unavailable("webhooks are not configured", code="webhooks_not_configured")
    if not signature:
        raise ServiceError("the Stripe-Signature header is missing", code="missing_signature")
    try:
        stripe.Webhook.construct_event(payload, signature, secret,
                                       tolerance=SIGNATURE_TOLERANCE_SECONDS)
    except stripe.SignatureVerificationError as exc:
        log.warning("webhook refused: %s", exc.user_message)
        raise ServiceError(
            "the Stripe-Signature does not match the body, or its timestamp is outside "
            f"the {SIGNATURE_TOLERANCE_SECONDS} s tolerance",
            code="invalid_signature",
        ) from None
    except ValueError:  # not UTF-8, or not JSON
        raise ServiceError("the body is not a Stripe event", code="malformed_event") from None
    event = json.loads(payload)
    if not _looks_like_event(event):
        raise ServiceError("the body is not a Stripe event", code="malformed_event")
    return event


def _looks_like_event(event: Any) -> bool:
    return (
        isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and event["id"].startswith("evt_")
        and isinstance(event.get("type"), str)
        and isinstance((event.get("data") or {}).get("object"), dict)
    )


def id_of(value: Any) -> str | None:
    """An id from a field that holds either the id or the expanded object."""
    if isinstance(value, dict):
        return value.get("id")
    return value if isinstance(value, str) else None


def format_amount(minor_units: int | None, currency: str | None) -> str:
    """`400, "eur"` -> `4.00 EUR`."""
    code = (currency or "").lower()
    amount = int(minor_units or 0)
    if code in ZERO_DECIMAL_CURRENCIES:
        return f"{amount} {code.upper()}"
    return f"{amount / 100:.2f} {code.upper()}".strip()


def invoice_subscription(invoice: dict[str, Any]) -> str | None:
    """The invoice's subscription (API versions differ on where they keep it)."""
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    return id_of(details.get("subscription")) or id_of(invoice.get("subscription"))


class Webhooks:
    """Receives one webhook delivery."""

    def __init__(self, repo: BillingRepository, payments: Payments, settings: Settings,
                 now: datetime, request_id: str | None = None) -> None:
        self.repo = repo
        self.payments = payments
        self.settings = settings
        self.now = now
        self.request_id = request_id
        self.sync = SubscriptionSync(repo, payments, price_plans(settings), now, request_id)

    def receive(self, payload: bytes, signature: str | None) -> WebhookReceipt:
        event = verify(payload, signature, self.settings.stripe_webhook_secret)
        event_id, event_type = event["id"], event["type"]
        claim = self.repo.claim_stripe_event(event_id, event_type, self.now)
        if claim == DONE:
            log.info("Stripe event %s (%s) was already processed", event_id, event_type)
            return WebhookReceipt(received=True, outcome="duplicate")
        if claim == BUSY:
            raise Conflict("this event is being processed right now; retry later",
                           code="event_in_progress")
        try:
            outcome = self._dispatch(event_type, event["data"]["object"])
        except BaseException:
            self.repo.release_stripe_event(event_id, self.now)
            raise
        self.repo.finish_stripe_event(event_id, outcome, self.now)
        log.info("Stripe event %s (%s): %s", event_id, event_type, outcome)
        return WebhookReceipt(received=True, outcome=outcome)

    def _dispatch(self, event_type: str, obj: dict[str, Any]) -> str:
        if event_type == "checkout.session.completed":
            return self._checkout_completed(obj)
        if event_type in SUBSCRIPTION_EVENTS:
            return self._subscription_changed(obj)
        if event_type == "invoice.paid":
            return self._invoice_paid(obj)
        if event_type == "invoice.payment_failed":
            return self._invoice_payment_failed(obj)
        return "ignored: not a type billing handles"

    # Handlers ------------------------------------------------------------------------------

    def _checkout_completed(self, session: dict[str, Any]) -> str:
        if session.get("mode") != "subscription":
            return "ignored: not a subscription checkout"
        user_id = session.get("client_reference_id")
        customer_id = id_of(session.get("customer"))
        customer = self.repo.customer(user_id) if user_id else None
        if customer is None or customer_id is None:
            log.warning("checkout %s names no customer of ours; ignored", session.get("id"))
            return "ignored: unknown user"
        if not customer.get("stripe_customer_id"):
            self.repo.link_stripe_customer(user_id, customer_id)
        elif customer["stripe_customer_id"] != customer_id:
            log.error("checkout %s: customer %s is not the user's %s; ignored",
                      session.get("id"), customer_id, customer["stripe_customer_id"])
            return "ignored: customer mismatch"
        self.repo.close_checkout(user_id, session["id"])
        subscription_id = id_of(session.get("subscription"))
        if subscription_id is None:
            return "processed: no subscription yet"
        return self.sync.sync(subscription_id, customer_id)

    def _subscription_changed(self, subscription: dict[str, Any]) -> str:
        customer_id = id_of(subscription.get("customer"))
        if not subscription.get("id") or customer_id is None:
            return "ignored: subscription without id or customer"
        return self.sync.sync(subscription["id"], customer_id)

    def _invoice_paid(self, invoice: dict[str, Any]) -> str:
        customer = self._invoice_customer(invoice)
        if customer is None:
            return "ignored: unknown customer"
        self._record_invoice(customer["_id"], invoice)
        subscription_id = invoice_subscription(invoice)
        if subscription_id is None:
            return "processed: invoice recorded"
        return self.sync.sync(subscription_id, customer["stripe_customer_id"])

    def _invoice_payment_failed(self, invoice: dict[str, Any]) -> str:
        customer = self._invoice_customer(invoice)
        if customer is None:
            return "ignored: unknown customer"
        stored = self._record_invoice(customer["_id"], invoice)
        if stored.get("status") == "paid":
            return "ignored: the invoice was paid meanwhile"
        mailed = self._request_failure_mail(customer, invoice)
        subscription_id = invoice_subscription(invoice)
        synced = (self.sync.sync(subscription_id, customer["stripe_customer_id"])
                  if subscription_id else "no subscription")
        return f"{'mailed' if mailed else 'already mailed'}; {synced}"

    # Invoices and mail -----------------------------------------------------------------

    def _invoice_customer(self, invoice: dict[str, Any]) -> dict[str, Any] | None:
        customer_id = id_of(invoice.get("customer"))
        customer = self.repo.customer_by_stripe_id(customer_id) if customer_id else None
        if customer is None:
            log.warning("invoice %s belongs to customer %s, unknown here; ignored",
                        invoice.get("id"), customer_id)
        return customer

    def _record_invoice(self, user_id: str, invoice: dict[str, Any]) -> dict[str, Any]:
        transitions = invoice.get("status_transitions") or {}
        return self.repo.record_invoice({
            "_id": invoice["id"],
            "user_id": user_id,
            "subscription_id": invoice_subscription(invoice),
            "number": invoice.get("number"),
            "currency": invoice.get("currency"),
            "amount_due": invoice.get("amount_due"),
            "amount_paid": invoice.get("amount_paid"),
            "total": invoice.get("total"),
            "status": invoice.get("status"),
            "created": from_timestamp(invoice.get("created")),
            "period_start": from_timestamp(invoice.get("period_start")),
            "period_end": from_timestamp(invoice.get("period_end")),
            "paid_at": from_timestamp(transitions.get("paid_at")),
            "updated_at": self.now,
        })

    def _request_failure_mail(self, customer: dict[str, Any], invoice: dict[str, Any]) -> bool:
        email = customer.get("email") or invoice.get("customer_email")
        if not email:
            log.error("payment failed for %s but no address is known; no mail", customer["_id"])
            return False
        marker = f"{invoice['id']}:{invoice.get('attempt_count') or 1}"
        plan = PLANS.get(customer.get("plan", ""), None)
        next_attempt = from_timestamp(invoice.get("next_payment_attempt"))
        mail = new_event(
            "MailRequested",
            {
                "kind": "payment_failed",
                "reference": marker,
                "to": email,
                "user_id": customer["_id"],
                "context": {
                    "amount": format_amount(invoice.get("amount_due"), invoice.get("currency")),
                    "plan": plan.title if plan else "",
                    "invoice_number": invoice.get("number") or "",
                    "next_attempt_at": next_attempt.isoformat() if next_attempt else "",
                    "billing_url": f"{self.settings.public_url}/app/billing",
                },
            },
            producer="billing",
            now=self.now,
            request_id=self.request_id,
        )
        return self.repo.request_payment_failure_mail(customer["_id"], marker, mail, self.now)
