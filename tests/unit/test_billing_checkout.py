"""Checkout and the portal against the Stripe stand-in: one customer per user, one session
per attempt, idempotency keys from our own ids, outages that leave nothing half-made, and
no access granted until Stripe's webhook says so."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.billing.billing import SESSION_LIFETIME
from shared.errors import BadGateway, Conflict, RateLimited, Unavailable
from tests.stripe_helpers import BillingWorld, stripe_posts

USER, EMAIL = "user-1", "ada@example.org"


@pytest.fixture
def world(tmp_path):
    world = BillingWorld(tmp_path)
    yield world
    world.close()


def session_id(url: str) -> str:
    return url.rsplit("/", 1)[1]


def test_a_checkout_creates_one_customer_and_one_session_and_hands_the_same_one_out_again(world):
    first = world.billing().start_checkout(USER, EMAIL, "premium_monthly")
    again = world.billing().start_checkout(USER, EMAIL, "premium_monthly")

    assert first.url == again.url
    assert first.url.startswith(world.standin.public_url + "/checkout/cs_test_")
    assert len(world.standin.state["customers"]) == 1
    assert len(world.standin.state["checkout_sessions"]) == 1
    session = world.standin.state["checkout_sessions"][session_id(first.url)]
    assert session["client_reference_id"] == USER
    assert session["mode"] == "subscription"
    assert session["success_url"] == f"{world.settings.public_url}/app/billing/success"
    [customer] = world.standin.state["customers"].values()
    assert customer["email"] == EMAIL and customer["metadata"] == {"user_id": USER}


def test_every_post_to_stripe_carries_an_idempotency_key_made_of_our_own_ids(world):
    world.billing().start_checkout(USER, EMAIL, "premium_yearly")
    posts = [r for r in world.standin.requests if r["method"] == "POST"]
    assert posts, "the checkout posted nothing"
    assert all(r["idempotency_key"] for r in posts)
    keys = {r["path"]: r["idempotency_key"] for r in posts}
    assert keys["/v1/customers"] == f"jicm-customer-{USER}"
    assert keys["/v1/checkout/sessions"] == f"jicm-checkout-{USER}-premium_yearly-1"


def test_no_plan_is_granted_by_a_checkout_or_even_a_payment_before_the_webhook(world):
    session = world.billing().start_checkout(USER, EMAIL, "premium_monthly")
    world.standin.pay(session_id(session.url))
    assert world.billing().entitlements(USER).plan == "free"
    assert world.outbox(USER, "PlanChanged") == []


def test_choosing_another_plan_closes_the_open_session_first_so_only_one_can_be_paid(world):
    monthly = world.billing().start_checkout(USER, EMAIL, "premium_monthly")
    yearly = world.billing().start_checkout(USER, EMAIL, "premium_yearly")

    assert yearly.url != monthly.url
    sessions = world.standin.state["checkout_sessions"]
    assert sessions[session_id(monthly.url)]["status"] == "expired"
    assert sessions[session_id(yearly.url)]["status"] == "open"


def test_an_expired_session_is_replaced_by_a_fresh_attempt(world):
    first = world.billing().start_checkout(USER, EMAIL, "premium_monthly")
    world.clock.advance(seconds=SESSION_LIFETIME.total_seconds() + 1)
    second = world.billing().start_checkout(USER, EMAIL, "premium_monthly")

    assert second.url != first.url
    keys = [r["idempotency_key"] for r in stripe_posts(world.standin, "/v1/checkout/sessions")]
    assert keys == [f"jicm-checkout-{USER}-premium_monthly-1",
                    f"jicm-checkout-{USER}-premium_monthly-2"]
    assert len(world.standin.state["customers"]) == 1


def test_a_session_about_to_expire_is_not_handed_out_again(world):
    first = world.billing().start_checkout(USER, EMAIL, "premium_monthly")
    world.clock.advance(seconds=(SESSION_LIFETIME - timedelta(minutes=5)).total_seconds())
    second = world.billing().start_checkout(USER, EMAIL, "premium_monthly")
    assert second.url != first.url
    assert world.standin.state["checkout_sessions"][session_id(first.url)]["status"] == "expired"


def test_a_stripe_outage_during_checkout_is_a_503_and_leaves_nothing_half_created(world):
    world.standin.faults.append(_outage("/v1/checkout/sessions"))
    with pytest.raises(Unavailable) as refused:
        world.billing().start_checkout(USER, EMAIL, "premium_monthly")
    assert refused.value.code == "payment_provider_unavailable"
    assert world.standin.state["checkout_sessions"] == {}

    world.standin.faults.clear()
    session = world.billing().start_checkout(USER, EMAIL, "premium_monthly")

    assert len(world.standin.state["checkout_sessions"]) == 1
    assert len(world.standin.state["customers"]) == 1
    assert session_id(session.url) in world.standin.state["checkout_sessions"]
    assert world.billing().entitlements(USER).plan == "free"


def test_an_outage_while_creating_the_customer_creates_no_second_customer_later(world):
    world.standin.faults.append(_outage("/v1/customers"))
    with pytest.raises(Unavailable):
        world.billing().start_checkout(USER, EMAIL, "premium_monthly")
    world.standin.faults.clear()
    world.billing().start_checkout(USER, EMAIL, "premium_monthly")
    assert len(world.standin.state["customers"]) == 1


def test_a_session_created_at_stripe_whose_answer_was_lost_is_the_one_handed_out(world):
    # The first request reached Stripe, then the answer was lost (a crash, a timeout):
    # the reservation is in our store, the session exists at Stripe.
    world.billing().start_checkout(USER, EMAIL, "premium_monthly")
    doc = world.repo.customer(USER)
    reservation = {**doc["checkout"], "state": "creating", "attempt": 2,
                   "idempotency_key": f"jicm-checkout-{USER}-premium_monthly-2"}
    world.db.collection("customers").update_one({"_id": USER}, {"$set": {"checkout": reservation}})
    lost = world.payments.create_checkout_session(reservation["params"],
                                                  idempotency_key=reservation["idempotency_key"])

    handed_out = world.billing().start_checkout(USER, EMAIL, "premium_monthly")

    assert handed_out.url == lost["url"]
    assert len(world.standin.state["checkout_sessions"]) == 2  # the first attempt, and this one


def test_a_customer_created_at_stripe_but_never_recorded_is_found_not_duplicated(world):
    world.payments.create_customer(user_id=USER, email=EMAIL, idempotency_key="lost-answer")
    world.billing().start_checkout(USER, EMAIL, "premium_monthly")
    assert len(world.standin.state["customers"]) == 1


def test_a_subscriber_cannot_start_a_second_subscription(world):
    world.subscribe(USER, EMAIL)
    with pytest.raises(Conflict) as refused:
        world.billing().start_checkout(USER, EMAIL, "premium_yearly")
    assert refused.value.code == "already_subscribed"
    assert len(world.standin.state["checkout_sessions"]) == 1


def test_a_session_paid_but_not_yet_confirmed_is_not_replaced_by_another(world):
    monthly = world.billing().start_checkout(USER, EMAIL, "premium_monthly")
    world.standin.pay(session_id(monthly.url))  # the webhook has not arrived yet
    with pytest.raises(Conflict) as refused:
        world.billing().start_checkout(USER, EMAIL, "premium_yearly")
    assert refused.value.code == "checkout_completed"


def test_a_refusal_by_stripe_is_a_502_that_names_no_internals(world):
    world.standin.faults.append(_outage("/v1/customers", status=400, type="invalid_request_error",
                                        message="secret internal detail"))
    with pytest.raises(BadGateway) as refused:
        world.billing().start_checkout(USER, EMAIL, "premium_monthly")
    assert refused.value.code == "payment_provider_error"
    assert "secret internal detail" not in refused.value.message


def test_checkouts_are_rate_limited_per_user(world):
    for _ in range(20):
        world.billing().start_checkout(USER, EMAIL, "premium_monthly")
    with pytest.raises(RateLimited):
        world.billing().start_checkout(USER, EMAIL, "premium_monthly")


def test_the_portal_needs_a_billing_account_and_then_opens_stripes_portal(world):
    with pytest.raises(Conflict) as refused:
        world.billing().open_portal(USER)
    assert refused.value.code == "no_billing_account"

    world.subscribe(USER, EMAIL)
    portal = world.billing().open_portal(USER)
    assert portal.url.startswith(world.standin.public_url + "/portal/bps_")
    [post] = stripe_posts(world.standin, "/v1/billing_portal/sessions")
    assert post["idempotency_key"].startswith(f"jicm-portal-{USER}-")


def test_a_user_billing_never_heard_of_is_on_the_free_plan(world):
    overview = world.billing().overview("stranger")
    assert (overview.plan, overview.status, overview.can_manage) == ("free", "none", False)
    assert overview.entitlements.switches == 1
    assert world.billing().entitlements("stranger").as_dict()["entitlements"]["switches"] == 1


def _outage(path: str, **fields):
    from deploy.local.stripe_standin import Fault

    return Fault(path=path, **fields)


def test_a_customer_deleted_at_stripe_behind_our_back_is_a_502_not_a_crash(world):
    world.billing().start_checkout(USER, EMAIL, "premium_monthly")
    customer_id = world.repo.customer(USER)["stripe_customer_id"]
    world.payments.delete_customer(customer_id)
    world.clock.advance(seconds=SESSION_LIFETIME.total_seconds() + 1)
    with pytest.raises(BadGateway) as refused:
        world.billing().start_checkout(USER, EMAIL, "premium_monthly")
    assert refused.value.code == "payment_provider_error"


def test_a_refused_session_does_not_block_the_next_try_under_the_same_key(world):
    world.standin.faults.append(_outage("/v1/checkout/sessions", status=400,
                                        type="invalid_request_error", remaining=1))
    with pytest.raises(BadGateway):
        world.billing().start_checkout(USER, EMAIL, "premium_monthly")
    session = world.billing().start_checkout(USER, EMAIL, "premium_monthly")
    assert session_id(session.url) in world.standin.state["checkout_sessions"]
    keys = [r["idempotency_key"] for r in stripe_posts(world.standin, "/v1/checkout/sessions")]
    assert keys == [f"jicm-checkout-{USER}-premium_monthly-1",
                    f"jicm-checkout-{USER}-premium_monthly-2"]
