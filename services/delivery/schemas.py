"""Requests and answers of the delivery service's RPC methods."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# `bounced`: the recipient's side refused the address for good; `failed`: any other
# reason the mail will not leave by itself (ours to fix: a resend sends it).
MailStatus = Literal["unknown", "pending", "sent", "bounced", "failed"]
MAX_STATUS_REFERENCES = 500


class MailRequest(BaseModel):
    """One mail to one recipient. (kind, reference, to) is its identity: asking twice
    for the same mail returns the first record and sends nothing new."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(min_length=1, max_length=64)
    reference: str = Field(min_length=1, max_length=200)
    to: str = Field(min_length=3, max_length=254)
    to_name: str | None = Field(None, max_length=200)
    user_id: str | None = Field(None, min_length=1, max_length=64)
    context: dict[str, str] = {}


class Delivery(BaseModel):
    """What `delivery.send` answers: the record and where it stands."""

    id: str
    kind: str
    reference: str
    state: str
    status: MailStatus
    created: bool = Field(description="False when the same mail had been asked for before")


class StatusRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(min_length=1, max_length=64)
    references: list[str] = Field(max_length=MAX_STATUS_REFERENCES)


class ReminderStatus(BaseModel):
    """Where one reminder stands, as the scheduler asks before a switch may fire."""

    status: MailStatus
    settled_at: datetime | None = None
    last_error: str | None = None


class ReminderStatusRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    references: list[str] = Field(max_length=MAX_STATUS_REFERENCES)
