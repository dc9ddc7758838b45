"""How many switches a user may have, from the plan billing last announced.

Money never decides a release: nothing here is consulted when arming, reminding or
firing. A plan only limits *creating* switches, and a plan whose payment has lapsed
(`past_due`, `canceled`, ...) falls back to the free plan's limit for new switches while
every existing switch keeps running exactly as before.
"""

from __future__ import annotations

from typing import Any

# The free plan's switch allowance (billing's shared/plans.py will own this figure).
FREE_SWITCHES = 1

# Subscription statuses under which the paid allowance applies.
PAID_UP = ("active", "trialing")


def switch_limit(plan: dict[str, Any] | None) -> int:
    """How many switches the owner of `plan` may have in total."""
    if plan is None or plan.get("status") not in PAID_UP:
        return FREE_SWITCHES
    return max(FREE_SWITCHES, int(plan.get("switches", FREE_SWITCHES)))
