"""Sessions as the rest of the system sees them.

A session is stored under its id, the SHA-256 of its token: the token itself is never
kept, and the gateway, which holds the token for the length of a request, derives the
same id to key its short-lived cache of resolved sessions (gateway/sessions.py).

Whenever a session ends early (log-out, signing out everywhere, a password change or
reset, the account closed or expired) or the profile a gateway may have cached changes
(the address verified, the time zone chosen), the same write that makes the change puts
an `AccountChanged` broadcast in the user's outbox, so every gateway worker forgets what
it cached about that user within moments.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from shared.events import new_event


def session_id(token: str) -> str:
    """Where the session of `token` is stored: the hex SHA-256 of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def account_changed(user_id: str, reason: str, *, now: datetime,
                    sessions: list[str] | None = None, request_id: str | None = None) -> dict:
    """The `AccountChanged` broadcast: forget the listed sessions of `user_id` (None: all)."""
    return new_event(
        "AccountChanged",
        {"user_id": user_id, "reason": reason, "sessions": sessions},
        producer="accounts",
        now=now,
        request_id=request_id,
    )
