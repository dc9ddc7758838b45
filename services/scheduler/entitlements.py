"""How many switches a user may have: the plan's, by the scheduler's own rule.

The limits are billing's, read through `shared.entitlements` (the scheduler's copy of
each user's `PlanChanged`, billing asked when that copy says "free" or nothing, the free
plan of `shared.plans` when billing cannot be reached). The scheduler's rule is how it
holds the limit against racing requests: switch ids are derived from the owner and a
slot number below the limit, so two creations racing for the last slot collide on the
id instead of both succeeding (see `Scheduler.create`).

Money never decides a release: nothing here is consulted when arming, reminding or
firing. A plan only limits *creating* switches; a plan whose payment has lapsed falls
back (billing says so) to the free plan's limit for new switches while every existing
switch keeps running exactly as before.
"""

from __future__ import annotations

from shared.errors import PaymentRequired
from shared.plans import PlanLimits

LIMIT = "switches"


def switch_slots(limits: PlanLimits) -> range:
    """The slot numbers the owner's switches may take (slot 0 is the default switch)."""
    return range(limits.allowed(LIMIT))


def switch_limit_reached(limits: PlanLimits) -> PaymentRequired:
    """The 402 for a switch beyond the plan: every slot is taken."""
    try:
        limits.require(LIMIT, limits.allowed(LIMIT) + 1)
    except PaymentRequired as refusal:
        return refusal
    raise AssertionError("require() refuses one more than allowed")  # pragma: no cover
