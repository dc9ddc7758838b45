"""From Stripe's subscriptions to a user's plan, in order, whatever order webhooks arrive in.

Webhooks arrive late, twice, and out of order, and Stripe's timestamps have one-second
resolution: a subscription is often created `incomplete` and updated to `active` within
the same second, so comparing `created` cannot tell which event is newer. Instead,
every subscription event makes billing re-read the subscription from Stripe, which
always answers with its current state, and two rules keep the newest read:

1. Before reading, take a ticket (an atomic `$inc` per subscription on the user's
   document). A snapshot is written only if its ticket is higher than the snapshot's
   already stored. A read that started later carries a higher ticket, and every change
   in Stripe is followed by an event whose read starts after it, so the last write
   standing is always Stripe's latest state.
2. The plan derived from all of a user's snapshots is written with a compare-and-set
   on the document's `version`; a concurrent change makes the write miss, and the
   derivation runs again on fresh data.

A `PlanChanged` event goes out in the same write whenever the plan, its status or its
entitlements change; its `revision` is the document's new `version`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from services.billing.storage import BillingRepository
from services.billing.stripe_api import Payments
from shared.errors import Unavailable
from shared.events import new_event
from shared.plans import ENTITLED_STATUSES, FREE, NO_SUBSCRIPTION, PAID_PLANS, PLANS

log = logging.getLogger(__name__)

MAX_WRITE_ATTEMPTS = 10
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def from_timestamp(value: Any) -> datetime | None:
    """Stripe's Unix seconds as an aware UTC datetime (None stays None)."""
    if value is None:
        return None
    return datetime.fromtimestamp(int(value), tz=UTC)


def subscription_snapshot(subscription: dict[str, Any], price_plans: dict[str, str],
                          ticket: int) -> dict[str, Any]:
    """What billing keeps of a Stripe subscription."""
    items = (subscription.get("items") or {}).get("data") or []
    first = items[0] if items else {}
    price = (first.get("price") or {}).get("id")
    plan = price_plans.get(price) if price else None
    if plan is None:
        log.error("subscription %s has price %s, which is no plan of ours",
                  subscription.get("id"), price)
    # Newer API versions keep the period on the item, older ones on the subscription.
    period_end = first.get("current_period_end") or subscription.get("current_period_end")
    return {
        "status": subscription["status"],
        "price": price,
        "plan": plan,
        "created": from_timestamp(subscription.get("created")),
        "current_period_end": from_timestamp(period_end),
        "cancel_at_period_end": bool(subscription.get("cancel_at_period_end")),
        "cancel_at": from_timestamp(subscription.get("cancel_at")),
        "ticket": ticket,
    }


def plan_state(subscriptions: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The plan a user's subscriptions give: the best one still entitled, else free."""
    entitled = [snap for snap in subscriptions.values()
                if snap["status"] in ENTITLED_STATUSES and snap.get("plan") in PAID_PLANS]
    if not entitled:
        latest = max(subscriptions.values(), key=lambda s: s.get("created") or EPOCH,
                     default=None)
        return {"plan": FREE.name, "status": latest["status"] if latest else NO_SUBSCRIPTION,
                "entitlements": FREE.entitlements.as_dict(), "renews_at": None, "ends_at": None}
    best = max(entitled, key=lambda s: (PLANS[s["plan"]].rank,
                                        s.get("current_period_end") or EPOCH))
    plan = PLANS[best["plan"]]
    ending = best["cancel_at_period_end"] or best.get("cancel_at") is not None
    period_end = best.get("current_period_end")
    return {
        "plan": plan.name,
        "status": best["status"],
        "entitlements": plan.entitlements.as_dict(),
        "renews_at": None if ending else period_end,
        "ends_at": (best.get("cancel_at") or period_end) if ending else None,
    }


def plan_changed(doc: dict[str, Any], state: dict[str, Any]) -> bool:
    return any(doc.get(key) != state[key] for key in ("plan", "status", "entitlements"))


class SubscriptionSync:
    """Brings one user's plan in line with a subscription as Stripe holds it now."""

    def __init__(self, repo: BillingRepository, payments: Payments, price_plans: dict[str, str],
                 now: datetime, request_id: str | None = None) -> None:
        self.repo = repo
        self.payments = payments
        self.price_plans = price_plans
        self.now = now
        self.request_id = request_id

    def sync(self, subscription_id: str, stripe_customer_id: str) -> str:
        """Re-read the subscription and apply it. Returns what happened, for the log."""
        customer = self.repo.customer_by_stripe_id(stripe_customer_id)
        if customer is None:
            log.warning("subscription %s belongs to customer %s, unknown here; ignored",
                        subscription_id, stripe_customer_id)
            return "ignored: unknown customer"
        user_id = customer["_id"]
        ticket = self.repo.take_sync_ticket(user_id, subscription_id)
        if ticket is None:
            return "ignored: customer erased meanwhile"
        subscription = self.payments.subscription(subscription_id)
        if subscription is None:
            log.warning("Stripe has no subscription %s any more; nothing to apply",
                        subscription_id)
            return "ignored: subscription missing at Stripe"
        if subscription.get("customer") != stripe_customer_id:
            log.error("subscription %s belongs to %s, not %s; ignored", subscription_id,
                      subscription.get("customer"), stripe_customer_id)
            return "ignored: customer mismatch"
        snapshot = subscription_snapshot(subscription, self.price_plans, ticket)
        return self._apply(user_id, subscription_id, snapshot)

    def _apply(self, user_id: str, subscription_id: str, snapshot: dict[str, Any]) -> str:
        for _ in range(MAX_WRITE_ATTEMPTS):
            doc = self.repo.customer(user_id)
            if doc is None:
                return "ignored: customer erased meanwhile"
            stored = (doc.get("subscriptions") or {}).get(subscription_id)
            if stored is not None and stored["ticket"] >= snapshot["ticket"]:
                return "stale: a newer read was applied"
            subscriptions = {**(doc.get("subscriptions") or {}), subscription_id: snapshot}
            state = plan_state(subscriptions)
            fields = {f"subscriptions.{subscription_id}": snapshot, **state}
            event = self._plan_changed(user_id, state, doc) if plan_changed(doc, state) else None
            if self.repo.apply_plan_state(user_id, doc["version"], fields, event, self.now):
                return f"applied: {state['plan']} ({state['status']})"
        # Only heavy contention on one user's document gets here; Stripe retries the event.
        raise Unavailable("billing is busy with this customer; retry", code="busy")

    def _plan_changed(self, user_id: str, state: dict[str, Any], doc: dict[str, Any]) -> dict:
        return new_event(
            "PlanChanged",
            {"user_id": user_id, "plan": state["plan"], "status": state["status"],
             "entitlements": state["entitlements"], "revision": doc["version"] + 1},
            producer="billing",
            now=self.now,
            request_id=self.request_id,
        )
