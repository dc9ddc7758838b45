"""Stripe's webhooks against billing's domain code: signed with the real scheme by the
stand-in, refused when forged or stale, processed once, harmless in any order."""

from __future__ import annotations

import time

import pytest

from services.billing.subscriptions import SubscriptionSync, subscription_snapshot
from shared.errors import Conflict, ServiceError
from shared.events import parse_event
from tests.stripe_helpers import PRICE_MONTHLY, BillingWorld

USER, EMAIL = "user-1", "ada@example.org"


@pytest.fixture
def world(tmp_path):
    world = BillingWorld(tmp_path)
    yield world
    world.close()


def plan_changes(world, user_id=USER):
    return [parse_event(e).data for e in world.outbox(user_id, "PlanChanged")]


def stripe_event(event_type: str, obj: dict, event_id: str = "evt_test_1") -> dict:
    return {"id": event_id, "object": "event", "type": event_type, "created": int(time.time()),
            "api_version": "2026-10-28.endive", "livemode": False,
            "data": {"object": obj}}


# --- the upgrade and the downgrade --------------------------------------------------------


def test_a_signed_checkout_completion_raises_the_plan_and_announces_it_once(world):
    subscription = world.subscribe(USER, EMAIL)

    limits = world.billing().entitlements(USER)
    assert (limits.plan, limits.status) == ("premium_monthly", "active")
    assert limits.entitlements.switches == 5
    [change] = plan_changes(world)
    assert (change.plan, change.status, change.entitlements.switches) == (
        "premium_monthly", "active", 5)
    overview = world.billing().overview(USER)
    period_end = subscription["items"]["data"][0]["current_period_end"]
    assert int(overview.renews_at.timestamp()) == period_end
    assert overview.ends_at is None and overview.can_manage


def test_a_deleted_subscription_brings_the_user_back_to_the_free_plan(world):
    subscription = world.subscribe(USER, EMAIL)
    mark = len(world.standin.events_of())
    world.standin.cancel_now(subscription["id"])
    world.deliver_new(mark)

    limits = world.billing().entitlements(USER)
    assert (limits.plan, limits.status) == ("free", "canceled")
    assert limits.entitlements.switches == 1
    changes = plan_changes(world)
    assert [(c.plan, c.status) for c in changes] == [("premium_monthly", "active"),
                                                     ("free", "canceled")]
    assert changes[1].revision > changes[0].revision


def test_a_subscription_set_to_end_keeps_its_plan_until_then_and_shows_when(world):
    subscription = world.subscribe(USER, EMAIL)
    mark = len(world.standin.events_of())
    world.standin.update_subscription(subscription["id"], cancel_at_period_end=True)
    world.deliver_new(mark)
    overview = world.billing().overview(USER)
    assert overview.plan == "premium_monthly"
    assert overview.renews_at is None
    assert overview.ends_at is not None


# --- signatures -----------------------------------------------------------------------------


@pytest.mark.parametrize("signature, code", [
    (None, "missing_signature"),
    ("", "missing_signature"),
    ("t=1,v1=deadbeef", "invalid_signature"),
    ("garbage", "invalid_signature"),
])
def test_a_missing_or_forged_signature_is_refused_and_changes_nothing(world, signature, code):
    payload, _ = world.standin.signed(_completed_checkout(world))
    with pytest.raises(ServiceError) as refused:
        world.webhooks().receive(payload, signature)
    assert refused.value.status == 400
    assert refused.value.code == code
    assert world.repo.stripe_events.count({}) == 0
    assert world.billing().entitlements(USER).plan == "free"


def test_a_body_changed_after_signing_is_refused(world):
    payload, signature = world.standin.signed(_completed_checkout(world))
    tampered = payload.replace(b'"livemode": false', b'"livemode": false ')
    with pytest.raises(ServiceError) as refused:
        world.webhooks().receive(tampered, signature)
    assert refused.value.code == "invalid_signature"


def test_a_payload_signed_with_another_secret_is_refused(world):
    event = _completed_checkout(world)
    with pytest.raises(ServiceError) as refused:
        world.deliver(event, secret="whsec_someone_else")
    assert refused.value.code == "invalid_signature"
    assert world.billing().entitlements(USER).plan == "free"


def test_a_stale_timestamp_is_refused_even_with_a_valid_signature(world):
    event = _completed_checkout(world)
    with pytest.raises(ServiceError) as refused:
        world.deliver(event, timestamp=int(time.time()) - 301)
    assert refused.value.code == "invalid_signature"
    assert world.billing().entitlements(USER).plan == "free"


def test_a_signed_body_that_is_not_an_event_is_refused(world):
    payload, signature = world.standin.signed({"hello": "world"})
    with pytest.raises(ServiceError) as refused:
        world.webhooks().receive(payload, signature)
    assert refused.value.code == "malformed_event"


# --- once, in any order -----------------------------------------------------------------------


def test_a_replayed_event_is_acknowledged_and_changes_nothing(world):
    world.subscribe(USER, EMAIL)
    completed = world.standin.events_of("checkout.session.completed")[0]
    receipt = world.deliver(completed)
    assert receipt.outcome == "duplicate"
    assert len(plan_changes(world)) == 1


def test_an_event_another_request_is_processing_asks_stripe_to_retry(world):
    event = _completed_checkout(world)
    world.repo.claim_stripe_event(event["id"], event["type"], world.clock.now())
    with pytest.raises(Conflict) as refused:
        world.deliver(event)
    assert refused.value.code == "event_in_progress"


def test_an_event_whose_processing_failed_is_processed_on_stripes_retry(world):
    event = _completed_checkout(world)
    world.standin.faults.append(_outage("/v1/subscriptions/"))
    with pytest.raises(ServiceError) as failed:
        world.deliver(event)
    assert failed.value.status == 503
    world.standin.faults.clear()
    assert world.deliver(event).outcome.startswith("applied")
    assert world.billing().entitlements(USER).plan == "premium_monthly"


def test_an_unknown_event_type_is_acknowledged_and_ignored(world):
    receipt = world.deliver(stripe_event("customer.tax_id.created", {"id": "txi_1"}))
    assert receipt.outcome.startswith("ignored")
    assert world.deliver(stripe_event("customer.tax_id.created", {"id": "txi_1"})).outcome == \
        "duplicate"


def test_events_about_customers_we_do_not_know_are_acknowledged_and_ignored(world):
    receipt = world.deliver(stripe_event("customer.subscription.updated",
                                         {"id": "sub_x", "customer": "cus_nobody"}))
    assert receipt.outcome == "ignored: unknown customer"


def test_an_update_arriving_after_the_deletion_never_brings_the_plan_back(world):
    subscription = world.subscribe(USER, EMAIL)
    mark = len(world.standin.events_of())
    world.standin.update_subscription(subscription["id"], cancel_at_period_end=True)
    world.standin.cancel_now(subscription["id"])
    updated, deleted = world.standin.events_of()[mark:]
    assert updated["data"]["object"]["status"] == "active"

    world.deliver(deleted)
    world.deliver(updated)  # older, and it still says "active"

    assert world.billing().entitlements(USER).plan == "free"
    assert plan_changes(world)[-1].plan == "free"


def test_out_of_order_updated_events_end_in_stripes_latest_state(world):
    subscription = world.subscribe(USER, EMAIL)
    mark = len(world.standin.events_of())
    world.standin.fail_payment(subscription["id"])      # past_due
    world.standin.settle_payment(subscription["id"])    # active again
    events = world.standin.events_of()[mark:]
    updates = [e for e in events if e["type"] == "customer.subscription.updated"]
    assert [e["data"]["object"]["status"] for e in updates] == ["past_due", "active"]

    world.deliver(updates[1])
    world.deliver(updates[0])

    limits = world.billing().entitlements(USER)
    assert (limits.plan, limits.status) == ("premium_monthly", "active")


def test_a_stale_read_of_a_subscription_never_overwrites_a_newer_one(world):
    subscription = world.subscribe(USER, EMAIL)
    customer = subscription["customer"]
    sync = SubscriptionSync(world.repo, world.payments, {PRICE_MONTHLY: "premium_monthly"},
                            world.clock.now())
    # Two reads race: the older (ticket 1st) saw "active", the newer "canceled", and the
    # older one's write comes last.
    older = world.repo.take_sync_ticket(USER, subscription["id"])
    active = world.payments.subscription(subscription["id"])
    world.standin.cancel_now(subscription["id"])
    assert sync.sync(subscription["id"], customer).startswith("applied: free")

    outcome = sync._apply(USER, subscription["id"],
                          subscription_snapshot(active, sync.price_plans, older))

    assert outcome.startswith("stale")
    assert world.billing().entitlements(USER).plan == "free"


# --- invoices and failed payments -------------------------------------------------------------


def test_a_failed_payment_mails_the_user_once_and_keeps_the_plan_while_stripe_retries(world):
    subscription = world.subscribe(USER, EMAIL)
    mark = len(world.standin.events_of())
    invoice = world.standin.fail_payment(subscription["id"])
    failed = world.standin.events_of("invoice.payment_failed")[0]
    world.deliver_new(mark)
    world.deliver(failed)  # a replay
    world.deliver({**failed, "id": "evt_same_failure_again"})  # a copy under a new id

    [mail] = [parse_event(e).data for e in world.outbox(USER, "MailRequested")]
    assert mail.kind == "payment_failed"
    assert mail.to == EMAIL
    assert mail.user_id == USER
    assert mail.reference == f"{invoice['id']}:1"
    assert mail.context["amount"] == "4.00 EUR"
    assert mail.context["billing_url"] == f"{world.settings.public_url}/app/billing"
    limits = world.billing().entitlements(USER)
    assert (limits.plan, limits.status) == ("premium_monthly", "past_due")


def test_the_next_failed_attempt_mails_again(world):
    subscription = world.subscribe(USER, EMAIL)
    mark = len(world.standin.events_of())
    world.standin.fail_payment(subscription["id"])
    world.standin.fail_payment(subscription["id"])
    world.deliver_new(mark)
    mails = [parse_event(e).data for e in world.outbox(USER, "MailRequested")]
    assert [m.reference.rsplit(":", 1)[1] for m in mails] == ["1", "2"]


def test_a_failure_notice_arriving_after_the_invoice_was_paid_sends_no_mail(world):
    subscription = world.subscribe(USER, EMAIL)
    mark = len(world.standin.events_of())
    world.standin.fail_payment(subscription["id"])
    world.standin.settle_payment(subscription["id"])
    failed, _, paid, _ = world.standin.events_of()[mark:]
    assert (failed["type"], paid["type"]) == ("invoice.payment_failed", "invoice.paid")

    world.deliver(paid)
    world.deliver(failed)

    assert world.outbox(USER, "MailRequested") == []
    assert world.repo.invoices.get(paid["data"]["object"]["id"])["status"] == "paid"


def test_paid_invoices_are_kept_for_the_tax_records(world):
    world.subscribe(USER, EMAIL)
    [invoice] = world.repo.invoices_of(USER)
    assert invoice["status"] == "paid"
    assert (invoice["amount_paid"], invoice["currency"]) == (400, "eur")
    assert invoice["number"].startswith("JICM-")
    assert invoice["paid_at"] is not None


def _completed_checkout(world) -> dict:
    """A real checkout.session.completed from the stand-in, not yet delivered."""
    session = world.billing().start_checkout(USER, EMAIL, "premium_monthly")
    world.standin.pay(session.url.rsplit("/", 1)[1])
    return world.standin.events_of("checkout.session.completed")[-1]


def _outage(path: str):
    from deploy.local.stripe_standin import Fault

    return Fault(path=path)

