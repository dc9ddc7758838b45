"""The plans and what each one entitles a user to: the one table every service reads.

Billing decides which plan a user is on; the services that own the data (the scheduler
for switches, the vault for messages) enforce the limits with `PlanLimits.require`,
and only when something NEW is created or grows. A downgrade therefore keeps every
switch and message that already exists and only blocks new content over the limit, and
nothing here is ever consulted for a release: money never decides whether a message
goes out.

The numbers are constants, not configuration: a plan is a promise to the people who
bought it, and it must read the same in every process.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from shared.errors import PaymentRequired

KIB = 1024


@dataclass(frozen=True)
class Entitlements:
    """What a plan allows. Field names are those of the `PlanChanged` event."""

    switches: int
    messages_per_switch: int
    recipients_per_message: int
    body_bytes: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Entitlements:
        return cls(
            switches=int(data["switches"]),
            messages_per_switch=int(data["messages_per_switch"]),
            recipients_per_message=int(data["recipients_per_message"]),
            body_bytes=int(data["body_bytes"]),
        )


@dataclass(frozen=True)
class Plan:
    """A plan users can be on. `rank` orders plans when a user somehow holds two."""

    name: str
    title: str
    entitlements: Entitlements
    interval: str | None = None  # the billing period of a paid plan: "month" or "year"
    rank: int = 0

    @property
    def paid(self) -> bool:
        return self.interval is not None


FREE_ENTITLEMENTS = Entitlements(
    switches=1, messages_per_switch=3, recipients_per_message=3, body_bytes=10 * KIB
)
PREMIUM_ENTITLEMENTS = Entitlements(
    switches=5, messages_per_switch=50, recipients_per_message=20, body_bytes=100 * KIB
)

FREE = Plan("free", "Free", FREE_ENTITLEMENTS)
PREMIUM_MONTHLY = Plan("premium_monthly", "Premium (monthly)", PREMIUM_ENTITLEMENTS,
                       interval="month", rank=1)
PREMIUM_YEARLY = Plan("premium_yearly", "Premium (yearly)", PREMIUM_ENTITLEMENTS,
                      interval="year", rank=1)

PLANS: dict[str, Plan] = {plan.name: plan for plan in (FREE, PREMIUM_MONTHLY, PREMIUM_YEARLY)}
PAID_PLANS: dict[str, Plan] = {name: plan for name, plan in PLANS.items() if plan.paid}

# Subscription statuses (Stripe's words) that keep a paid plan's entitlements. `past_due`
# is in: Stripe is still retrying the payment, and taking features away from someone
# whose card expired yesterday would be hostile. Everything else (`canceled`, `unpaid`,
# `incomplete`, `incomplete_expired`, `paused`) falls back to the free plan.
ENTITLED_STATUSES = frozenset({"active", "trialing", "past_due"})

# The status of a user who never subscribed.
NO_SUBSCRIPTION = "none"

LIMIT_NOUNS = {
    "switches": ("switch", "switches"),
    "messages_per_switch": ("message per switch", "messages per switch"),
    "recipients_per_message": ("recipient per message", "recipients per message"),
    "body_bytes": ("byte per message", "bytes per message"),
}


@dataclass(frozen=True)
class PlanLimits:
    """The limits in force for one user, and where they came from.

    `source` is "billing" (asked just now), "cache" (from the service's own copy of
    `PlanChanged`) or "fallback" (billing unreachable and nothing cached: the free plan,
    to be applied to new content only, never to anything that exists or is released).
    """

    plan: str
    status: str
    entitlements: Entitlements
    source: str = "billing"
    revision: int = 0

    def allowed(self, limit: str) -> int:
        if limit not in LIMIT_NOUNS:
            raise ValueError(f"unknown limit {limit!r}")
        return int(getattr(self.entitlements, limit))

    def require(self, limit: str, wanted: int) -> None:
        """Refuse with 402 unless `wanted` (the total after the change) fits the plan.

        Call it only for new content: creating a switch, adding a message or recipient,
        growing a body. Never for what already exists, never on a release.
        """
        allowed = self.allowed(limit)
        if wanted <= allowed:
            return
        singular, plural = LIMIT_NOUNS[limit]
        noun = singular if allowed == 1 else plural
        title = PLANS[self.plan].title if self.plan in PLANS else self.plan
        raise PaymentRequired(
            f"your {title} plan allows {allowed} {noun}; upgrade to go beyond it",
            details={"limit": limit, "allowed": allowed, "wanted": wanted, "plan": self.plan},
        )

    def as_dict(self) -> dict[str, Any]:
        return {"plan": self.plan, "status": self.status,
                "entitlements": self.entitlements.as_dict(), "revision": self.revision}


def free_limits(source: str = "billing", status: str = NO_SUBSCRIPTION) -> PlanLimits:
    """The free plan's limits."""
    return PlanLimits(FREE.name, status, FREE_ENTITLEMENTS, source=source)
