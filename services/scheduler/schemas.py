"""Requests and answers of the switch and check-in API: the gateway validates HTTP bodies
with these models and builds the OpenAPI document from them; the service validates its RPC
arguments with them again. Durations are whole seconds, times UTC ISO-8601."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    model_validator,
)

from services.scheduler.switches import CONFIRMATIONS, MAX_HOLDS_PER_CYCLE, MAX_REMINDERS, STATES
from services.scheduler.trusted_contacts import EMAIL_MAX_LENGTH, NAME_MAX_LENGTH, STATUSES

SWITCH_ID_MAX_LENGTH = 64

State = Literal[STATES]  # type: ignore[valid-type]
Confirmation = Literal[CONFIRMATIONS]  # type: ignore[valid-type]
ContactStatus = Literal[STATUSES]  # type: ignore[valid-type]


def _not_given(schema: dict) -> None:
    # The field is optional but may not be null: "not given" has no JSON value to show.
    schema.pop("default", None)


def _no_number(value: object) -> object:
    # pydantic would read 0 or 1.7e9 as seconds since 1970; a time here is ISO-8601 text.
    if isinstance(value, int | float):
        raise ValueError("must be a date and time such as 2030-01-31T18:00:00Z")
    return value


class Strict(BaseModel):
    """Unknown fields are refused, so a typo is an error rather than silently ignored."""

    model_config = ConfigDict(extra="forbid")


class SwitchSettings(Strict):
    """Settings of a switch. Omitted fields keep their value; `paused_until: null` resumes.

    The shortest interval and grace are the service's `JICM_MIN_INTERVAL`.
    """

    # Typed without None: the default is "not given", an explicit null is refused.
    interval_seconds: StrictInt = Field(
        None, ge=1, description="how often you must check in, in seconds", examples=[2_592_000],
        json_schema_extra=_not_given,
    )
    grace_seconds: StrictInt = Field(
        None, ge=1, description="how long after a missed deadline before release, in seconds",
        examples=[604_800], json_schema_extra=_not_given,
    )
    reminders_seconds: list[StrictInt] = Field(
        None, max_length=MAX_REMINDERS,
        description="when to remind you, in seconds before the deadline",
        examples=[[259_200, 86_400, 3_600]], json_schema_extra=_not_given,
    )
    paused_until: Annotated[AwareDatetime | None, BeforeValidator(_no_number)] = Field(
        None, description="pause the switch until this time (at most 90 days); null resumes",
    )
    hold_seconds: StrictInt = Field(
        None, ge=1, description="how far one hold by a trusted contact moves the end of "
        "grace, in seconds", examples=[604_800], json_schema_extra=_not_given,
    )
    confirmation: Confirmation = Field(
        None, description="`required`: the switch fires at the end of grace only once a "
        "trusted contact confirms you cannot check in (or confirmation_wait_seconds later)",
        json_schema_extra=_not_given,
    )
    confirmation_wait_seconds: StrictInt = Field(
        None, ge=1, description="with confirmation required: how long after the end of grace "
        "the switch fires anyway without a confirmation, in seconds", examples=[1_209_600],
        json_schema_extra=_not_given,
    )

    def changes(self) -> dict:
        """Only the fields the client sent (send `model_dump(mode="json", exclude_unset=True)`
        over RPC, and validate it into this model again on the other side)."""
        return self.model_dump(exclude_unset=True)


class SwitchUpdate(SwitchSettings):
    """`PUT /api/v1/switches/<id>`: at least one setting."""

    @model_validator(mode="after")
    def _something(self) -> SwitchUpdate:
        if not self.model_fields_set:
            raise ValueError(
                "give at least one of interval_seconds, grace_seconds, reminders_seconds, "
                "paused_until, hold_seconds, confirmation, confirmation_wait_seconds"
            )
        return self


class SwitchView(BaseModel):
    """A switch as its owner sees it."""

    id: str
    state: State
    cycle: int = Field(description="advances with every check-in and settings change")
    interval_seconds: int
    grace_seconds: int
    reminders_seconds: list[int]
    paused_until: AwareDatetime | None
    deadline: AwareDatetime | None = Field(description="check in before this time")
    grace_ends_at: AwareDatetime | None = Field(
        description="while overdue: when the switch fires without a check-in"
    )
    last_checkin_at: AwareDatetime | None
    fired_at: AwareDatetime | None
    created_at: AwareDatetime
    hold_seconds: int
    confirmation: Confirmation
    confirmation_wait_seconds: int
    holds_used: int = Field(description=f"while overdue: holds by trusted contacts in this "
                            f"cycle (at most {MAX_HOLDS_PER_CYCLE})")
    confirmed_at: AwareDatetime | None = Field(
        description="while overdue: when a trusted contact confirmed you cannot check in")


class SwitchList(BaseModel):
    switches: list[SwitchView]


class CheckInRequest(Strict):
    """Check in every switch (send `{}`), or one by its id."""

    switch_id: str | None = Field(None, min_length=1, max_length=SWITCH_ID_MAX_LENGTH)


# The vault tells at most this many released switches in one question.
MAX_RELEASES_PER_QUESTION = 500


class ReleasedSwitch(Strict):
    """A fired switch every message of which was handed to delivery, in the cycle it fired."""

    switch_id: str = Field(min_length=1, max_length=SWITCH_ID_MAX_LENGTH)
    cycle: StrictInt = Field(ge=1)


class ReleasedSwitches(Strict):
    """The vault's word on several switches at once."""

    releases: list[ReleasedSwitch] = Field(min_length=1, max_length=MAX_RELEASES_PER_QUESTION)


class SkippedSwitch(BaseModel):
    id: str
    state: State
    reason: str


class CheckInResult(BaseModel):
    """The switches this check-in moved, and those it could not (paused ones, say)."""

    switches: list[SwitchView]
    skipped: list[SkippedSwitch] = []


class LinkCheckIn(BaseModel):
    """What the one-click link did; no personal data (mail scanners read these pages)."""

    status: Literal["valid", "checked_in"]
    deadline: AwareDatetime | None = None


class ClientContext(BaseModel):
    """What the gateway tells a service about the HTTP client (never trusted for auth)."""

    model_config = ConfigDict(extra="forbid")

    ip: str | None = None
    user_agent: str | None = Field(None, max_length=512)


# --- trusted contacts ---------------------------------------------------------------------


class TrustedContactRequest(Strict):
    """`POST /api/v1/switches/<id>/trusted-contacts`: someone to invite as a trusted contact."""

    name: str = Field(min_length=1, max_length=NAME_MAX_LENGTH, examples=["Sam Rivera"])
    email: str = Field(min_length=3, max_length=EMAIL_MAX_LENGTH, examples=["sam@example.org"])


class TrustedContactView(BaseModel):
    """A trusted contact as the owner sees them."""

    id: str
    name: str
    email: str
    status: ContactStatus = Field(description="invited, accepted or declined")
    invited_at: AwareDatetime
    decided_at: AwareDatetime | None


class TrustedContactList(BaseModel):
    trusted_contacts: list[TrustedContactView]
    limit: int = Field(description="how many trusted contacts this switch may have on your plan")


class InvitationView(BaseModel):
    """What the invitation page shows: who asks, and what the role means. Nothing else."""

    status: ContactStatus
    owner_email: str
    contact_name: str
    notice: str
    notice_version: str


class ContactRequestView(BaseModel):
    """What a contact's `/t/<token>` page shows and did: no message, no recipient."""

    status: Literal["asked", "held", "confirmed"]
    owner_email: str
    grace_ends_at: AwareDatetime
    holds_left: int
    can_hold: bool
    can_confirm: bool
    hold_seconds: int
