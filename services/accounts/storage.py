"""Accounts' collections, their indexes, and the repository the domain logic uses."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.accounts.metrics import SIGN_UPS
from shared.events.outbox import new_document_with_events, strip_outbox, with_event
from shared.storage import Database, DuplicateKeyError, Index
from shared.throttle import THROTTLE_INDEXES, Throttle

USERS = "users"
SESSIONS = "sessions"
THROTTLE = "throttle"
TOKENS = "tokens"
RECOVERY_CODES = "recovery_codes"
SECOND_STEPS = "second_steps"

INDEXES: dict[str, list[Index]] = {
    USERS: [
        # The case-folded address is the identity: Ada@Example.org and ada@example.org are one.
        Index.on("email_key", unique=True),
        # Retention finds accounts never verified, by age (services/accounts/privacy.py).
        Index.on("email_verified", "status", "created_at"),
    ],
    SESSIONS: [Index.on("user_id"), Index.on("expires_at", expire_after_seconds=0)],
    THROTTLE: THROTTLE_INDEXES,
    TOKENS: [Index.on("user_id", "purpose"), Index.on("purge_at", expire_after_seconds=0)],
    # Two-factor sign-in (totp.py): the hashed recovery codes, and the challenges of log-ins
    # waiting for their code (gone a few minutes after they expire).
    RECOVERY_CODES: [Index.on("user_id")],
    SECOND_STEPS: [Index.on("user_id"), Index.on("expires_at", expire_after_seconds=0)],
}


def with_events(update: dict[str, Any], events: list[dict], *, now: datetime) -> dict[str, Any]:
    """`update` extended to append each of `events` to the document's outbox."""
    for event in events:
        update = with_event(update, event, now=now)
    return update


class EmailTaken(Exception):
    """Another account already has this address."""


class AccountsRepository:
    """Users and sessions, over the accounts service's own database."""

    def __init__(self, db: Database) -> None:
        self.users = db.collection(USERS)
        self.sessions = db.collection(SESSIONS)
        self.throttle = Throttle(db.collection(THROTTLE))
        self.tokens = db.collection(TOKENS)
        self.recovery_codes = db.collection(RECOVERY_CODES)
        self.second_steps = db.collection(SECOND_STEPS)

    # Users --------------------------------------------------------------------------

    def add_user(self, user: dict[str, Any], events: list[dict], now: datetime) -> None:
        """Store a new user together with its events (UserRegistered...), in one write."""
        try:
            self.users.insert(new_document_with_events(user, *events, now=now))
        except DuplicateKeyError:
            raise EmailTaken() from None
        SIGN_UPS.inc()

    def announce(self, user_id: str, event: dict, now: datetime) -> bool:
        """Put `event` (a MailRequested...) in the user's outbox; False if the user is gone."""
        return self.users.update_one({"_id": user_id}, with_event({}, event, now=now)) is not None

    def mark_verified(self, user: dict[str, Any], events: list[dict], now: datetime) -> bool:
        """Verify the user's current address, once, announcing `events` (EmailVerified...).

        Only an active account: one being closed (its erasure under way) must not arm a switch.
        """
        done = self.users.update_one(
            {"_id": user["_id"], "email_key": user["email_key"], "email_verified": False,
             "status": "active"},
            with_events({"$set": {"email_verified": True, "email_verified_at": now}}, events,
                        now=now),
        )
        return done is not None

    def set_password(self, user_id: str, password_hash: str, event: dict,
                     now: datetime) -> bool:
        """Replace the password, announcing `event` (AccountChanged); every session opened
        before `now` stops working."""
        done = self.users.update_one(
            {"_id": user_id, "status": "active"},
            with_event({"$set": {"password_hash": password_hash, "password_changed_at": now}},
                       event, now=now),
        )
        return done is not None

    def set_profile(self, user_id: str, fields: dict[str, Any], event: dict,
                    now: datetime) -> dict[str, Any] | None:
        """Set the owner's own choices (their time zone) on an active user, announcing
        `event` (AccountChanged)."""
        return strip_outbox(self.users.update_one({"_id": user_id, "status": "active"},
                                                  with_event({"$set": fields}, event, now=now)))

    # Two-factor sign-in ---------------------------------------------------------------

    def start_totp(self, user_id: str, set_up_id: str, sealed_secret: bytes,
                   now: datetime) -> bool:
        """Keep a set-up's secret until a first code confirms it (a new start replaces it)."""
        done = self.users.update_one(
            {"_id": user_id, "status": "active"},
            {"$set": {"totp_pending_id": set_up_id, "totp_pending_secret": sealed_secret,
                      "totp_pending_at": now}},
        )
        return done is not None

    def enable_totp(self, user: dict[str, Any], step: int, code_ids: list[str],
                    now: datetime) -> bool:
        """Turn two-factor sign-in on with the pending secret, once, and store the hashes
        of fresh recovery codes in place of any older ones.

        The codes are stored first: a crash in between leaves codes of an account that is
        not on (inert, and replaced by the next confirmation), never an account that is on
        without its codes.
        """
        for code_id in code_ids:
            self.recovery_codes.insert({"_id": code_id, "user_id": user["_id"],
                                        "created_at": now, "used_at": None})
        done = self.users.update_one(
            {"_id": user["_id"], "status": "active",
             "totp_pending_id": user["totp_pending_id"]},
            {"$set": {"totp_secret": user["totp_pending_secret"], "totp_enabled_at": now,
                      "totp_last_step": step},
             "$unset": {"totp_pending_id": "", "totp_pending_secret": "",
                        "totp_pending_at": ""}},
        )
        if done is None:
            self.recovery_codes.delete_many({"_id": {"$in": code_ids}})
            return False
        self.recovery_codes.delete_many({"user_id": user["_id"], "_id": {"$nin": code_ids}})
        return True

    def use_totp_step(self, user_id: str, step: int) -> bool:
        """Compare-and-set: a code's time step is used once, and never one older than the
        last one used."""
        done = self.users.update_one(
            {"_id": user_id, "totp_secret": {"$exists": True}, "totp_last_step": {"$lt": step}},
            {"$set": {"totp_last_step": step}},
        )
        return done is not None

    def use_recovery_code(self, code_id: str, user_id: str, now: datetime) -> bool:
        """Compare-and-set: mark an unused recovery code of this user used."""
        done = self.recovery_codes.update_one(
            {"_id": code_id, "user_id": user_id, "used_at": None}, {"$set": {"used_at": now}})
        return done is not None

    def recovery_codes_left(self, user_id: str) -> int:
        return self.recovery_codes.count({"user_id": user_id, "used_at": None})

    def disable_totp(self, user_id: str) -> bool:
        """Turn two-factor sign-in off: its secret, codes and waiting log-ins go."""
        done = self.users.update_one(
            {"_id": user_id, "totp_secret": {"$exists": True}},
            {"$unset": {"totp_secret": "", "totp_enabled_at": "", "totp_last_step": "",
                        "totp_pending_id": "", "totp_pending_secret": "",
                        "totp_pending_at": ""}},
        )
        self.recovery_codes.delete_many({"user_id": user_id})
        self.second_steps.delete_many({"user_id": user_id})
        return done is not None

    def add_second_step(self, challenge: dict[str, Any]) -> None:
        self.second_steps.insert(challenge)

    def second_step(self, challenge_id: str) -> dict[str, Any] | None:
        return self.second_steps.get(challenge_id)

    def use_second_step(self, challenge_id: str, now: datetime) -> bool:
        """Compare-and-set: a challenge opens one session, once, before it expires."""
        done = self.second_steps.update_one(
            {"_id": challenge_id, "used_at": None, "expires_at": {"$gt": now}},
            {"$set": {"used_at": now}})
        return done is not None

    # Link tokens --------------------------------------------------------------------

    def add_token(self, token: dict[str, Any]) -> None:
        self.tokens.insert(token)

    def delete_token(self, token_id: str) -> None:
        self.tokens.delete_one({"_id": token_id})

    def token(self, token_id: str) -> dict[str, Any] | None:
        return self.tokens.get(token_id)

    def use_token(self, token_id: str, purpose: str, now: datetime) -> dict[str, Any] | None:
        """Compare-and-set: mark an unused, unexpired token used; None if it was not."""
        return self.tokens.update_one(
            {"_id": token_id, "purpose": purpose, "used_at": None, "expires_at": {"$gt": now}},
            {"$set": {"used_at": now}},
        )

    def revoke_tokens(self, user_id: str, purpose: str, now: datetime) -> int:
        """End every unused token of one purpose (after a reset, or once verified)."""
        return self.tokens.update_many(
            {"user_id": user_id, "purpose": purpose, "used_at": None},
            {"$set": {"used_at": now, "revoked": True}},
        )

    def user(self, user_id: str) -> dict[str, Any] | None:
        return strip_outbox(self.users.get(user_id))

    def user_by_email_key(self, email_key: str) -> dict[str, Any] | None:
        return strip_outbox(self.users.find_one({"email_key": email_key}))

    # Sessions -----------------------------------------------------------------------

    def add_session(self, session: dict[str, Any]) -> None:
        self.sessions.insert(session)

    def session(self, token_hash: str) -> dict[str, Any] | None:
        return self.sessions.get(token_hash)

    def sessions_of(self, user_id: str) -> list[dict[str, Any]]:
        return self.sessions.find({"user_id": user_id}, sort=[("created_at", 1)])

    def delete_session(self, token_hash: str) -> bool:
        return self.sessions.delete_one({"_id": token_hash})

    def end_sessions(self, user_id: str, event: dict, now: datetime) -> int:
        """Delete every session of the user, then announce it (AccountChanged): deleted
        first, so a gateway that hears the event and asks again finds nothing to cache."""
        ended = self.delete_sessions(user_id)
        self.announce(user_id, event, now)
        return ended

    def delete_sessions(self, user_id: str) -> int:
        return self.sessions.delete_many({"user_id": user_id})
