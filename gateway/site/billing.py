"""Billing (`/app/billing`): the plans side by side, the sender's plan and its dates,
"upgrade" through Stripe Checkout and "manage" through Stripe's customer portal, and the
pages Checkout returns to.

Nothing here grants a plan. The return pages only read billing's word, which changes when
Stripe's signed webhook arrives; the success page says it is waiting for that, and looks
again until it has come. A failed payment never holds back a release: the page says so.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, flash, g, redirect, request, url_for

from gateway.errors import ApiError
from gateway.pages import sentence
from gateway.remote import call
from gateway.site.pages import render
from gateway.site.session import signed_in
from gateway.site.timefmt import parse_time, when, zone
from services.billing.schemas import StartCheckout
from shared.config import SETTINGS_CONFIG_KEY
from shared.errors import ServiceError
from shared.plans import PLANS

bp = Blueprint("site_billing", __name__)

STRIPE_API = "https://api.stripe.com"
# Where Stripe's own Checkout and customer portal pages live.
STRIPE_PAGES = ("https://checkout.stripe.com", "https://billing.stripe.com")
# Stripe's words for a subscription whose last payment did not go through.
PAYMENT_FAILED = ("past_due", "unpaid", "incomplete")
POLL_SECONDS = 3
# Refusals worded for this page (the API's words name API routes).
CHECKOUT_REFUSALS = {
    "already_subscribed": "You already have a subscription: change or cancel it with "
                          "“Manage my subscription”.",
}


def payment_pages() -> tuple[str, ...]:
    """The origins our billing forms lead to: Stripe's, or the local stand-in's (which
    serves its pages where it serves its API)."""
    base = current_app.config[SETTINGS_CONFIG_KEY].stripe_api_base
    if base.rstrip("/") == STRIPE_API:
        return STRIPE_PAGES
    parts = urlsplit(base)
    return (f"{parts.scheme}://{parts.netloc}",)


def _page(template: str, **values) -> Response:
    overview = call("billing", "overview", g.user["id"])
    tz = zone(g.user.get("time_zone"))
    return render(template, active="billing", overview=overview, plans=list(PLANS.values()),
                  current=PLANS.get(overview["plan"]),
                  payment_failed=overview["status"] in PAYMENT_FAILED,
                  when=when, parse_time=parse_time, tz=tz, now=datetime.now(UTC),
                  poll_seconds=POLL_SECONDS, **values)


@bp.get("/app/billing")
@signed_in
def billing() -> Response:
    # Its forms are answered with a redirect to Stripe: the policy must allow that.
    return _page("billing.html", form_targets=payment_pages())


@bp.post("/app/billing/checkout")
@signed_in
def checkout() -> Response:
    try:
        plan = StartCheckout.model_validate({"plan": request.form.get("plan", "")})
        session = call("billing", "start_checkout", g.user["id"], g.user["email"],
                       plan.model_dump(mode="json"))
    except ValueError:
        flash("Please choose one of the plans below.", "problem")
        return redirect(url_for(".billing"), 303)
    except (ServiceError, ApiError) as exc:
        flash(CHECKOUT_REFUSALS.get(exc.code) or sentence(exc.message), "problem")
        return redirect(url_for(".billing"), 303)
    return redirect(session["url"], 303)


@bp.post("/app/billing/portal")
@signed_in
def portal() -> Response:
    try:
        session = call("billing", "open_portal", g.user["id"])
    except (ServiceError, ApiError) as exc:
        flash(sentence(exc.message), "problem")
        return redirect(url_for(".billing"), 303)
    return redirect(session["url"], 303)


@bp.get("/app/billing/success")
@signed_in
def success() -> Response:
    return _page("billing_return.html", outcome="success")


@bp.get("/app/billing/cancel")
@signed_in
def cancel() -> Response:
    return _page("billing_return.html", outcome="cancel")
