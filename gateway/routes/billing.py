"""Plans and payment: the user's plan, Stripe Checkout, the customer portal, Stripe's webhooks.

The webhook route hands billing the raw body (base64, so not one byte changes) and the
`Stripe-Signature` header exactly as received: the signature covers those bytes, so the
gateway never parses, re-encodes or even looks at the JSON.
"""

from __future__ import annotations

import base64

from flask import Blueprint, Response, g, redirect, request

from gateway.api import operation
from gateway.auth import current_user_id
from gateway.errors import ApiError
from gateway.remote import call
from services.billing.schemas import (
    BillingOverview,
    CheckoutSession,
    PortalSession,
    StartCheckout,
    WebhookReceipt,
)

bp = Blueprint("billing", __name__)

# Checkout's return addresses before the site had billing pages; sessions and mails made
# then still point here.
RETURN_PAGES = {"success": "/app/billing/success", "canceled": "/app/billing/cancel"}


@operation(bp, "GET", "/api/v1/billing", summary="Your plan, its status and renewal date",
           tag="billing", response=BillingOverview)
def overview() -> dict:
    return call("billing", "overview", current_user_id())


@operation(bp, "POST", "/api/v1/billing/checkout", summary="Start paying for a plan",
           tag="billing", body=StartCheckout, response=CheckoutSession, status=201,
           errors=(409, 410, 502),
           description="Answers Stripe Checkout's payment page. The same page comes back "
                       "while it is open; the plan changes only once Stripe confirms the "
                       "payment. 409 when you already have a subscription (use the portal).")
def checkout(body: StartCheckout) -> dict:
    return call("billing", "start_checkout", current_user_id(), g.user["email"],
                body.model_dump(mode="json"))


@operation(bp, "POST", "/api/v1/billing/portal", summary="Manage your subscription",
           tag="billing", response=PortalSession, status=201, errors=(409, 502),
           description="Answers Stripe's customer portal: change plan or card, see invoices, "
                       "cancel. 409 when you have never subscribed.")
def portal() -> dict:
    return call("billing", "open_portal", current_user_id())


@operation(bp, "POST", "/webhooks/stripe", summary="Stripe webhooks", tag="webhooks",
           auth=False, response=WebhookReceipt, errors=(400, 409),
           description="For Stripe only: the body must carry a valid Stripe-Signature. "
                       "400 for a missing, forged or stale signature; 200 for an event "
                       "already processed or of a type billing ignores.")
def stripe_webhook() -> dict:
    signature = request.headers.get("Stripe-Signature")
    if not signature:
        # Refused here so unsigned traffic costs no call; billing refuses it too.
        raise ApiError(400, "missing_signature", "the Stripe-Signature header is missing")
    payload = base64.b64encode(request.get_data(cache=False)).decode("ascii")
    return call("billing", "receive_webhook", payload, signature)


@operation(bp, "GET", "/billing", summary="Where older Stripe sessions send the browser back",
           tag="billing", auth=False, content_type="text/html", status=303,
           description="Sends the browser on to the site's billing pages (?checkout=success "
                       "or canceled: the return pages of Checkout). It grants nothing.")
def billing_return() -> Response:
    target = RETURN_PAGES.get(request.args.get("checkout", ""), "/app/billing")
    return redirect(target, 303)
