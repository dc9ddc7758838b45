"""The Stripe stand-in itself, over real HTTP: it checks the key, honours idempotency keys,
fails on demand, keeps its state across restarts, and delivers webhooks that Stripe's own
library accepts as genuine."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import pytest
import requests
import stripe
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from deploy.local.stripe_standin import decode_form
from tests.helpers import wait_for
from tests.local.helpers import free_port
from tests.stripe_helpers import API_KEY, PRICE_MONTHLY, control, running_standin

SECRET = "whsec_test_standin"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


class Receiver:
    """A webhook endpoint that fails the first `failures` deliveries, then accepts."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.received: list[tuple[bytes, str]] = []
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/webhooks/stripe"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def app(self, environ, start_response):
        request = Request(environ)
        self.received.append((request.get_data(), request.headers.get("Stripe-Signature", "")))
        status = 500 if len(self.received) <= self.failures else 200
        return Response("{}", status=status)(environ, start_response)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    receiver = Receiver(failures=1)
    yield receiver
    receiver.close()


@pytest.fixture
def standin(receiver):
    with running_standin(SECRET, webhook_url=receiver.url) as standin:
        yield standin


def post(standin, path, data, key=None, auth=AUTH):
    headers = {**auth, **({"Idempotency-Key": key} if key else {})}
    return requests.post(standin.public_url + path, data=data, headers=headers, timeout=10)


def test_the_api_refuses_a_wrong_key_in_stripes_shape(standin):
    answer = post(standin, "/v1/customers", {"email": "a@example.org"},
                  auth={"Authorization": "Bearer sk_test_wrong"})
    assert answer.status_code == 401
    assert answer.json()["error"]["type"] == "invalid_request_error"
    assert standin.state["customers"] == {}


def test_an_idempotency_key_gives_back_the_first_object_never_a_second(standin):
    first = post(standin, "/v1/customers", {"email": "a@example.org"}, key="k-1")
    again = post(standin, "/v1/customers", {"email": "a@example.org"}, key="k-1")
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(standin.state["customers"]) == 1

    other = post(standin, "/v1/customers", {"email": "b@example.org"}, key="k-1")
    assert other.status_code == 400
    assert other.json()["error"]["type"] == "idempotency_error"


def test_an_injected_outage_answers_503_for_as_many_requests_as_asked(standin):
    control(standin.public_url, "POST", "/faults", {"remaining": 2, "path": "/v1/customers"})
    statuses = [post(standin, "/v1/customers", {"email": "a@example.org"}).status_code
                for _ in range(3)]
    assert statuses == [503, 503, 200]


def test_paying_on_the_checkout_page_redirects_and_sends_signed_webhooks_stripe_accepts(
        standin, receiver):
    customer = post(standin, "/v1/customers", {"email": "a@example.org"}).json()
    session = post(standin, "/v1/checkout/sessions", {
        "mode": "subscription", "customer": customer["id"], "client_reference_id": "u1",
        "line_items[0][price]": PRICE_MONTHLY, "line_items[0][quantity]": "1",
        "success_url": "http://app.example/billing?checkout=success",
        "cancel_url": "http://app.example/billing?checkout=canceled",
    }).json()
    page = requests.get(session["url"], timeout=10)
    assert page.status_code == 200 and "Pay with test card" in page.text

    paid = requests.post(session["url"] + "/pay", allow_redirects=False, timeout=10)

    assert paid.status_code == 303
    assert paid.headers["Location"] == "http://app.example/billing?checkout=success"
    wait_for(lambda: len(receiver.received) >= 4, timeout=20, what="three events, one retried")
    types = []
    for payload, signature in receiver.received:
        event = stripe.Webhook.construct_event(payload, signature, SECRET, tolerance=300)
        types.append(event["type"])
    assert types[0] == "customer.subscription.created"
    assert types.count("customer.subscription.created") == 2, "the failed delivery is retried"
    assert set(types) == {"customer.subscription.created", "invoice.paid",
                          "checkout.session.completed"}


def test_a_redelivered_event_arrives_again_with_the_same_id(standin, receiver):
    receiver.failures = 0
    event = standin.emit("customer.subscription.updated", {"id": "sub_1", "customer": "cus_1"})
    wait_for(lambda: receiver.received, timeout=10, what="the first delivery")
    control(standin.public_url, "POST", f"/events/{event['id']}/redeliver")
    wait_for(lambda: len(receiver.received) == 2, timeout=10, what="the redelivery")
    first, second = (stripe.Webhook.construct_event(p, s, SECRET) for p, s in receiver.received)
    assert first["id"] == second["id"] == event["id"]


def test_its_state_survives_a_restart(tmp_path):
    state = tmp_path / "stripe.json"
    with running_standin(SECRET, state_file=state) as standin:
        customer = post(standin, "/v1/customers", {"email": "a@example.org"}, key="k").json()
    with running_standin(SECRET, state_file=state) as standin:
        again = post(standin, "/v1/customers", {"email": "a@example.org"}, key="k").json()
        found = requests.get(f"{standin.public_url}/v1/customers/{customer['id']}",
                             headers=AUTH, timeout=10)
    assert again["id"] == customer["id"]
    assert found.json()["email"] == "a@example.org"


def test_form_parameters_decode_as_the_stripe_library_encodes_them():
    assert decode_form([("metadata[user_id]", "u"), ("line_items[0][price]", "p"),
                        ("line_items[0][quantity]", "1"), ("line_items[1][price]", "q")]) == {
        "metadata": {"user_id": "u"},
        "line_items": [{"price": "p", "quantity": "1"}, {"price": "q"}],
    }


def test_the_command_line_serves_until_sigterm():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "deploy.local.stripe_standin", "--port",
                             str(port), "--api-key", API_KEY, "--webhook-secret", SECRET],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(base), timeout=20, what="the stand-in to listen")
        created = requests.post(f"{base}/v1/customers", data={"email": "a@example.org"},
                                headers=AUTH, timeout=10)
        assert created.json()["object"] == "customer"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def _answers(base: str) -> bool:
    try:
        return requests.get(base + "/v1/customers", timeout=1).status_code == 401
    except requests.ConnectionError:
        return False
