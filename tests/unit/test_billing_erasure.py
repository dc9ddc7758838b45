"""Erasure in billing: Stripe's subscriptions canceled and customer deleted, our records
gone, invoices kept for the tax office under a pseudonym; safe to run again."""

from __future__ import annotations

import pytest

from services.billing.erasure import erase_customer
from shared.errors import Gone, Unavailable
from tests.stripe_helpers import BillingWorld

USER, EMAIL = "user-1", "ada@example.org"


@pytest.fixture
def world(tmp_path):
    world = BillingWorld(tmp_path)
    yield world
    world.close()


def erase(world, user_id=USER):
    return erase_customer(world.repo, world.payments, user_id, world.clock.now())


def test_erasure_cancels_at_stripe_deletes_the_customer_and_keeps_pseudonymous_invoices(world):
    subscription = world.subscribe(USER, EMAIL)
    mark = len(world.standin.events_of())
    world.standin.fail_payment(subscription["id"])
    world.deliver_new(mark)

    summary = erase(world)

    assert summary == {"subscriptions_canceled": 1, "customers_deleted": 1,
                       "invoices_pseudonymised": 2, "records_deleted": 1}
    assert world.standin.state["subscriptions"][subscription["id"]]["status"] == "canceled"
    assert world.standin.state["customers"][subscription["customer"]]["deleted"] is True
    assert world.repo.customer(USER) is None
    invoices = world.repo.invoices.find({})
    assert len(invoices) == 2
    assert {inv["holder"] for inv in invoices} == {invoices[0]["holder"]}
    assert invoices[0]["holder"].startswith("erased-")
    for invoice in invoices:
        assert "user_id" not in invoice
        assert {"amount_due", "currency", "created", "number"} <= set(invoice)
        assert EMAIL not in repr(invoice)
    assert world.billing().entitlements(USER).plan == "free"


def test_erasing_twice_is_harmless(world):
    world.subscribe(USER, EMAIL)
    erase(world)
    assert erase(world) == {"subscriptions_canceled": 0, "customers_deleted": 0,
                            "invoices_pseudonymised": 0, "records_deleted": 0}


def test_erasing_a_user_billing_never_knew_does_nothing(world):
    assert erase(world, "stranger")["records_deleted"] == 0
    assert world.standin.requests == []


def test_an_erasure_interrupted_by_a_stripe_outage_finishes_on_the_retry(world):
    subscription = world.subscribe(USER, EMAIL)
    world.standin.faults.append(_outage("/v1/customers/"))
    with pytest.raises(Unavailable):
        erase(world)
    assert world.repo.customer(USER) is not None, "nothing of ours is lost before Stripe is done"

    world.standin.faults.clear()
    summary = erase(world)

    assert summary["customers_deleted"] == 1
    assert summary["subscriptions_canceled"] == 0, "already canceled by the first attempt"
    assert world.standin.state["customers"][subscription["customer"]]["deleted"] is True
    assert world.repo.customer(USER) is None


def test_the_pseudonym_chosen_first_is_kept_by_a_retry(world):
    world.subscribe(USER, EMAIL)
    world.repo.begin_erasure(USER, "erased-first", world.clock.now())
    erase(world)
    assert {inv["holder"] for inv in world.repo.invoices.find({})} == {"erased-first"}


def test_late_webhooks_about_an_erased_customer_recreate_nothing(world):
    world.subscribe(USER, EMAIL)
    mark = len(world.standin.events_of())
    erase(world)
    receipts = world.deliver_new(mark)  # customer.subscription.deleted, from our own cancel
    assert receipts and all(r.outcome.startswith("ignored") for r in receipts)
    assert world.repo.customer(USER) is None


def test_a_user_being_erased_cannot_start_a_checkout(world):
    world.billing().start_checkout(USER, EMAIL, "premium_monthly")
    world.repo.begin_erasure(USER, "erased-x", world.clock.now())
    with pytest.raises(Gone) as refused:
        world.billing().start_checkout(USER, EMAIL, "premium_monthly")
    assert refused.value.code == "account_erased"


def _outage(path: str):
    from deploy.local.stripe_standin import Fault

    return Fault(path=path)
