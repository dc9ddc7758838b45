"""Billing's use cases: the plan a user is on, starting a checkout, the customer portal.

Access is never granted here. A checkout only hands out Stripe's payment page; the
plan changes when Stripe's signed webhook says a subscription is active
(`webhooks.py`), never because a browser came back to the success URL.

Nobody pays twice:
- one Stripe customer per user, created under the idempotency key `jicm-customer-<user>`
  and stored once (a crash in between is healed by looking the customer up by address
  before creating another);
- a user with a subscription that still gives a paid plan cannot start a checkout (they
  manage it in the portal);
- at most one checkout session is open per user. Its idempotency key is
  `jicm-checkout-<user>-<plan>-<attempt>`, where `attempt` is a counter in the user's
  document that moves only when the previous session cannot be used any more (it
  expired, was paid, or is replaced by one for another plan, which is expired at Stripe
  first). Retries, double clicks and a second tab therefore all get the same session,
  so there is one page to pay on; the parameters of an attempt (its expiry included)
  are stored with it, so a replay after a crash sends exactly the same request.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from services.billing.schemas import BillingOverview, CheckoutSession, PortalSession
from services.billing.storage import BillingRepository
from services.billing.stripe_api import Payments
from shared.config import Settings
from shared.errors import BadGateway, Conflict, Gone, InvalidInput, Unavailable
from shared.plans import (
    ENTITLED_STATUSES,
    PAID_PLANS,
    PLANS,
    Entitlements,
    Plan,
    PlanLimits,
    free_limits,
)
from shared.throttle import Limit

log = logging.getLogger(__name__)

CHECKOUTS_PER_USER = Limit("checkout-user", count=20, window_seconds=60 * 60)
PORTALS_PER_USER = Limit("portal-user", count=30, window_seconds=60 * 60)

# Stripe accepts a session lifetime between 30 minutes and 24 hours.
SESSION_LIFETIME = timedelta(hours=1)
# An open session is handed out again only if the user still has time to pay on it.
REUSE_MARGIN = timedelta(minutes=10)
# A reservation whose session may never have reached Stripe can only be replayed while
# its expiry is still acceptable to Stripe (more than 30 minutes ahead).
REPLAY_MARGIN = timedelta(minutes=31)
# Portal sessions: one per user and minute, so a retried click gets the same one.
PORTAL_KEY_WINDOW_SECONDS = 60


def price_plans(settings: Settings) -> dict[str, str]:
    """Stripe price id -> our plan name, from configuration."""
    table = {settings.stripe_price_monthly: "premium_monthly",
             settings.stripe_price_yearly: "premium_yearly"}
    return {price: plan for price, plan in table.items() if price}


def limits_of(customer: dict[str, Any] | None) -> PlanLimits:
    """The limits a customer document gives (the free plan for a user billing never saw)."""
    if customer is None or "plan" not in customer:
        return free_limits()
    return PlanLimits(customer["plan"], customer["status"],
                      Entitlements.from_dict(customer["entitlements"]),
                      revision=int(customer.get("version", 0)))


class Billing:
    """Use cases of the billing service for one request."""

    def __init__(self, repo: BillingRepository, payments: Payments, settings: Settings,
                 now: datetime) -> None:
        self.repo = repo
        self.payments = payments
        self.settings = settings
        self.now = now

    # What a user is entitled to ---------------------------------------------------------

    def entitlements(self, user_id: str) -> PlanLimits:
        return limits_of(self.repo.customer(user_id))

    def overview(self, user_id: str) -> BillingOverview:
        customer = self.repo.customer(user_id) or {}
        limits = limits_of(customer or None)
        return BillingOverview(
            plan=limits.plan,
            plan_title=PLANS[limits.plan].title if limits.plan in PLANS else limits.plan,
            status=limits.status,
            entitlements=limits.entitlements.as_dict(),
            renews_at=customer.get("renews_at"),
            ends_at=customer.get("ends_at"),
            can_manage=bool(customer.get("stripe_customer_id")),
        )

    # Checkout ---------------------------------------------------------------------------

    def start_checkout(self, user_id: str, email: str, plan_name: str) -> CheckoutSession:
        """Stripe's payment page for `plan_name`; the same page again while it is open."""
        plan = self._paid_plan(plan_name)
        price = self._price_of(plan)
        self.repo.throttle.consume(CHECKOUTS_PER_USER, user_id, self.now)
        customer = self.repo.ensure_customer(user_id, email, self.now)
        self._refuse_if_subscribed(customer)
        customer = self._with_stripe_customer(customer, email)
        checkout = customer.get("checkout")
        if checkout and checkout["state"] == "creating":
            checkout = self._finish_reservation(user_id, customer, checkout)
        if checkout and checkout["state"] == "open":
            if checkout["plan"] == plan.name and checkout["expires_at"] > self.now + REUSE_MARGIN:
                return _answer(checkout)
            self._expire(checkout)
        attempt = (checkout or {}).get("attempt", 0) + 1
        reservation = self._reservation(user_id, customer, plan, price, attempt)
        if not self.repo.reserve_checkout(user_id, attempt - 1, reservation):
            raise Conflict("another checkout is being started for you; try again",
                           code="checkout_in_progress")
        return _answer(self._create_session(user_id, reservation))

    def _paid_plan(self, plan_name: str) -> Plan:
        plan = PAID_PLANS.get(plan_name)
        if plan is None:
            raise InvalidInput(f"plan must be one of {', '.join(sorted(PAID_PLANS))}",
                               code="unknown_plan", details={"field": "plan"})
        return plan

    def _price_of(self, plan: Plan) -> str:
        for price, name in price_plans(self.settings).items():
            if name == plan.name:
                return price
        log.error("no Stripe price is configured for %s", plan.name)
        raise Unavailable("this plan cannot be bought right now", code="plan_unavailable")

    def _refuse_if_subscribed(self, customer: dict[str, Any]) -> None:
        if customer.get("erasure"):
            raise Gone("this account is being erased", code="account_erased")
        for snapshot in (customer.get("subscriptions") or {}).values():
            if snapshot["status"] in ENTITLED_STATUSES:
                raise Conflict(
                    "you already have a subscription; change or cancel it in the customer "
                    "portal (POST /api/v1/billing/portal)",
                    code="already_subscribed",
                    details={"status": snapshot["status"]},
                )

    def _with_stripe_customer(self, customer: dict[str, Any], email: str) -> dict[str, Any]:
        if customer.get("stripe_customer_id"):
            return customer
        user_id = customer["_id"]
        # A crash after Stripe created the customer and before we stored it leaves one we
        # made earlier: find it rather than create a second (the idempotency key alone
        # covers 24 hours).
        found = self.payments.find_customer(user_id=user_id, email=email)
        created = found or self.payments.create_customer(
            user_id=user_id, email=email, idempotency_key=f"jicm-customer-{user_id}"
        )
        linked = self.repo.link_stripe_customer(user_id, created["id"])
        return linked or self.repo.customer(user_id)

    def _finish_reservation(self, user_id: str, customer: dict[str, Any],
                            checkout: dict[str, Any]) -> dict[str, Any] | None:
        """A reservation whose session creation was interrupted: replay it, or drop it."""
        if checkout["expires_at"] <= self.now + REPLAY_MARGIN:
            # Too late to replay; nobody ever saw its page, so nobody can pay on it.
            return {**checkout, "state": "abandoned"}
        return self._create_session(user_id, checkout)

    def _reservation(self, user_id: str, customer: dict[str, Any], plan: Plan, price: str,
                     attempt: int) -> dict[str, Any]:
        expires_at = self.now + SESSION_LIFETIME
        return {
            "attempt": attempt,
            "plan": plan.name,
            "state": "creating",
            "expires_at": expires_at,
            "idempotency_key": f"jicm-checkout-{user_id}-{plan.name}-{attempt}",
            "params": self._session_params(user_id, customer["stripe_customer_id"], price,
                                           expires_at),
        }

    def _session_params(self, user_id: str, stripe_customer_id: str, price: str,
                        expires_at: datetime) -> dict[str, Any]:
        base = self.settings.public_url
        return {
            "mode": "subscription",
            "customer": stripe_customer_id,
            "client_reference_id": user_id,
            "line_items": [{"price": price, "quantity": 1}],
            "success_url": f"{base}/app/billing/success",
            "cancel_url": f"{base}/app/billing/cancel",
            "expires_at": int(expires_at.timestamp()),
            "metadata": {"user_id": user_id},
            "subscription_data": {"metadata": {"user_id": user_id}},
        }

    def _create_session(self, user_id: str, reservation: dict[str, Any]) -> dict[str, Any]:
        try:
            session = self.payments.create_checkout_session(
                reservation["params"], idempotency_key=reservation["idempotency_key"]
            )
        except BadGateway:
            # Stripe refused this request and keeps that answer under its key: the next try
            # is a new attempt. (After an outage the key is kept: that request may have run.)
            self.repo.abandon_checkout(user_id, reservation["attempt"])
            raise
        doc = self.repo.open_checkout(user_id, reservation["attempt"], session)
        if doc is None:
            raise Conflict("another checkout was started for you meanwhile; try again",
                           code="checkout_in_progress")
        return doc["checkout"]

    def _expire(self, checkout: dict[str, Any]) -> None:
        """Close a session we will not hand out again, so it cannot be paid any more."""
        if checkout["expires_at"] <= self.now:
            return
        session = self.payments.checkout_session(checkout["session_id"])
        if session.get("status") == "complete":
            raise Conflict("your payment is being confirmed; your plan changes in a moment",
                           code="checkout_completed")
        if session.get("status") == "open":
            self.payments.expire_checkout_session(
                checkout["session_id"],
                idempotency_key=f"jicm-checkout-expire-{checkout['session_id']}",
            )

    # The customer portal ----------------------------------------------------------------

    def open_portal(self, user_id: str) -> PortalSession:
        """A Stripe Customer Portal session: change plan, card, cancel, see invoices."""
        customer = self.repo.customer(user_id)
        if not customer or not customer.get("stripe_customer_id"):
            raise Conflict("you have no billing account yet: subscribe to a plan first",
                           code="no_billing_account")
        self.repo.throttle.consume(PORTALS_PER_USER, user_id, self.now)
        window = int(self.now.timestamp()) // PORTAL_KEY_WINDOW_SECONDS
        session = self.payments.create_portal_session(
            customer_id=customer["stripe_customer_id"],
            return_url=f"{self.settings.public_url}/app/billing",
            idempotency_key=f"jicm-portal-{user_id}-{window}",
        )
        return PortalSession(url=session["url"])


def _answer(checkout: dict[str, Any]) -> CheckoutSession:
    return CheckoutSession(url=checkout["url"], plan=checkout["plan"],
                           expires_at=checkout["expires_at"])
