"""One schema per event of the design's table: the `data` part of each envelope.

Producers validate before an event enters an outbox; consumers validate again on
receipt, so a malformed event is caught at the edge and parked in a dead-letter queue
with the reason, never half-handled. No event ever carries message content: ids,
addresses and times only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

Stage = Literal["upcoming", "overdue"]


class EventData(BaseModel):
    """Strict by default: a field that nobody declared is a bug on one side or the other."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ClientInfo(EventData):
    """Where a request came from, kept minimal: a truncated IP and the user agent."""

    ip_truncated: str | None = None
    user_agent: str | None = Field(None, max_length=512)


class UserRegistered(EventData):
    user_id: str
    email: str
    policy_version: str
    client: ClientInfo = ClientInfo()
    # The cookie choice the person made on the site before signing up, as privacy files
    # it (`shared.visitors.visitor_consent_id`): it joins the new account's consent.
    visitor_consent_id: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


class EmailVerified(EventData):
    user_id: str
    email: str


class CheckedIn(EventData):
    user_id: str
    switch_id: str
    cycle: int
    deadline: AwareDatetime
    method: Literal["api", "link"]


class ReminderDue(EventData):
    """`checkin_token` is the one-click link's token: signed, bound to switch and cycle."""

    user_id: str
    switch_id: str
    cycle: int
    step: int
    stage: Stage
    deadline: AwareDatetime
    email: str
    checkin_token: str


class ReminderSettled(EventData):
    """Delivery's word that a reminder will not wait any longer: `sent` (the mail server
    accepted it, at `settled_at`) or `bounced` (the owner's side refused the address for
    good). The scheduler records it on the switch, where it cannot be forgotten."""

    user_id: str
    switch_id: str
    cycle: int
    step: int
    outcome: Literal["sent", "bounced"]
    settled_at: AwareDatetime


class CheckInMissed(EventData):
    user_id: str
    switch_id: str
    cycle: int
    deadline: AwareDatetime
    fired_at: AwareDatetime


class ReleasedRecipient(EventData):
    """`read_token` opens this message for this recipient at `/r/<token>`, nothing else."""

    recipient_id: str
    name: str
    email: str
    read_token: str


class MessageReleased(EventData):
    user_id: str
    switch_id: str
    message_id: str
    sender_name: str
    recipients: list[ReleasedRecipient]
    inline: bool = False


class DeliveryFailed(EventData):
    delivery_id: str
    kind: str
    reference: str
    recipient: str
    reason: str
    attempts: int


class Entitlements(EventData):
    switches: int
    messages_per_switch: int
    recipients_per_message: int
    body_bytes: int


class PlanChanged(EventData):
    """`revision` counts billing's changes of one user's plan: higher is newer, so a
    consumer that sees events out of order keeps the newest (`shared.entitlements`)."""

    user_id: str
    plan: str
    status: str
    entitlements: Entitlements
    revision: int = 0


class MarketingConsent(EventData):
    email: bool = False
    postal: bool = False
    phone: bool = False
    sms: bool = False


class CookieConsent(EventData):
    analytics: bool = False
    marketing: bool = False


class ConsentChanged(EventData):
    user_id: str
    marketing: MarketingConsent
    cookies: CookieConsent
    gpc: bool = False
    source: str


class ErasureRequested(EventData):
    request_id: str
    user_id: str
    reason: Literal["user", "child", "retention"]
    email: str | None = None


class MailRequested(EventData):
    """Another service asks delivery for a transactional mail (verification, reset, receipts).

    Not in the design's table: a mail requested together with the write that needs it
    must survive a crash between the two, which an event through the outbox gives and a
    bare RPC does not. `context` holds the template's values (links, names), never
    message content.
    """

    kind: str
    reference: str
    to: str
    to_name: str | None = None
    user_id: str | None = None
    context: dict[str, str] = {}


class ErasureCompleted(EventData):
    request_id: str
    user_id: str
    service: str
    summary: dict[str, int] = {}


class AccountExpired(EventData):
    """Accounts' retention found an account that was never verified within its window:
    privacy erases it through the erasure saga (reason `retention`)."""

    user_id: str
    email: str
    reason: Literal["unverified"] = "unverified"


AccountChangeReason = Literal[
    "log_out", "sessions_ended", "password_changed", "password_reset", "account_closed",
    "account_expired", "account_erased", "email_verified", "profile_changed",
]


class AccountChanged(EventData):
    """Sessions ended or a profile changed: every gateway worker forgets what it cached.

    A broadcast (`jicm.broadcast`), heard by every gateway process through a queue of its
    own: `sessions` lists the ended sessions' ids (the SHA-256 of their tokens, never a
    token); null means every session of the user."""

    user_id: str
    reason: AccountChangeReason
    sessions: list[str] | None = None


class Unsubscribed(EventData):
    """Someone used the unsubscribe link of a marketing mail: delivery stopped marketing at
    once; privacy records the consent receipt (method `unsubscribe_link`)."""

    user_id: str
    channel: Literal["email"] = "email"
    source: str


EVENT_SCHEMAS: dict[str, type[EventData]] = {
    cls.__name__: cls
    for cls in (
        UserRegistered,
        EmailVerified,
        CheckedIn,
        ReminderDue,
        ReminderSettled,
        CheckInMissed,
        MessageReleased,
        DeliveryFailed,
        PlanChanged,
        ConsentChanged,
        ErasureRequested,
        ErasureCompleted,
        MailRequested,
        AccountExpired,
        Unsubscribed,
        AccountChanged,
    )
}

# Bumped when a schema changes incompatibly; consumers refuse versions they don't know.
EVENT_VERSIONS: dict[str, int] = {name: 1 for name in EVENT_SCHEMAS}
