"""Accounts' collections, their indexes, and the repository the domain logic uses."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.events.outbox import new_document_with_events, strip_outbox
from shared.storage import Database, DuplicateKeyError, Index
from shared.throttle import THROTTLE_INDEXES, Throttle

USERS = "users"
SESSIONS = "sessions"
THROTTLE = "throttle"

INDEXES: dict[str, list[Index]] = {
    # The case-folded address is the identity: Ada@Example.org and ada@example.org are one.
    USERS: [Index.on("email_key", unique=True)],
    SESSIONS: [Index.on("user_id"), Index.on("expires_at", expire_after_seconds=0)],
    THROTTLE: THROTTLE_INDEXES,
}


class EmailTaken(Exception):
    """Another account already has this address."""


class AccountsRepository:
    """Users and sessions, over the accounts service's own database."""

    def __init__(self, db: Database) -> None:
        self.users = db.collection(USERS)
        self.sessions = db.collection(SESSIONS)
        self.throttle = Throttle(db.collection(THROTTLE))

    # Users --------------------------------------------------------------------------

    def add_user(self, user: dict[str, Any], registered_event: dict, now: datetime) -> None:
        """Store a new user together with its UserRegistered event, in one write."""
        try:
            self.users.insert(new_document_with_events(user, registered_event, now=now))
        except DuplicateKeyError:
            raise EmailTaken() from None

    def user(self, user_id: str) -> dict[str, Any] | None:
        return strip_outbox(self.users.get(user_id))

    def user_by_email_key(self, email_key: str) -> dict[str, Any] | None:
        return strip_outbox(self.users.find_one({"email_key": email_key}))

    # Sessions -----------------------------------------------------------------------

    def add_session(self, session: dict[str, Any]) -> None:
        self.sessions.insert(session)

    def session(self, token_hash: str) -> dict[str, Any] | None:
        return self.sessions.get(token_hash)

    def delete_session(self, token_hash: str) -> bool:
        return self.sessions.delete_one({"_id": token_hash})
