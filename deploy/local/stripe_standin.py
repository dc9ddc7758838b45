"""A local stand-in for Stripe: the API calls billing makes, with Stripe's shapes, over real HTTP.

`python -m deploy.local.stripe_standin --port 12111 --api-key sk_test_... --webhook-url
http://127.0.0.1:8000/webhooks/stripe` serves, on loopback:

- the API billing calls (form-encoded requests as the `stripe` library sends them, JSON
  answers and errors in Stripe's shapes): customers (create, retrieve, list by email,
  delete), checkout sessions (create, retrieve, expire), billing portal sessions (create),
  subscriptions (retrieve, cancel). `Authorization: Bearer <api key>` is checked, and an
  `Idempotency-Key` gives back the first answer (`Idempotent-Replayed: true`), never a
  second object; the same key with other parameters is Stripe's `idempotency_error`;
- the pages a user sees: `/checkout/<session>` (pay with a test card, or cancel) and
  `/portal/<session>` (cancel now or at period end, resume, fail or settle a payment);
- webhooks: every change emits the event Stripe would send, signed with the real scheme
  (`Stripe-Signature: t=<unix>,v1=<HMAC-SHA256(secret, "<t>.<payload>")>`) and delivered to
  `--webhook-url` in the background, retried with back-off on failure as Stripe does;
- `/_control/...` for tests: inject outages (503) and API errors, read the request and
  event logs, redeliver an event, and act as a user would (pay, cancel, fail a payment).

State lives in memory and, with `--state FILE`, in a JSON file rewritten on every change,
so `make run` survives a restart. The webhook secret defaults to local mode's
`STRIPE_WEBHOOK_SECRET` (`var/secrets.env`), the one billing verifies with.

Tests may also run it in-process: `StripeStandIn(...).serve_in_thread()`.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import heapq
import hmac
import html
import http.client
import itertools
import json
import logging
import re
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

log = logging.getLogger("stripe-standin")

API_VERSION = "2026-10-28.endive"
DEFAULT_PORT = 12111
DAY = 86_400
PERIODS = {"month": 30 * DAY, "year": 365 * DAY}
CHECKOUT_MIN_LIFETIME, CHECKOUT_MAX_LIFETIME = 30 * 60, 24 * 60 * 60
WEBHOOK_RETRY_DELAYS = (1, 2, 4, 8, 16, 30, 30, 30)
WEBHOOK_TIMEOUT = 10.0


@dataclass(frozen=True)
class Price:
    """A recurring price the stand-in sells."""

    id: str
    unit_amount: int
    currency: str
    interval: str

    def as_stripe(self, created: int) -> dict[str, Any]:
        return {
            "id": self.id, "object": "price", "active": True, "billing_scheme": "per_unit",
            "created": created, "currency": self.currency, "livemode": False,
            "lookup_key": None, "metadata": {}, "nickname": None, "product": "prod_jicm_premium",
            "recurring": {"interval": self.interval, "interval_count": 1,
                          "usage_type": "licensed"},
            "type": "recurring", "unit_amount": self.unit_amount,
            "unit_amount_decimal": str(self.unit_amount),
        }


DEFAULT_PRICES = (
    Price("price_jicm_premium_monthly", 400, "eur", "month"),
    Price("price_jicm_premium_yearly", 4000, "eur", "year"),
)


class StripeFailure(Exception):
    """An error answer in Stripe's shape."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = (
            status, message, type_, code, param)

    def body(self) -> dict[str, Any]:
        error = {"type": self.type, "message": self.message}
        if self.code:
            error["code"] = self.code
        if self.param:
            error["param"] = self.param
        return {"error": error}


def missing(kind: str, object_id: str) -> StripeFailure:
    return StripeFailure(404, f"No such {kind}: '{object_id}'", code="resource_missing",
                         param="id")


# --- form decoding, as the stripe library encodes ------------------------------------------


def decode_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """`a[b]=1&items[0][price]=p` -> `{"a": {"b": "1"}, "items": [{"price": "p"}]}`."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+", key)
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if parts:
            node[parts[-1]] = value
    return _lists(root)


def _lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {key: _lists(value) for key, value in node.items()}
    if converted and all(key.isdigit() for key in converted):
        return [converted[key] for key in sorted(converted, key=int)]
    return converted


# --- signing -----------------------------------------------------------------------------


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header for `payload`, with Stripe's real scheme."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


# --- the stand-in --------------------------------------------------------------------------


@dataclass
class Fault:
    """An injected failure for API requests whose path starts with `path`."""

    status: int = 503
    remaining: int | None = None  # None: until cleared
    path: str = "/v1/"
    type: str = "api_error"
    code: str | None = None
    message: str = "The stand-in is simulating an outage."


@dataclass
class Delivery:
    event_id: str
    attempts: int = 0
    statuses: list[int | str] = field(default_factory=list)
    delivered: bool = False


class StripeStandIn:
    """Stripe's API, pages and webhooks for one test account, in one process."""

    def __init__(self, *, api_key: str, webhook_secret: str | None = None,
                 webhook_url: str | None = None, prices: tuple[Price, ...] = DEFAULT_PRICES,
                 state_file: Path | None = None, clock: Callable[[], float] = time.time) -> None:
        self.api_key = api_key
        self.webhook_secret = webhook_secret
        self.webhook_url = webhook_url
        self.prices = {price.id: price for price in prices}
        self.state_file = state_file
        self.clock = clock
        self.public_url = ""
        self.lock = threading.RLock()
        self.faults: list[Fault] = []
        self.requests: list[dict[str, Any]] = []
        self.deliveries: dict[str, Delivery] = {}
        # Deliveries due, as a heap of (monotonic due time, tie breaker, event id).
        self._due: list[tuple[float, int, str]] = []
        self._wakeup = threading.Condition()
        self._sequence = itertools.count(1)
        self.state = self._load()
        self._server = None
        self._threads: list[threading.Thread] = []
        self._running = False

    # Running ----------------------------------------------------------------------------

    def serve_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start serving (port 0: any free one) and delivering; returns the base URL."""
        self._server = make_server(host, port, self.wsgi, threaded=True)
        self.public_url = f"http://{host}:{self._server.server_port}"
        self._running = True
        for target in (self._server.serve_forever, self._deliver_loop):
            thread = threading.Thread(target=target, daemon=True, name=f"standin-{target.__name__}")
            thread.start()
            self._threads.append(thread)
        log.info("Stripe stand-in at %s (webhooks to %s)", self.public_url,
                 self.webhook_url or "nowhere: no --webhook-url")
        return self.public_url

    def shutdown(self) -> None:
        with self._wakeup:
            self._running = False
            self._wakeup.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def now(self) -> int:
        return int(self.clock())

    # Persistence ------------------------------------------------------------------------

    def _load(self) -> dict[str, Any]:
        empty = {"customers": {}, "checkout_sessions": {}, "portal_sessions": {},
                 "subscriptions": {}, "invoices": {}, "events": [], "idempotency": {}}
        if self.state_file and self.state_file.exists():
            return {**empty, **json.loads(self.state_file.read_text())}
        return empty

    def _save(self) -> None:
        if not self.state_file:
            return
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state))
        tmp.replace(self.state_file)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{secrets.token_hex(12)}"

    # WSGI -------------------------------------------------------------------------------

    def wsgi(self, environ, start_response):
        request = Request(environ)
        try:
            response = self._route(request)
        except StripeFailure as failure:
            response = _json(failure.body(), failure.status)
        return response(environ, start_response)

    def _route(self, request: Request) -> Response:
        path = request.path
        if path.startswith("/v1/"):
            return self._api(request)
        if path.startswith("/_control/"):
            return self._control(request)
        if path.startswith("/checkout/"):
            return self._checkout_page(request)
        if path.startswith("/portal/"):
            return self._portal_page(request)
        message = f"Unrecognized request URL ({request.method}: {path})."
        return _json({"error": {"type": "invalid_request_error", "message": message}}, 404)

    # The API ----------------------------------------------------------------------------

    def _api(self, request: Request) -> Response:
        self._check_key(request)
        key = request.headers.get("Idempotency-Key")
        entry = {"method": request.method, "path": request.path, "idempotency_key": key}
        with self.lock:
            self.requests.append(entry)
            fault = self._take_fault(request.path)
            if fault is not None:
                entry["status"] = fault.status
                raise StripeFailure(fault.status, fault.message, type_=fault.type,
                                    code=fault.code)
            params = decode_form(list(request.form.items(multi=True))
                                 or list(request.args.items(multi=True)))
            if request.method == "POST" and key:
                return self._idempotent(request, key, params, entry)
            status, body = self._dispatch(request.method, request.path, params)
            entry["status"] = status
            return _json(body, status)

    def _check_key(self, request: Request) -> None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not hmac.compare_digest(token.encode(), self.api_key.encode()):
            shown = (token[:7] + "*" * 4) if token else "(none)"
            raise StripeFailure(401, f"Invalid API Key provided: {shown}")

    def _take_fault(self, path: str) -> Fault | None:
        for fault in self.faults:
            if path.startswith(fault.path):
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self.faults.remove(fault)
                return fault
        return None

    def _idempotent(self, request: Request, key: str, params: dict, entry: dict) -> Response:
        fingerprint = hashlib.sha256(
            json.dumps([request.path, params], sort_keys=True).encode()).hexdigest()
        saved = self.state["idempotency"].get(key)
        if saved is not None:
            if saved["fingerprint"] != fingerprint:
                entry["status"] = 400
                raise StripeFailure(
                    400, "Keys for idempotent requests can only be used with the same "
                         f"parameters they were first used with. Try using a key other than "
                         f"'{key}' if you meant to execute a different request.",
                    type_="idempotency_error")
            entry.update(status=saved["status"], replayed=True)
            response = _json(saved["body"], saved["status"])
            response.headers["Idempotent-Replayed"] = "true"
            return response
        try:
            status, body = self._dispatch(request.method, request.path, params)
        except StripeFailure as failure:
            status, body = failure.status, failure.body()
        # Stripe saves the result of every request that started executing, errors included.
        self.state["idempotency"][key] = {"fingerprint": fingerprint, "status": status,
                                          "body": body}
        self._save()
        entry["status"] = status
        return _json(body, status)

    def _dispatch(self, method: str, path: str, params: dict) -> tuple[int, dict]:
        routes: list[tuple[str, str, Callable[..., dict]]] = [
            ("POST", r"/v1/customers", self.create_customer),
            ("GET", r"/v1/customers", self.list_customers),
            ("GET", r"/v1/customers/(?P<object_id>\w+)", self.retrieve_customer),
            ("DELETE", r"/v1/customers/(?P<object_id>\w+)", self.delete_customer),
            ("POST", r"/v1/checkout/sessions", self.create_checkout_session),
            ("GET", r"/v1/checkout/sessions/(?P<object_id>\w+)", self.retrieve_checkout_session),
            ("POST", r"/v1/checkout/sessions/(?P<object_id>\w+)/expire",
             self.expire_checkout_session),
            ("POST", r"/v1/billing_portal/sessions", self.create_portal_session),
            ("GET", r"/v1/subscriptions/(?P<object_id>\w+)", self.retrieve_subscription),
            ("DELETE", r"/v1/subscriptions/(?P<object_id>\w+)", self.cancel_subscription),
        ]
        for route_method, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if match and route_method == method:
                body = handler(params, **match.groupdict())
                self._save()
                return 200, body
        raise StripeFailure(404, f"Unrecognized request URL ({method}: {path}).")

    # Customers ------------------------------------------------------------------------

    def create_customer(self, params: dict) -> dict:
        customer = {
            "id": self.new_id("cus"), "object": "customer", "created": self.now(),
            "email": params.get("email"), "name": params.get("name"),
            "metadata": params.get("metadata") or {}, "livemode": False, "currency": None,
            "delinquent": False, "description": None,
        }
        self.state["customers"][customer["id"]] = customer
        return customer

    def list_customers(self, params: dict) -> dict:
        email = params.get("email")
        limit = int(params.get("limit") or 10)
        found = [c for c in self.state["customers"].values()
                 if not c.get("deleted") and (email is None or c.get("email") == email)]
        return {"object": "list", "url": "/v1/customers", "has_more": len(found) > limit,
                "data": found[:limit]}

    def _customer(self, customer_id: str) -> dict:
        customer = self.state["customers"].get(customer_id)
        if customer is None or customer.get("deleted"):
            raise missing("customer", customer_id)
        return customer

    def retrieve_customer(self, params: dict, object_id: str) -> dict:
        customer = self.state["customers"].get(object_id)
        if customer is None:
            raise missing("customer", object_id)
        if customer.get("deleted"):
            return {"id": object_id, "object": "customer", "deleted": True}
        return customer

    def delete_customer(self, params: dict, object_id: str) -> dict:
        customer = self._customer(object_id)
        for subscription in self.state["subscriptions"].values():
            if subscription["customer"] == object_id and subscription["status"] != "canceled":
                self._end_subscription(subscription)
        customer["deleted"] = True
        return {"id": object_id, "object": "customer", "deleted": True}

    # Checkout -------------------------------------------------------------------------

    def create_checkout_session(self, params: dict) -> dict:
        if params.get("mode") != "subscription":
            raise StripeFailure(400, "The stand-in only sells subscriptions.", param="mode")
        customer = self._customer(str(params.get("customer")))
        items = params.get("line_items") or []
        if len(items) != 1 or items[0].get("price") not in self.prices:
            price_id = items[0].get("price") if items else None
            raise StripeFailure(400, f"No such price: '{price_id}'", code="resource_missing",
                                param="line_items[0][price]")
        for url_param in ("success_url", "cancel_url"):
            if not str(params.get(url_param, "")).startswith(("http://", "https://")):
                raise StripeFailure(400, f"Not a valid URL: {url_param}", code="url_invalid",
                                    param=url_param)
        now = self.now()
        expires_at = int(params.get("expires_at") or now + CHECKOUT_MAX_LIFETIME)
        if not now + CHECKOUT_MIN_LIFETIME <= expires_at <= now + CHECKOUT_MAX_LIFETIME:
            raise StripeFailure(400, "expires_at must be between 30 minutes and 24 hours "
                                     "from now.", param="expires_at")
        price = self.prices[items[0]["price"]]
        session_id = self.new_id("cs_test")
        session = {
            "id": session_id, "object": "checkout.session", "mode": "subscription",
            "status": "open", "payment_status": "unpaid", "customer": customer["id"],
            "customer_email": None, "client_reference_id": params.get("client_reference_id"),
            "subscription": None, "invoice": None,
            "url": f"{self.public_url}/checkout/{session_id}",
            "success_url": params["success_url"], "cancel_url": params["cancel_url"],
            "expires_at": expires_at, "created": now, "livemode": False,
            "metadata": params.get("metadata") or {},
            "amount_total": price.unit_amount, "currency": price.currency,
            "line_items_price": price.id,
            "subscription_metadata": (params.get("subscription_data") or {}).get("metadata")
            or {},
        }
        self.state["checkout_sessions"][session_id] = session
        return self._public_session(session)

    def _session(self, session_id: str) -> dict:
        session = self.state["checkout_sessions"].get(session_id)
        if session is None:
            raise missing("checkout.session", session_id)
        if session["status"] == "open" and session["expires_at"] <= self.now():
            session.update(status="expired", url=None)
        return session

    def _public_session(self, session: dict) -> dict:
        return {k: v for k, v in session.items()
                if k not in ("line_items_price", "subscription_metadata")}

    def retrieve_checkout_session(self, params: dict, object_id: str) -> dict:
        return self._public_session(self._session(object_id))

    def expire_checkout_session(self, params: dict, object_id: str) -> dict:
        session = self._session(object_id)
        if session["status"] != "open":
            raise StripeFailure(400, 'Only Checkout Sessions with a status in ["open"] can be '
                                     f"expired. This session has status '{session['status']}'.")
        session.update(status="expired", url=None)
        self.emit("checkout.session.expired", self._public_session(session))
        return self._public_session(session)

    def create_portal_session(self, params: dict) -> dict:
        customer = self._customer(str(params.get("customer")))
        session_id = self.new_id("bps")
        session = {
            "id": session_id, "object": "billing_portal.session", "configuration": "bpc_standin",
            "created": self.now(), "customer": customer["id"], "livemode": False,
            "locale": None, "on_behalf_of": None, "return_url": params.get("return_url"),
            "url": f"{self.public_url}/portal/{session_id}",
        }
        self.state["portal_sessions"][session_id] = session
        return session

    # Subscriptions --------------------------------------------------------------------

    def _subscription(self, subscription_id: str) -> dict:
        subscription = self.state["subscriptions"].get(subscription_id)
        if subscription is None:
            raise missing("subscription", subscription_id)
        return subscription

    def retrieve_subscription(self, params: dict, object_id: str) -> dict:
        return self._subscription(object_id)

    def cancel_subscription(self, params: dict, object_id: str) -> dict:
        subscription = self._subscription(object_id)
        if subscription["status"] == "canceled":
            # What Stripe answers for a subscription canceled before.
            raise missing("subscription", object_id)
        return self._end_subscription(subscription)

    def _end_subscription(self, subscription: dict) -> dict:
        now = self.now()
        subscription.update(status="canceled", canceled_at=now, ended_at=now,
                            cancel_at_period_end=False)
        self.emit("customer.subscription.deleted", subscription)
        return subscription

    # What users do on the pages (also the control API) ----------------------------------

    def pay(self, session_id: str) -> dict:
        """Pay a checkout session with a test card: subscription, invoice, webhooks."""
        with self.lock:
            session = self._session(session_id)
            if session["status"] != "open":
                raise StripeFailure(400, f"This Checkout Session is {session['status']}.")
            price = self.prices[session["line_items_price"]]
            now = self.now()
            subscription = self._new_subscription(session, price, now)
            invoice = self._new_invoice(subscription, price, now, paid=True,
                                        reason="subscription_create")
            subscription["latest_invoice"] = invoice["id"]
            session.update(status="complete", payment_status="paid", url=None,
                           subscription=subscription["id"], invoice=invoice["id"])
            self.emit("customer.subscription.created", subscription)
            self.emit("invoice.paid", invoice)
            self.emit("checkout.session.completed", self._public_session(session))
            self._save()
            return subscription

    def _new_subscription(self, session: dict, price: Price, now: int) -> dict:
        subscription_id = self.new_id("sub")
        period_end = now + PERIODS[price.interval]
        subscription = {
            "id": subscription_id, "object": "subscription", "customer": session["customer"],
            "status": "active", "created": now, "start_date": now, "billing_cycle_anchor": now,
            "cancel_at_period_end": False, "cancel_at": None, "canceled_at": None,
            "ended_at": None, "collection_method": "charge_automatically",
            "currency": price.currency, "latest_invoice": None, "livemode": False,
            "metadata": session["subscription_metadata"],
            "items": {"object": "list", "has_more": False,
                      "url": f"/v1/subscription_items?subscription={subscription_id}",
                      "data": [{"id": self.new_id("si"), "object": "subscription_item",
                                "created": now, "quantity": 1, "metadata": {},
                                "subscription": subscription_id,
                                "price": price.as_stripe(now),
                                "current_period_start": now,
                                "current_period_end": period_end}]},
        }
        self.state["subscriptions"][subscription_id] = subscription
        return subscription

    def _new_invoice(self, subscription: dict, price: Price, now: int, *, paid: bool,
                     reason: str) -> dict:
        customer = self.state["customers"][subscription["customer"]]
        item = subscription["items"]["data"][0]
        number = f"JICM-{len(self.state['invoices']) + 1:04d}"
        invoice = {
            "id": self.new_id("in"), "object": "invoice", "customer": subscription["customer"],
            "customer_email": customer.get("email"), "number": number,
            "status": "paid" if paid else "open", "currency": price.currency,
            "amount_due": price.unit_amount, "amount_paid": price.unit_amount if paid else 0,
            "amount_remaining": 0 if paid else price.unit_amount, "total": price.unit_amount,
            "subtotal": price.unit_amount, "attempt_count": 1, "attempted": True,
            "billing_reason": reason, "created": now, "livemode": False,
            "period_start": item["current_period_start"],
            "period_end": item["current_period_end"],
            "next_payment_attempt": None if paid else now + 3 * DAY,
            "status_transitions": {"finalized_at": now, "paid_at": now if paid else None},
            "parent": {"type": "subscription_details",
                       "subscription_details": {"subscription": subscription["id"],
                                                "metadata": subscription["metadata"]}},
        }
        self.state["invoices"][invoice["id"]] = invoice
        return invoice

    def update_subscription(self, subscription_id: str, **changes: Any) -> dict:
        """Change a subscription as the portal would (e.g. `cancel_at_period_end=True`)."""
        with self.lock:
            subscription = self._subscription(subscription_id)
            subscription.update(changes)
            self.emit("customer.subscription.updated", subscription)
            self._save()
            return subscription

    def cancel_now(self, subscription_id: str) -> dict:
        with self.lock:
            subscription = self._subscription(subscription_id)
            if subscription["status"] != "canceled":
                self._end_subscription(subscription)
            self._save()
            return subscription

    def fail_payment(self, subscription_id: str) -> dict:
        """The renewal's payment fails: an open invoice, the subscription past due."""
        with self.lock:
            subscription = self._subscription(subscription_id)
            price = self.prices[subscription["items"]["data"][0]["price"]["id"]]
            invoice = self._open_invoice(subscription)
            if invoice is None:
                invoice = self._new_invoice(subscription, price, self.now(), paid=False,
                                            reason="subscription_cycle")
            else:
                invoice["attempt_count"] += 1
            subscription.update(status="past_due", latest_invoice=invoice["id"])
            self.emit("invoice.payment_failed", invoice)
            self.emit("customer.subscription.updated", subscription)
            self._save()
            return invoice

    def settle_payment(self, subscription_id: str) -> dict:
        """The open invoice gets paid after all: the subscription is active again."""
        with self.lock:
            subscription = self._subscription(subscription_id)
            invoice = self._open_invoice(subscription)
            if invoice is None:
                raise StripeFailure(400, "This subscription has no open invoice.")
            now = self.now()
            invoice.update(status="paid", amount_paid=invoice["amount_due"], amount_remaining=0,
                           next_payment_attempt=None)
            invoice["status_transitions"]["paid_at"] = now
            subscription.update(status="active")
            self.emit("invoice.paid", invoice)
            self.emit("customer.subscription.updated", subscription)
            self._save()
            return invoice

    def _open_invoice(self, subscription: dict) -> dict | None:
        for invoice in self.state["invoices"].values():
            details = invoice["parent"]["subscription_details"]
            if details["subscription"] == subscription["id"] and invoice["status"] == "open":
                return invoice
        return None

    # Events and webhooks -------------------------------------------------------------------

    def emit(self, event_type: str, obj: dict) -> dict:
        """Record the event Stripe would send for `obj` now, and queue its delivery."""
        event = {
            "id": self.new_id("evt"), "object": "event", "api_version": API_VERSION,
            "created": self.now(), "type": event_type, "livemode": False,
            "pending_webhooks": 1 if self.webhook_url else 0,
            "request": {"id": None, "idempotency_key": None},
            "data": {"object": copy.deepcopy(obj)},
        }
        with self.lock:
            self.state["events"].append(event)
            if self.webhook_url and self.webhook_secret:
                self.deliveries[event["id"]] = Delivery(event["id"])
                self._schedule(event["id"], time.monotonic())
        return event

    def event(self, event_id: str) -> dict:
        for event in self.state["events"]:
            if event["id"] == event_id:
                return event
        raise missing("event", event_id)

    def events_of(self, event_type: str | None = None) -> list[dict]:
        with self.lock:
            return [e for e in self.state["events"] if event_type in (None, e["type"])]

    def signed(self, event: dict, secret: str | None = None,
               timestamp: int | None = None) -> tuple[bytes, str]:
        """The payload of `event` and its `Stripe-Signature` header."""
        payload = json.dumps(event, indent=2).encode()
        return payload, sign(payload, secret or self.webhook_secret or "", timestamp)

    def redeliver(self, event_id: str) -> None:
        with self.lock:
            self.event(event_id)
            self.deliveries.setdefault(event_id, Delivery(event_id)).delivered = False
            self._schedule(event_id, time.monotonic())

    def _schedule(self, event_id: str, due: float) -> None:
        with self._wakeup:
            heapq.heappush(self._due, (due, next(self._sequence), event_id))
            self._wakeup.notify()

    def _deliver_loop(self) -> None:
        """Deliver due events one at a time, in the order they fall due."""
        while True:
            with self._wakeup:
                while self._running and (not self._due or self._due[0][0] > time.monotonic()):
                    self._wakeup.wait(self._due[0][0] - time.monotonic() if self._due else None)
                if not self._running:
                    return
                _, _, event_id = heapq.heappop(self._due)
            self._deliver(event_id)

    def _deliver(self, event_id: str) -> None:
        delivery = self.deliveries[event_id]
        with self.lock:
            event = self.event(event_id)
        payload, header = self.signed(event)
        status = _post(self.webhook_url or "", payload, header)
        delivery.attempts += 1
        delivery.statuses.append(status)
        if isinstance(status, int) and 200 <= status < 300:
            delivery.delivered = True
            return
        if delivery.attempts > len(WEBHOOK_RETRY_DELAYS):
            log.error("gave up delivering %s after %d attempts", event_id, delivery.attempts)
            return
        delay = WEBHOOK_RETRY_DELAYS[delivery.attempts - 1]
        log.warning("delivering %s failed (%s); retrying in %ss", event_id, status, delay)
        self._schedule(event_id, time.monotonic() + delay)

    # Control (tests) ------------------------------------------------------------------------

    def _control(self, request: Request) -> Response:
        path, method = request.path.removeprefix("/_control"), request.method
        body = request.get_json(silent=True) or {}
        if (method, path) == ("POST", "/faults"):
            with self.lock:
                self.faults.append(Fault(**body))
            return _json({"faults": len(self.faults)})
        if (method, path) == ("DELETE", "/faults"):
            with self.lock:
                self.faults.clear()
            return _json({"faults": 0})
        if (method, path) == ("GET", "/requests"):
            with self.lock:
                return _json({"data": list(self.requests)})
        if (method, path) == ("GET", "/events"):
            return _json({"data": [self._event_summary(e) for e in self.events_of()]})
        match = re.fullmatch(r"/(\w+)/(\w+)/(\w+)", path)
        if method != "POST" or not match:
            raise StripeFailure(404, f"Unknown control request {method} {path}")
        return _json(self._act(*match.groups(), body))

    def _act(self, kind: str, object_id: str, action: str, body: dict) -> dict:
        actions = {
            ("checkout", "pay"): lambda: self.pay(object_id),
            ("subscriptions", "cancel"): lambda: self.cancel_now(object_id),
            ("subscriptions", "update"): lambda: self.update_subscription(object_id, **body),
            ("subscriptions", "fail_payment"): lambda: self.fail_payment(object_id),
            ("subscriptions", "settle_payment"): lambda: self.settle_payment(object_id),
            ("events", "redeliver"): lambda: self.redeliver(object_id) or {"id": object_id},
        }
        act = actions.get((kind, action))
        if act is None:
            raise StripeFailure(404, f"Unknown control action {kind}/{action}")
        return act()

    def _event_summary(self, event: dict) -> dict:
        delivery = self.deliveries.get(event["id"])
        return {"id": event["id"], "type": event["type"],
                "object_id": event["data"]["object"]["id"],
                "delivered": bool(delivery and delivery.delivered),
                "attempts": delivery.attempts if delivery else 0,
                "statuses": list(delivery.statuses) if delivery else []}

    # Pages ------------------------------------------------------------------------------

    def _checkout_page(self, request: Request) -> Response:
        match = re.fullmatch(r"/checkout/(\w+)(/pay)?", request.path)
        if not match:
            return _page("Not found", "<p>There is no such page.</p>", 404)
        with self.lock:
            try:
                session = self._session(match[1])
            except StripeFailure:
                return _page("Not found", "<p>There is no such checkout.</p>", 404)
        if request.method == "POST" and match[2]:
            try:
                self.pay(session["id"])
            except StripeFailure as failure:
                return _page("Cannot pay", f"<p>{html.escape(failure.message)}</p>", 409)
            return Response(status=303, headers={"Location": session["success_url"]})
        if session["status"] != "open":
            return _page("Checkout closed",
                         f"<p>This checkout is {html.escape(session['status'])}.</p>", 410)
        price = self.prices[session["line_items_price"]]
        amount = f"{price.unit_amount / 100:.2f} {price.currency.upper()} per {price.interval}"
        body = (
            f"<p>Just in Case Premium: <strong>{html.escape(amount)}</strong></p>"
            "<p>This is the local Stripe stand-in: no card is charged.</p>"
            f'<form method="post" action="/checkout/{session["id"]}/pay">'
            '<button type="submit">Pay with test card 4242</button></form>'
            f'<p><a href="{html.escape(session["cancel_url"])}">Cancel and go back</a></p>'
        )
        return _page("Checkout", body)

    def _portal_page(self, request: Request) -> Response:
        match = re.fullmatch(r"/portal/(\w+)(?:/(\w+)/(\w+))?", request.path)
        session = self.state["portal_sessions"].get(match[1]) if match else None
        if session is None:
            return _page("Not found", "<p>There is no such portal session.</p>", 404)
        if request.method == "POST" and match[2]:
            subscription = self.state["subscriptions"].get(match[2])
            if subscription is None or subscription["customer"] != session["customer"]:
                return _page("Not found", "<p>There is no such subscription.</p>", 404)
            self._portal_action(match[2], match[3])
            return Response(status=303, headers={"Location": f"/portal/{session['id']}"})
        return _page("Your subscription", self._portal_body(session))

    def _portal_action(self, subscription_id: str, action: str) -> None:
        if action == "cancel":
            self.cancel_now(subscription_id)
        elif action == "cancel_at_period_end":
            self.update_subscription(subscription_id, cancel_at_period_end=True)
        elif action == "resume":
            self.update_subscription(subscription_id, cancel_at_period_end=False)
        elif action == "fail_payment":
            self.fail_payment(subscription_id)
        elif action == "settle_payment":
            self.settle_payment(subscription_id)

    def _portal_body(self, session: dict) -> str:
        rows = []
        for subscription in self.state["subscriptions"].values():
            if subscription["customer"] != session["customer"]:
                continue
            sid = subscription["id"]
            buttons = "".join(
                f'<form method="post" action="/portal/{session["id"]}/{sid}/{action}" '
                f'style="display:inline"><button>{label}</button></form> '
                for action, label in (("cancel", "Cancel now"),
                                      ("cancel_at_period_end", "Cancel at period end"),
                                      ("resume", "Resume"),
                                      ("fail_payment", "Simulate a failed payment"),
                                      ("settle_payment", "Pay the open invoice"))
            )
            rows.append(f"<li><code>{sid}</code>: {html.escape(subscription['status'])}"
                        f"{' (ends at period end)' if subscription['cancel_at_period_end'] else ''}"
                        f"<br>{buttons}</li>")
        back = html.escape(session.get("return_url") or "/")
        return (f"<ul>{''.join(rows) or '<li>No subscriptions.</li>'}</ul>"
                f'<p><a href="{back}">Back to Just in Case</a></p>')


# --- helpers -------------------------------------------------------------------------------


def _json(body: Any, status: int = 200) -> Response:
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    response.headers["Request-Id"] = f"req_{secrets.token_hex(7)}"
    response.headers["Stripe-Version"] = API_VERSION
    return response


def _page(title: str, body: str, status: int = 200) -> Response:
    document = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)} · Stripe stand-in</title></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return Response(document, status=status, mimetype="text/html")


def _post(url: str, payload: bytes, signature: str) -> int | str:
    """POST a webhook; the HTTP status, or the error's name when there was no answer."""
    parts = urlsplit(url)
    connection_class = (http.client.HTTPSConnection if parts.scheme == "https"
                        else http.client.HTTPConnection)
    connection = connection_class(parts.hostname or "127.0.0.1", parts.port,
                                  timeout=WEBHOOK_TIMEOUT)
    try:
        connection.request("POST", parts.path or "/", body=payload, headers={
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": signature,
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks) stand-in",
        })
        return connection.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__
    finally:
        connection.close()


def parse_price(text: str) -> Price:
    """`price_id:amount:currency:interval`, e.g. `price_x:400:eur:month`."""
    try:
        price_id, amount, currency, interval = text.split(":")
        if interval not in PERIODS:
            raise ValueError
        return Price(price_id, int(amount), currency.lower(), interval)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected price_id:amount:currency:month|year") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deploy.local.stripe_standin",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--api-key", required=True, help="the secret key billing must send")
    parser.add_argument("--webhook-url", help="where to deliver signed events")
    parser.add_argument("--webhook-secret",
                        help="signing secret (default: local mode's STRIPE_WEBHOOK_SECRET)")
    parser.add_argument("--state", type=Path, help="keep state in this JSON file")
    parser.add_argument("--price", type=parse_price, action="append", dest="prices",
                        help="a price to sell, price_id:amount:currency:interval (repeatable)")
    return parser


def local_webhook_secret() -> str | None:
    """The webhook secret local mode generated, which billing verifies with."""
    from shared.config import ConfigError, load_settings

    try:
        return load_settings().stripe_webhook_secret
    except ConfigError:
        return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    secret = args.webhook_secret or local_webhook_secret()
    if args.webhook_url and not secret:
        log.warning("no webhook secret: events are recorded but not delivered")
    standin = StripeStandIn(api_key=args.api_key, webhook_secret=secret,
                            webhook_url=args.webhook_url,
                            prices=tuple(args.prices or DEFAULT_PRICES), state_file=args.state)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    standin.serve_in_thread(args.host, args.port)
    stop.wait()
    standin.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
