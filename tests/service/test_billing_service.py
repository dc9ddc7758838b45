"""The billing service on the real RabbitMQ, talking to the Stripe stand-in over HTTP:
called over RPC as the gateway calls it, announcing plan changes and payment-failure mail
to the services that listen, and feeding the entitlements copy other services keep."""

from __future__ import annotations

import base64

import pytest
from nameko.rpc import rpc

from deploy.local.stripe_standin import Fault
from services.billing.service import BillingService
from shared.config import SETTINGS_CONFIG_KEY, load_settings
from shared.entitlements import (
    ENTITLEMENTS,
    ENTITLEMENTS_INDEXES,
    EntitlementsCache,
    billing_rpc,
    limits_for,
)
from shared.events import event_handler
from shared.rpc.client import RpcClientPool
from shared.rpc.errors import RemoteError
from shared.storage.provider import Storage
from tests.helpers import erase_part, wait_for
from tests.stripe_helpers import billing_environment, running_standin

pytestmark = pytest.mark.service

USER, EMAIL = "user-1", "ada@example.org"
RECEIVED: dict[str, list] = {"PlanChanged": [], "MailRequested": []}


class Listener:
    """Stands where the scheduler, the vault and delivery will listen."""

    name = "listener"
    store = Storage({})

    @event_handler("PlanChanged")
    def on_plan_changed(self, event) -> None:
        RECEIVED["PlanChanged"].append(event)

    @event_handler("MailRequested")
    def on_mail_requested(self, event) -> None:
        RECEIVED["MailRequested"].append(event)


class LimitsConsumer:
    """A service enforcing limits exactly as `shared.entitlements` tells vault and scheduler to."""

    name = "limits_consumer"
    store = Storage(ENTITLEMENTS_INDEXES,
                    repository=lambda db: EntitlementsCache(db.collection(ENTITLEMENTS)))
    billing = billing_rpc()

    @event_handler("PlanChanged")
    def on_plan_changed(self, event) -> None:
        self.store.record(event.data)

    @rpc
    def limits(self, user_id: str) -> dict:
        limits = limits_for(user_id, self.store, self.billing)
        return {**limits.as_dict(), "source": limits.source}


@pytest.fixture(autouse=True)
def _clear():
    for events in RECEIVED.values():
        events.clear()


@pytest.fixture
def standin(tmp_path):
    secret = load_settings({"JICM_ENV": "test", "JICM_DATA_DIR": str(tmp_path / "data")})
    with running_standin(secret.stripe_webhook_secret) as standin:
        yield standin


@pytest.fixture
def config(rabbit_config, tmp_path, standin):
    settings = load_settings(billing_environment(tmp_path / "data", standin.public_url,
                                                 AMQP_URI=rabbit_config["AMQP_URI"]))
    return {**rabbit_config, SETTINGS_CONFIG_KEY: settings, "max_workers": 4}


@pytest.fixture
def billing(container_factory, config):
    container = container_factory(BillingService, config)
    container.start()
    return container


@pytest.fixture
def listeners(container_factory, config):
    containers = [container_factory(cls, config) for cls in (Listener, LimitsConsumer)]
    for container in containers:
        container.start()
    return containers


@pytest.fixture
def client(config):
    pool = RpcClientPool(config["AMQP_URI"], size=2, timeout=15)
    yield pool
    pool.close()


def deliver(client, standin, event: dict) -> dict:
    payload, signature = standin.signed(event)
    return client.call("billing", "receive_webhook", base64.b64encode(payload).decode(),
                       signature)


def subscribe(client, standin) -> dict:
    mark = len(standin.events_of())
    session = client.call("billing", "start_checkout", USER, EMAIL, {"plan": "premium_monthly"})
    subscription = standin.pay(session["url"].rsplit("/", 1)[1])
    for event in standin.events_of()[mark:]:
        deliver(client, standin, event)
    return subscription


def test_a_user_billing_never_heard_of_is_on_the_free_plan(billing, client):
    answer = client.call("billing", "entitlements", "stranger")
    assert answer["plan"] == "free"
    assert answer["status"] == "none"
    assert answer["entitlements"] == {"switches": 1, "messages_per_switch": 3,
                                      "recipients_per_message": 3, "body_bytes": 10240}


def test_an_upgrade_reaches_the_services_that_enforce_limits(billing, listeners, client, standin):
    assert client.call("limits_consumer", "limits", USER)["plan"] == "free"

    subscribe(client, standin)

    [change] = wait_for(lambda: RECEIVED["PlanChanged"], timeout=20, what="PlanChanged")
    assert (change.data.user_id, change.data.plan, change.data.status) == (
        USER, "premium_monthly", "active")
    assert change.data.entitlements.switches == 5
    assert client.call("billing", "entitlements", USER)["plan"] == "premium_monthly"
    overview = client.call("billing", "overview", USER)
    assert overview["renews_at"] is not None and overview["can_manage"] is True
    limits = wait_for(lambda: _cached(client), timeout=20, what="the consumer's cached copy")
    assert limits["entitlements"]["switches"] == 5


def test_limits_keep_working_from_the_cache_while_billing_is_down(billing, listeners, client,
                                                                  standin):
    subscribe(client, standin)
    wait_for(lambda: _cached(client), timeout=20, what="the consumer's cached copy")
    billing.stop()

    assert client.call("limits_consumer", "limits", USER)["plan"] == "premium_monthly"
    unknown = client.call("limits_consumer", "limits", "never-seen")
    assert (unknown["plan"], unknown["source"]) == ("free", "fallback")


def test_a_failed_payment_asks_delivery_for_a_mail_to_the_user(billing, listeners, client,
                                                               standin):
    subscription = subscribe(client, standin)
    mark = len(standin.events_of())
    invoice = standin.fail_payment(subscription["id"])
    for event in standin.events_of()[mark:]:
        deliver(client, standin, event)

    [mail] = wait_for(lambda: RECEIVED["MailRequested"], timeout=20, what="MailRequested")
    assert (mail.data.kind, mail.data.to, mail.data.user_id) == ("payment_failed", EMAIL, USER)
    assert mail.data.reference == f"{invoice['id']}:1"
    assert client.call("billing", "entitlements", USER)["status"] == "past_due"


def test_a_stripe_outage_during_checkout_is_a_503_answer_and_creates_nothing(billing, client,
                                                                           standin):
    standin.faults.append(Fault(path="/v1/checkout/sessions"))
    with pytest.raises(RemoteError) as refused:
        client.call("billing", "start_checkout", USER, EMAIL, {"plan": "premium_yearly"})
    assert refused.value.exc_type == "Unavailable"
    assert refused.value.exc_args[1] == "payment_provider_unavailable"
    assert standin.state["checkout_sessions"] == {}


def test_a_forged_webhook_is_refused_over_rpc(billing, client, standin):
    payload, _ = standin.signed({"id": "evt_forged", "type": "customer.subscription.created",
                                 "data": {"object": {"id": "sub_1"}}})
    with pytest.raises(RemoteError) as refused:
        client.call("billing", "receive_webhook", base64.b64encode(payload).decode(),
                    "t=1700000000,v1=" + "0" * 64)
    assert refused.value.exc_type == "ServiceError"
    assert refused.value.exc_args[1] == "invalid_signature"


def test_the_erasure_hook_cancels_and_deletes_at_stripe(billing, client, standin):
    subscription = subscribe(client, standin)
    summary = erase_part(billing, USER)
    assert summary["subscriptions_canceled"] == 1 and summary["customers_deleted"] == 1
    assert standin.state["subscriptions"][subscription["id"]]["status"] == "canceled"
    assert erase_part(billing, USER)["customers_deleted"] == 0


def test_the_service_answers_the_readiness_probe(billing, client):
    assert client.call("billing", "health")["status"] == "ok"


def _cached(client) -> dict | None:
    limits = client.call("limits_consumer", "limits", USER)
    return limits if limits["source"] == "cache" else None
