"""Plan limits on messages: how many per switch, recipients per message, body size.

The defaults are the free plan's, from configuration. Billing announces each user's
entitlements with `PlanChanged`; the newest announcement (by `occurred_at`) is kept in
the vault's own `entitlements` collection, so a check never waits for billing.

A downgrade keeps what exists: messages above the new limits stay and are still
released. An existing message may be edited as long as the edit does not make it grow
past a limit it does not already exceed: a message with five recipients under a
three-recipient plan may lose recipients or change its text, not gain a sixth; a body
already over the new size may shrink or stay as large, not grow.

Limits only ever refuse new content. Nothing about plans or payment affects a release.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.config import Settings
from shared.errors import PaymentRequired
from shared.events.schemas import PlanChanged
from shared.storage import Collection, DuplicateKeyError


@dataclass(frozen=True)
class Limits:
    messages_per_switch: int
    recipients_per_message: int
    body_bytes: int


@dataclass(frozen=True)
class Size:
    """How big a message is, in the units the limits count."""

    recipients: int
    body_bytes: int


def default_limits(settings: Settings) -> Limits:
    """The free plan's limits, from configuration."""
    return Limits(
        messages_per_switch=settings.max_messages_per_switch,
        recipients_per_message=settings.max_recipients_per_message,
        body_bytes=settings.max_body_bytes_per_message,
    )


def body_bytes(body: str) -> int:
    return len(body.encode("utf-8"))


def limits_for(entitlements: Collection, user_id: str, defaults: Limits) -> Limits:
    """The user's current limits: billing's last word, else the free plan's."""
    doc = entitlements.get(user_id)
    if doc is None:
        return defaults
    return Limits(
        messages_per_switch=doc["messages_per_switch"],
        recipients_per_message=doc["recipients_per_message"],
        body_bytes=doc["body_bytes"],
    )


def record_plan_change(
    entitlements: Collection, user_id: str, change: PlanChanged, occurred_at: datetime
) -> bool:
    """Keep the announcement if it is newer than the one kept. True if it was kept."""
    values = {
        "plan": change.plan,
        "status": change.status,
        "messages_per_switch": change.entitlements.messages_per_switch,
        "recipients_per_message": change.entitlements.recipients_per_message,
        "body_bytes": change.entitlements.body_bytes,
        "occurred_at": occurred_at,
    }
    try:
        # Matches an older record (updated) or none (inserted); a newer record makes the
        # upsert collide on _id, which means: ignore this stale announcement.
        entitlements.update_one(
            {"_id": user_id, "occurred_at": {"$lt": occurred_at}}, {"$set": values}, upsert=True
        )
    except DuplicateKeyError:
        return False
    return True


def check_new_message(limits: Limits, size: Size, messages_in_switch: int) -> None:
    """Refuse a new message over any limit (402, naming the limit and its value)."""
    if messages_in_switch >= limits.messages_per_switch:
        raise message_limit_reached(limits)
    check_size(limits, size, before=None)


def message_limit_reached(limits: Limits) -> PaymentRequired:
    return _over("messages_per_switch", limits.messages_per_switch,
                 f"your plan allows {limits.messages_per_switch} messages per switch")


def check_size(limits: Limits, size: Size, before: Size | None) -> None:
    """Refuse a message that is, or grows, past its plan's size limits.

    `before` is the message's size before an edit: a message already over a limit
    (after a downgrade) may stay that large, not grow.
    """
    allowed_recipients = max(limits.recipients_per_message, before.recipients if before else 0)
    if size.recipients > allowed_recipients:
        raise _over("recipients_per_message", limits.recipients_per_message,
                    f"your plan allows {limits.recipients_per_message} recipients per message")
    allowed_bytes = max(limits.body_bytes, before.body_bytes if before else 0)
    if size.body_bytes > allowed_bytes:
        raise _over("body_bytes", limits.body_bytes,
                    f"your plan allows message bodies of {limits.body_bytes} bytes "
                    f"(UTF-8); this one has {size.body_bytes}")


def _over(limit: str, value: int, message: str) -> PaymentRequired:
    return PaymentRequired(message, details={"limit": limit, "value": value})
