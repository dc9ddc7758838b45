"""Plan limits on messages: how many per switch, recipients per message, body size.

The limits themselves are billing's, read through `shared.entitlements` (the vault's own
copy of each user's `PlanChanged`, billing asked when that copy says "free" or nothing,
the free plan of `shared.plans` when billing cannot be reached). This module holds only
the vault's own rule for applying them.

A downgrade keeps what exists: messages above the new limits stay and are still
released. An existing message may be edited as long as the edit does not make it grow
past a limit it does not already exceed: a message with five recipients under a
three-recipient plan may lose recipients or change its text, not gain a sixth; a body
already over the new size may shrink or stay as large, not grow.

Limits only ever refuse new content. Nothing about plans or payment affects a release.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.plans import PlanLimits


@dataclass(frozen=True)
class Size:
    """How big a message is, in the units the limits count."""

    recipients: int
    body_bytes: int


def body_bytes(body: str) -> int:
    return len(body.encode("utf-8"))


def check_new_message(limits: PlanLimits, size: Size, messages_in_switch: int) -> None:
    """Refuse a new message over any limit (402, naming the limit and what is allowed)."""
    limits.require("messages_per_switch", messages_in_switch + 1)
    check_size(limits, size, before=None)


def check_size(limits: PlanLimits, size: Size, before: Size | None) -> None:
    """Refuse a message that is, or grows, past its plan's size limits.

    `before` is the message's size before an edit: a message already over a limit
    (after a downgrade) may stay that large, not grow.
    """
    if before is None or size.recipients > before.recipients:
        limits.require("recipients_per_message", size.recipients)
    if before is None or size.body_bytes > before.body_bytes:
        limits.require("body_bytes", size.body_bytes)
