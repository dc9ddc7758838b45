"""The billing routes at the gateway, with the services replaced by a recording stand-in:
what reaches billing, what is refused before it, and how billing's answers come back."""

from __future__ import annotations

import base64

import pytest

from gateway.app import create_app
from shared.config import load_settings
from shared.rpc.errors import RemoteError

TOKEN = "t" * 43
PROFILE = {"id": "user-1", "email": "ada@example.org", "email_verified": True,
           "created_at": "2030-01-01T00:00:00Z", "policy_version": "2024-04-29"}
BEARER = {"Authorization": f"Bearer {TOKEN}"}


class RecordingRpc:
    """Answers like the services would and remembers every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, tuple]] = []
        self.answers: dict[tuple[str, str], object] = {
            ("accounts", "resolve_session"): {"profile": PROFILE,
                                              "expires_at": "2030-01-15T00:00:00Z"},
            ("billing", "receive_webhook"): {"received": True, "outcome": "processed"},
            ("billing", "start_checkout"): {"url": "https://checkout.stripe.com/c/pay/cs_1",
                                            "plan": "premium_monthly",
                                            "expires_at": "2030-01-01T01:00:00Z"},
        }

    def call(self, service, method, *args, timeout=None, context=None):
        self.calls.append((service, method, args))
        answer = self.answers[(service, method)]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def to(self, method: str) -> list[tuple]:
        return [args for service, name, args in self.calls
                if (service, name) == ("billing", method)]


@pytest.fixture
def rpc():
    return RecordingRpc()


@pytest.fixture
def client(tmp_path, rpc):
    settings = load_settings({"JICM_ENV": "test", "JICM_DATA_DIR": str(tmp_path / "data")})
    return create_app(settings, rpc=rpc).test_client()


def test_the_webhook_body_reaches_billing_byte_for_byte_with_its_signature(client, rpc):
    body = b'{\n  "id": "evt_1",  "type": "x", "note": "caf\xc3\xa9 \\u00e9" }\r\n'
    answer = client.post("/webhooks/stripe", data=body, content_type="application/json",
                         headers={"Stripe-Signature": "t=1,v1=abc, v0=def"})
    assert answer.status_code == 200
    assert answer.get_json() == {"received": True, "outcome": "processed"}
    [(payload, signature)] = rpc.to("receive_webhook")
    assert base64.b64decode(payload) == body
    assert signature == "t=1,v1=abc, v0=def"


def test_a_webhook_that_is_not_json_still_reaches_billing_untouched(client, rpc):
    client.post("/webhooks/stripe", data=b"\xff\x00 not json", content_type="text/plain",
                headers={"Stripe-Signature": "t=1,v1=abc"})
    [(payload, _)] = rpc.to("receive_webhook")
    assert base64.b64decode(payload) == b"\xff\x00 not json"


def test_a_webhook_without_a_signature_is_refused_before_any_call(client, rpc):
    answer = client.post("/webhooks/stripe", json={"id": "evt_1"})
    assert answer.status_code == 400
    assert answer.get_json()["error"]["code"] == "missing_signature"
    assert rpc.calls == []


def test_billings_refusal_of_a_forged_signature_is_a_400_for_stripe(client, rpc):
    rpc.answers[("billing", "receive_webhook")] = RemoteError(
        "ServiceError", exc_args=["the Stripe-Signature does not match", "invalid_signature"])
    answer = client.post("/webhooks/stripe", data=b"{}", headers={"Stripe-Signature": "t=1,v1=0"})
    assert answer.status_code == 400
    assert answer.get_json()["error"]["code"] == "invalid_signature"


def test_a_checkout_is_started_for_the_signed_in_user_with_their_address(client, rpc):
    answer = client.post("/api/v1/billing/checkout", json={"plan": "premium_monthly"},
                         headers=BEARER)
    assert answer.status_code == 201
    assert answer.get_json()["url"].startswith("https://checkout.stripe.com/")
    [(user_id, email, request)] = rpc.to("start_checkout")
    assert (user_id, email, request) == ("user-1", "ada@example.org", {"plan": "premium_monthly"})


@pytest.mark.parametrize("body", [{"plan": "free"}, {"plan": "gold"}, {},
                                  {"plan": "premium_monthly", "price": "price_0"}])
def test_a_checkout_for_anything_but_a_paid_plan_is_a_422_naming_the_field(client, rpc, body):
    answer = client.post("/api/v1/billing/checkout", json=body, headers=BEARER)
    assert answer.status_code == 422
    assert answer.get_json()["error"]["details"]["errors"][0]["field"] in ("plan", "price")
    assert rpc.to("start_checkout") == []


def test_billing_routes_need_a_session(client, rpc):
    for method, path in (("GET", "/api/v1/billing"), ("POST", "/api/v1/billing/checkout"),
                         ("POST", "/api/v1/billing/portal")):
        assert client.open(path, method=method, json={}).status_code == 401
    assert rpc.calls == []


def test_a_stripe_outage_comes_back_as_a_503_naming_the_provider(client, rpc):
    rpc.answers[("billing", "start_checkout")] = RemoteError(
        "Unavailable", exc_args=["the payment provider cannot be reached right now",
                                 "payment_provider_unavailable"])
    answer = client.post("/api/v1/billing/checkout", json={"plan": "premium_yearly"},
                         headers=BEARER)
    assert answer.status_code == 503
    assert answer.get_json()["error"]["code"] == "payment_provider_unavailable"


def test_the_old_return_address_sends_the_browser_to_the_sites_pages(client, rpc):
    for query, target in (("?checkout=success", "/app/billing/success"),
                          ("?checkout=canceled", "/app/billing/cancel"),
                          ("", "/app/billing"), ("?checkout=<script>", "/app/billing")):
        answer = client.get("/billing" + query)
        assert answer.status_code == 303
        assert answer.headers["Location"] == target
    assert rpc.calls == [], "a return address grants nothing"


def test_the_openapi_document_describes_the_billing_routes(client):
    paths = client.get("/api/v1/openapi.json").get_json()["paths"]
    assert {"/api/v1/billing", "/api/v1/billing/checkout", "/api/v1/billing/portal",
            "/webhooks/stripe", "/billing"} <= set(paths)
    checkout = paths["/api/v1/billing/checkout"]["post"]
    assert {"201", "409", "502", "503"} <= set(checkout["responses"])
    assert "security" not in paths["/webhooks/stripe"]["post"]
