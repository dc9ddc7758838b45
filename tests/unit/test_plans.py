"""The plan table and how a service enforces it: 402 naming the limit, only past it."""

from __future__ import annotations

import pytest

from shared.errors import PaymentRequired
from shared.plans import (
    ENTITLED_STATUSES,
    FREE,
    PAID_PLANS,
    PREMIUM_MONTHLY,
    PREMIUM_YEARLY,
    PlanLimits,
    free_limits,
)


def test_the_free_plan_allows_one_switch_and_refuses_a_second_with_the_limit_named():
    limits = free_limits()
    limits.require("switches", 1)
    with pytest.raises(PaymentRequired) as refused:
        limits.require("switches", 2)
    assert refused.value.status == 402
    assert refused.value.code == "plan_limit_reached"
    assert refused.value.details == {"limit": "switches", "allowed": 1, "wanted": 2,
                                     "plan": "free"}
    assert "1 switch;" in refused.value.message


def test_premium_raises_every_limit_of_the_free_plan():
    for plan in (PREMIUM_MONTHLY, PREMIUM_YEARLY):
        for limit, free_value in FREE.entitlements.as_dict().items():
            assert plan.entitlements.as_dict()[limit] > free_value


def test_a_limit_is_checked_against_the_total_after_the_change():
    limits = PlanLimits("premium_monthly", "active", PREMIUM_MONTHLY.entitlements)
    limits.require("recipients_per_message", 20)
    limits.require("body_bytes", 100 * 1024)
    with pytest.raises(PaymentRequired) as refused:
        limits.require("body_bytes", 100 * 1024 + 1)
    assert refused.value.details["limit"] == "body_bytes"
    assert "Premium (monthly)" in refused.value.message


def test_an_unknown_limit_is_a_programming_error_not_a_refusal():
    with pytest.raises(ValueError):
        free_limits().require("galaxies", 1)


def test_a_payment_being_retried_keeps_the_plan_but_a_canceled_one_does_not():
    assert "past_due" in ENTITLED_STATUSES
    assert "active" in ENTITLED_STATUSES
    assert not {"canceled", "unpaid", "incomplete_expired", "paused"} & ENTITLED_STATUSES


def test_only_the_premium_plans_can_be_bought():
    assert set(PAID_PLANS) == {"premium_monthly", "premium_yearly"}
    assert not FREE.paid
