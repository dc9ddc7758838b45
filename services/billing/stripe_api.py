"""Stripe, through the official library, behind a small adapter that speaks our language.

- One `StripeClient` per process, created in the dependency's `setup()` (after eventlet
  has patched sockets), sharing one `requests.Session`, so calls reuse connections
  instead of opening a TLS connection per request.
- `STRIPE_API_BASE` chooses the server: Stripe itself in production, the local stand-in
  (`deploy/local/stripe_standin.py`) in tests and `make run`.
- Every POST carries an idempotency key that the caller derives from our own ids.
- Stripe's failures become our errors: an outage (no connection, timeouts, 5xx, rate
  limiting) is `Unavailable` (503, try again); a refusal (bad request, bad key,
  idempotency clash) is `BadGateway` (502). A missing object is `StripeMissing`, which
  callers decide about. Nothing of Stripe's error text reaches a client; it is logged
  with Stripe's request id.
- Answers are plain dicts, so the domain code never handles library objects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import requests
import stripe
from nameko.extensions import DependencyProvider
from requests.adapters import HTTPAdapter

from shared.config import settings_of
from shared.errors import BadGateway, Unavailable

log = logging.getLogger(__name__)

# Seconds per attempt (connect, read). The gateway waits JICM_RPC_TIMEOUT (10 s) for the
# whole checkout, which makes up to three calls.
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 8.0
# The library retries connection errors, 409s and 5xx with the same idempotency key.
NETWORK_RETRIES = 1
CONNECTION_POOL = 10  # one connection per nameko worker (max_workers is 10)

T = TypeVar("T")


class StripeMissing(Exception):
    """Stripe has no such object (`resource_missing`)."""


class Payments:
    """The Stripe calls billing makes, with errors translated."""

    def __init__(self, client: stripe.StripeClient) -> None:
        self.client = client

    # Customers ------------------------------------------------------------------------

    def create_customer(self, *, user_id: str, email: str, idempotency_key: str) -> dict:
        return self._call(
            "create a customer",
            lambda: self.client.v1.customers.create(
                params={"email": email, "metadata": {"user_id": user_id}},
                options={"idempotency_key": idempotency_key},
            ),
        )

    def find_customer(self, *, user_id: str, email: str) -> dict | None:
        """A live customer we created earlier for `user_id` (listed by email), or None."""
        found = self._call(
            "list customers",
            lambda: self.client.v1.customers.list(params={"email": email, "limit": 100}),
        )
        for customer in found.get("data", []):
            if (customer.get("metadata") or {}).get("user_id") == user_id:
                return customer
        return None

    def delete_customer(self, customer_id: str) -> bool:
        """Delete the customer; False if Stripe no longer has it."""
        try:
            self._call("delete a customer",
                       lambda: self.client.v1.customers.delete(customer_id), missing_ok=True)
        except StripeMissing:
            return False
        return True

    # Checkout and the portal ---------------------------------------------------------

    def create_checkout_session(self, params: dict[str, Any], *, idempotency_key: str) -> dict:
        return self._call(
            "create a checkout session",
            lambda: self.client.v1.checkout.sessions.create(
                params=params, options={"idempotency_key": idempotency_key}
            ),
        )

    def expire_checkout_session(self, session_id: str, *, idempotency_key: str) -> dict:
        return self._call(
            "expire a checkout session",
            lambda: self.client.v1.checkout.sessions.expire(
                session_id, options={"idempotency_key": idempotency_key}
            ),
        )

    def checkout_session(self, session_id: str) -> dict:
        return self._call("read a checkout session",
                          lambda: self.client.v1.checkout.sessions.retrieve(session_id))

    def create_portal_session(self, *, customer_id: str, return_url: str,
                              idempotency_key: str) -> dict:
        return self._call(
            "create a portal session",
            lambda: self.client.v1.billing_portal.sessions.create(
                params={"customer": customer_id, "return_url": return_url},
                options={"idempotency_key": idempotency_key},
            ),
        )

    # Subscriptions ---------------------------------------------------------------------

    def subscription(self, subscription_id: str) -> dict | None:
        """The subscription as Stripe holds it now (canceled ones included), or None."""
        try:
            return self._call("read a subscription",
                              lambda: self.client.v1.subscriptions.retrieve(subscription_id),
                              missing_ok=True)
        except StripeMissing:
            return None

    def cancel_subscription(self, subscription_id: str) -> dict | None:
        """Cancel at once (DELETE, idempotent by nature); None if Stripe no longer has it."""
        try:
            return self._call("cancel a subscription",
                              lambda: self.client.v1.subscriptions.cancel(subscription_id),
                              missing_ok=True)
        except StripeMissing:
            return None

    # Errors ------------------------------------------------------------------------------

    def _call(self, what: str, request: Callable[[], Any], missing_ok: bool = False) -> dict:
        """Run one request; `missing_ok` turns Stripe's `resource_missing` into StripeMissing
        for the caller to decide about (elsewhere it is a refusal like any other)."""
        try:
            return request().to_dict()
        except stripe.InvalidRequestError as exc:
            if missing_ok and exc.code == "resource_missing":
                raise StripeMissing(f"{what}: {exc.user_message}") from None
            raise _refused(what, exc) from None
        except (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError) as exc:
            log.warning("Stripe unavailable while trying to %s: %s (request %s)",
                        what, type(exc).__name__, getattr(exc, "request_id", None))
            raise Unavailable(
                "the payment provider cannot be reached right now; nothing was charged, "
                "try again in a moment",
                code="payment_provider_unavailable",
            ) from None
        except stripe.StripeError as exc:
            raise _refused(what, exc) from None


def _refused(what: str, exc: stripe.StripeError) -> BadGateway:
    log.error("Stripe refused to %s: %s %s (request %s)", what, type(exc).__name__,
              exc.user_message, exc.request_id)
    return BadGateway(
        "the payment provider refused the request; nothing was charged",
        code="payment_provider_error",
    )


def new_stripe_client(api_key: str, api_base: str) -> stripe.StripeClient:
    """A client for `api_base` with bounded timeouts and a shared connection pool."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=CONNECTION_POOL)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    http_client = stripe.RequestsClient(timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), session=session)
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base},
        http_client=http_client,
        max_network_retries=NETWORK_RETRIES,
    )


class StripePayments(DependencyProvider):
    """Gives workers the process's `Payments` (one client, built once in `setup()`)."""

    def setup(self) -> None:
        settings = settings_of(self.container)
        # An empty key still builds a client: billing starts in a test without Stripe,
        # and the first call fails with a clear 502 (production requires the key).
        self.payments = Payments(
            new_stripe_client(settings.stripe_api_key or "sk_missing", settings.stripe_api_base)
        )

    def get_dependency(self, worker_ctx) -> Payments:
        return self.payments
