"""The signed-in user's plan, for stating limits before they are reached."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import ApiError
from gateway.remote import call
from shared.errors import ServiceError
from shared.plans import FREE, PAID_PLANS, PLANS, Entitlements


@dataclass(frozen=True)
class PlanView:
    title: str
    paid: bool
    limits: Entitlements
    upgrade: Entitlements | None  # what a paid plan would allow, while on the free plan


def plan_of(user_id: str) -> PlanView:
    """Billing's word on the user's plan; the free plan's limits if billing cannot say
    (the vault and the scheduler enforce the real ones either way)."""
    try:
        overview = call("billing", "overview", user_id)
    except (ServiceError, ApiError):
        overview = {"plan": FREE.name, "entitlements": FREE.entitlements.as_dict()}
    plan = PLANS.get(overview["plan"], FREE)
    upgrade = None if plan.paid else next(iter(PAID_PLANS.values())).entitlements
    return PlanView(title=plan.title, paid=plan.paid,
                    limits=Entitlements.from_dict(overview["entitlements"]), upgrade=upgrade)
