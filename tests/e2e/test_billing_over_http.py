"""Billing end to end, as `make run` runs it: gunicorn serving the gateway, accounts,
billing and the scheduler under nameko, the Stripe stand-in as its own process delivering
signed webhooks to the gateway over HTTP. The upgrade and downgrade stories (told by the
switches a user may create), and every abuse of the webhook."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest
import requests

from deploy.local.stripe_standin import sign
from deploy.local.supervisor import STRIPE_STANDIN_DEFAULTS
from shared.config import local_secrets
from tests.e2e.conftest import System, free_port, start_system, system_environment
from tests.helpers import wait_for
from tests.stripe_helpers import control

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery staple"
API_KEY = STRIPE_STANDIN_DEFAULTS["STRIPE_API_KEY"]


@pytest.fixture(scope="module")
def billing_system(tmp_path_factory, vhost) -> Iterator[System]:
    """Accounts, billing, the scheduler, the gateway, the SMTP sink and the Stripe stand-in."""
    tmp = tmp_path_factory.mktemp("system")
    environ = system_environment(tmp, vhost, "accounts,billing,scheduler",
                                 JICM_STRIPE_STANDIN_PORT=str(free_port()))
    system = start_system(tmp, environ)
    yield system
    system.supervisor.stop_all()


def stripe_url(system: System) -> str:
    return f"http://127.0.0.1:{system.environ['JICM_STRIPE_STANDIN_PORT']}"


def webhook_secret(system: System) -> str:
    return local_secrets(system.data_dir.parent)["STRIPE_WEBHOOK_SECRET"]


def signed_in(system: System) -> tuple[str, dict]:
    """A new user's session token and authorization header."""
    email = f"payer-{uuid.uuid4().hex[:10]}@example.org"
    created = requests.post(system.url("/api/v1/accounts"), timeout=10, json={
        "email": email, "password": PASSWORD, "date_of_birth": "1990-01-01",
        "accept_policy_version": "2024-04-29"})
    assert created.status_code == 201, created.text
    session = requests.post(system.url("/api/v1/sessions"), timeout=10,
                            json={"email": email, "password": PASSWORD})
    headers = {"Authorization": f"Bearer {session.json()['token']}"}
    return created.json()["id"], headers


def plan_of(system: System, headers: dict) -> dict:
    answer = requests.get(system.url("/api/v1/billing"), headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def start_checkout(system: System, headers: dict, plan: str = "premium_monthly"):
    return requests.post(system.url("/api/v1/billing/checkout"), json={"plan": plan},
                         headers=headers, timeout=15)


def post_webhook(system: System, payload: bytes, signature: str | None) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return requests.post(system.url("/webhooks/stripe"), data=payload, headers=headers,
                         timeout=10)


def stripe_events(system: System, event_type: str) -> list[dict]:
    events = control(stripe_url(system), "GET", "/events")["data"]
    return [e for e in events if e["type"] == event_type]


def add_switch(system: System, headers: dict) -> requests.Response:
    return requests.post(system.url("/api/v1/switches"), json={}, headers=headers, timeout=15)


def switches_of(system: System, headers: dict) -> list[dict]:
    answer = requests.get(system.url("/api/v1/switches"), headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["switches"]


def scheduler_plan(system: System, user_id: str) -> str | None:
    """The plan in the scheduler's own copy (`entitlements`), as an operator reads it."""
    rows = system.query("scheduler", "SELECT json_extract(doc, '$.plan') FROM entitlements "
                                     "WHERE id = ?", (user_id,))
    return rows[0][0] if rows else None


def test_the_upgrade_and_the_downgrade_over_http(billing_system):
    system = billing_system
    user_id, headers = signed_in(system)
    free = plan_of(system, headers)
    assert (free["plan"], free["status"], free["entitlements"]["switches"]) == ("free", "none", 1)
    [default] = wait_for(lambda: switches_of(system, headers), timeout=30,
                         what="the default switch of the new account")
    refused = add_switch(system, headers)
    assert refused.status_code == 402, refused.text
    assert refused.json()["error"]["code"] == "plan_limit_reached"
    assert refused.json()["error"]["details"]["limit"] == "switches"

    checkout = start_checkout(system, headers)
    assert checkout.status_code == 201, checkout.text
    url = checkout.json()["url"]
    assert url.startswith(stripe_url(system) + "/checkout/")
    page = requests.get(url, timeout=10)
    assert page.status_code == 200 and "Pay with test card" in page.text

    paid = requests.post(url + "/pay", allow_redirects=False, timeout=10)
    assert paid.status_code == 303
    assert paid.headers["Location"] == system.url("/app/billing/success")
    # The return page is the signed-in sender's, and grants nothing: the webhook does.
    landing = requests.get(paid.headers["Location"], allow_redirects=False, timeout=10)
    assert landing.status_code == 302
    assert landing.headers["Location"].endswith("/login?next=/app/billing/success")

    premium = wait_for(lambda: _with_plan(system, headers, "premium_monthly"), timeout=30,
                       what="the signed checkout.session.completed to raise the plan")
    assert premium["status"] == "active"
    assert premium["entitlements"]["switches"] == 5
    assert premium["renews_at"] is not None and premium["can_manage"] is True
    assert start_checkout(system, headers, "premium_yearly").status_code == 409
    second = add_switch(system, headers)
    assert second.status_code == 201, second.text

    portal = requests.post(system.url("/api/v1/billing/portal"), headers=headers, timeout=15)
    assert portal.status_code == 201, portal.text
    assert requests.get(portal.json()["url"], timeout=10).status_code == 200

    [created] = [e for e in stripe_events(system, "customer.subscription.created")
                 if _customer_of(system, e["object_id"]) == _stripe_customer(system, user_id)]
    control(stripe_url(system), "POST", f"/subscriptions/{created['object_id']}/cancel")

    downgraded = wait_for(lambda: _with_plan(system, headers, "free"), timeout=30,
                          what="customer.subscription.deleted to bring back the free plan")
    assert downgraded["status"] == "canceled"
    assert downgraded["entitlements"]["switches"] == 1
    # The scheduler hears of it through billing's PlanChanged: nothing is taken away...
    wait_for(lambda: scheduler_plan(system, user_id) == "free", timeout=30,
             what="the scheduler's copy of the plan to become free")
    assert [s["id"] for s in switches_of(system, headers)] == [default["id"], second.json()["id"]]
    # ...but nothing new beyond the free plan either.
    third = add_switch(system, headers)
    assert third.status_code == 402, third.text
    assert third.json()["error"]["details"]["limit"] == "switches"
    assert "switch" in third.json()["error"]["message"]
    assert len(switches_of(system, headers)) == 2
    assert start_checkout(system, headers).status_code == 201, "a lapsed user may come back"


def test_a_forged_upgrade_is_refused_and_changes_nothing(billing_system):
    system = billing_system
    user_id, headers = signed_in(system)
    event = _event("checkout.session.completed", {
        "id": "cs_forged", "object": "checkout.session", "mode": "subscription",
        "client_reference_id": user_id, "customer": "cus_forged", "subscription": "sub_forged"})
    payload = json.dumps(event).encode()

    for signature in (None, sign(payload, "whsec_guessed"), "t=1,v1=00",
                      sign(payload, webhook_secret(system), int(time.time()) - 301)):
        answer = post_webhook(system, payload, signature)
        assert answer.status_code == 400, (signature, answer.text)
        assert answer.json()["error"]["code"] in ("missing_signature", "invalid_signature")

    genuine = sign(payload, webhook_secret(system))
    tampered = payload.replace(b"cs_forged", b"cs_f0rged")
    assert post_webhook(system, tampered, genuine).status_code == 400
    assert plan_of(system, headers)["plan"] == "free"


def test_unknown_and_replayed_events_are_acknowledged_and_harmless(billing_system):
    system = billing_system
    payload = json.dumps(_event("radar.early_fraud_warning.created", {"id": "issfr_1"})).encode()
    signature = sign(payload, webhook_secret(system))

    first = post_webhook(system, payload, signature)
    again = post_webhook(system, payload, signature)

    assert first.status_code == 200 and first.json()["outcome"].startswith("ignored")
    assert again.status_code == 200 and again.json()["outcome"] == "duplicate"


def test_stripe_redelivering_an_upgrade_changes_nothing_more(billing_system):
    system = billing_system
    user_id, headers = signed_in(system)
    url = start_checkout(system, headers).json()["url"]
    requests.post(url + "/pay", allow_redirects=False, timeout=10)
    wait_for(lambda: _with_plan(system, headers, "premium_monthly"), timeout=30,
             what="the upgrade")
    customer = _stripe_customer(system, user_id)
    [completed] = [e for e in stripe_events(system, "checkout.session.completed")
                   if e["object_id"] == url.rsplit("/", 1)[1]]
    assert customer is not None

    control(stripe_url(system), "POST", f"/events/{completed['id']}/redeliver")

    wait_for(lambda: _statuses(system, completed["id"]).count(200) == 2, timeout=30,
             what="the redelivery to be acknowledged")
    assert plan_of(system, headers)["plan"] == "premium_monthly"
    assert system.query("billing", "SELECT count(*) FROM stripe_events WHERE id = ?",
                        (completed["id"],))[0][0] == 1


def test_a_stripe_outage_during_checkout_is_a_503_and_nothing_is_half_created(billing_system):
    system = billing_system
    _, headers = signed_in(system)
    control(stripe_url(system), "POST", "/faults", {"path": "/v1/checkout/sessions"})
    try:
        refused = start_checkout(system, headers)
    finally:
        control(stripe_url(system), "DELETE", "/faults")
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "payment_provider_unavailable"
    assert "Traceback" not in refused.text

    retried = start_checkout(system, headers)
    again = start_checkout(system, headers)
    assert retried.status_code == again.status_code == 201
    assert retried.json()["url"] == again.json()["url"]
    assert plan_of(system, headers)["plan"] == "free"


# --- helpers ---------------------------------------------------------------------------------


def _event(event_type: str, obj: dict) -> dict:
    return {"id": f"evt_{uuid.uuid4().hex}", "object": "event", "type": event_type,
            "api_version": "2026-10-28.endive", "created": int(time.time()),
            "livemode": False, "data": {"object": obj}}


def _with_plan(system: System, headers: dict, plan: str) -> dict | None:
    current = plan_of(system, headers)
    return current if current["plan"] == plan else None


def _stripe_customer(system: System, user_id: str) -> str | None:
    rows = system.query("billing", "SELECT json_extract(doc, '$.stripe_customer_id') "
                                   "FROM customers WHERE id = ?", (user_id,))
    return rows[0][0] if rows else None


def _customer_of(system: System, subscription_id: str) -> str:
    answer = requests.get(f"{stripe_url(system)}/v1/subscriptions/{subscription_id}",
                          headers={"Authorization": f"Bearer {API_KEY}"},
                          timeout=10)
    return answer.json()["customer"]


def _statuses(system: System, event_id: str) -> list:
    events = control(stripe_url(system), "GET", "/events")["data"]
    return next(e["statuses"] for e in events if e["id"] == event_id)
