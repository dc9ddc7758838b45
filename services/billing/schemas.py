"""Requests and answers of the billing API: the gateway validates HTTP bodies with these
models and builds the OpenAPI document from them; the service validates again."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

PaidPlanName = Literal["premium_monthly", "premium_yearly"]


class Strict(BaseModel):
    """Unknown fields are refused, so a typo is an error rather than silently ignored."""

    model_config = ConfigDict(extra="forbid")


class StartCheckout(Strict):
    plan: PaidPlanName = Field(description="the plan to subscribe to",
                               examples=["premium_monthly"])


class CheckoutSession(BaseModel):
    url: str = Field(description="Stripe's payment page: send the user there")
    plan: str
    expires_at: AwareDatetime = Field(description="the page stops accepting payment then")


class PortalSession(BaseModel):
    url: str = Field(description="Stripe's customer portal: plan, card, invoices, cancel")


class PlanEntitlements(BaseModel):
    switches: int
    messages_per_switch: int
    recipients_per_message: int
    body_bytes: int


class BillingOverview(BaseModel):
    plan: str = Field(description="free, premium_monthly or premium_yearly")
    plan_title: str
    status: str = Field(description="the subscription's status (Stripe's words), or none")
    entitlements: PlanEntitlements
    renews_at: AwareDatetime | None = Field(
        None, description="when the subscription renews (and is charged) next"
    )
    ends_at: AwareDatetime | None = Field(
        None, description="when a subscription set to cancel stops giving its plan"
    )
    can_manage: bool = Field(description="whether the customer portal is available")


class WebhookReceipt(BaseModel):
    received: bool
    outcome: str
