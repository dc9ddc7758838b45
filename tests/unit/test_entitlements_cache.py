"""The entitlements copy a consuming service keeps, and `limits_for`'s order of trust:
a cached paid plan, else billing, else the cache, else the free plan."""

from __future__ import annotations

import pytest

from shared.entitlements import ENTITLEMENTS, ENTITLEMENTS_INDEXES, EntitlementsCache, limits_for
from shared.events.schemas import PlanChanged
from shared.plans import FREE, PREMIUM_MONTHLY
from shared.rpc.errors import RpcTimeout
from shared.storage.provider import open_store

PREMIUM = PREMIUM_MONTHLY.entitlements.as_dict()


@pytest.fixture
def cache(tmp_path):
    db = open_store("consumer", ENTITLEMENTS_INDEXES, data_dir=tmp_path)
    yield EntitlementsCache(db.collection(ENTITLEMENTS))
    db.close()


def change(plan="premium_monthly", status="active", revision=1, user_id="u1") -> PlanChanged:
    entitlements = PREMIUM if plan != "free" else FREE.entitlements.as_dict()
    return PlanChanged(user_id=user_id, plan=plan, status=status, entitlements=entitlements,
                       revision=revision)


class Billing:
    """Stands in for the bounded RPC client: answers or fails as a test decides."""

    def __init__(self, answer=None, error=None):
        self.answer, self.error, self.calls = answer, error, []

    def call(self, method, user_id):
        assert method == "entitlements"
        self.calls.append(user_id)
        if self.error:
            raise self.error
        return self.answer


def test_a_newer_plan_change_replaces_an_older_one(cache):
    assert cache.record(change(plan="premium_monthly", revision=1))
    assert cache.record(change(plan="free", status="canceled", revision=2))
    assert cache.get("u1").plan == "free"
    assert cache.get("u1").status == "canceled"


def test_a_plan_change_arriving_late_or_twice_changes_nothing(cache):
    cache.record(change(plan="free", status="canceled", revision=3))
    assert not cache.record(change(plan="premium_monthly", revision=2))
    assert not cache.record(change(plan="free", status="canceled", revision=3))
    assert cache.get("u1").plan == "free"
    assert cache.get("u1").revision == 3


def test_a_cached_paid_plan_is_used_without_asking_billing(cache):
    cache.record(change())
    billing = Billing(error=RuntimeError("must not be asked"))
    limits = limits_for("u1", cache, billing)
    assert limits.plan == "premium_monthly"
    assert limits.source == "cache"
    assert billing.calls == []


def test_a_cached_free_plan_is_checked_with_billing_so_a_fresh_upgrade_counts(cache):
    cache.record(change(plan="free", status="none", revision=1))
    answer = {"plan": "premium_yearly", "status": "active", "entitlements": PREMIUM,
              "revision": 2}
    limits = limits_for("u1", cache, Billing(answer=answer))
    assert limits.plan == "premium_yearly"
    assert limits.source == "billing"
    assert cache.get("u1").plan == "premium_yearly", "the answer is kept for next time"


def test_with_billing_down_the_cached_copy_is_used(cache):
    cache.record(change(plan="free", status="canceled", revision=4))
    limits = limits_for("u1", cache, Billing(error=ConnectionError("no broker")))
    assert (limits.plan, limits.status, limits.source) == ("free", "canceled", "cache")


def test_with_billing_silent_and_nothing_cached_new_content_gets_the_free_limits(cache):
    silent = RpcTimeout("billing.entitlements did not answer within 3 s")
    limits = limits_for("nobody", cache, Billing(error=silent))
    assert limits.plan == "free"
    assert limits.source == "fallback"
    assert limits.entitlements == FREE.entitlements
    assert cache.get("nobody") is None, "a guess is never cached"


def test_forgetting_a_user_drops_their_copy(cache):
    cache.record(change())
    cache.forget("u1")
    assert cache.get("u1") is None


def test_a_copy_in_the_services_older_flat_shape_is_unknown_and_then_replaced(cache):
    # What the vault and the scheduler kept before this module existed.
    cache.collection.insert({"_id": "u1", "plan": "premium_monthly", "status": "active",
                             "switches": 5, "messages_per_switch": 50})
    assert cache.get("u1") is None, "unknown: billing is asked"
    assert limits_for("u1", cache, Billing(error=ConnectionError("down"))).source == "fallback"
    assert cache.record(change(plan="premium_yearly", revision=1))
    assert (cache.get("u1").plan, cache.get("u1").revision) == ("premium_yearly", 1)
    assert not cache.record(change(plan="free", status="canceled", revision=1))
