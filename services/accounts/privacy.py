"""Accounts' part in privacy: re-authentication, closing, export, erasure and retention.

- `verify_password`: the password again before an erasure, in constant time (an unknown
  user is checked against the decoy hash) and limited like a log-in: failures count
  against the same per-account limit.
- `close_account`: the moment an erasure is asked for, the account stops working (status
  `closing`, every session ended), while the services erase their parts.
- `export_user`: the account (whether two-factor sign-in is on, and since when), its
  sessions and its mailed links, never a password hash, a token, the two-factor secret or a
  recovery code (hashes or sealed, and credentials rather than information about you).
- `erase_user`: the user (the sealed two-factor secret with it), their sessions, their
  links, their recovery codes and waiting log-ins, and the rate-limit counters kept under
  their id or hashed address. Idempotent. Before it, `announce_erasure` tells every
  gateway to forget the user's sessions (relayed before the user's document goes).
- `expire_unverified`: retention. An account never verified within
  `JICM_RETENTION_UNVERIFIED_DAYS` stops working (status `expired`, one compare-and-set)
  and `AccountExpired` goes out in the same write, so privacy erases it through the
  erasure saga (reason `retention`). A verified account is never touched, however long
  its owner has been silent: for this product, silence is the trigger, not a reason to
  delete.
- `find_user`: operators look an account up by address or id (`mark-child`).
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from typing import Any

from services.accounts.accounts import LOGIN_FAILURES_PER_ACCOUNT
from services.accounts.emails import normalize_email
from services.accounts.links import ACCOUNT_EXISTS_MAILS, RESETS_PER_ADDRESS, VERIFICATION_RESENDS
from services.accounts.passwords import PasswordHasher
from services.accounts.sessions import account_changed
from services.accounts.storage import AccountsRepository
from services.accounts.totp import WRONG_CODES_PER_ACCOUNT
from shared.errors import InvalidInput, RateLimited
from shared.events import new_event
from shared.events.outbox import with_event
from shared.privacy import forget_throttle
from shared.throttle import hashed_key

log = logging.getLogger(__name__)

ACTIVE, CLOSING, EXPIRED = "active", "closing", "expired"
RETENTION_BATCH = 100
USER_ID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

# Rate-limit counters kept under a user's id, and under the hash of their address.
THROTTLE_BY_USER = (VERIFICATION_RESENDS.scope, WRONG_CODES_PER_ACCOUNT.scope)
THROTTLE_BY_ADDRESS = (LOGIN_FAILURES_PER_ACCOUNT.scope, RESETS_PER_ADDRESS.scope,
                       ACCOUNT_EXISTS_MAILS.scope)


def verify_password(repo: AccountsRepository, hasher: PasswordHasher, user_id: str,
                    password: str, now: datetime) -> dict[str, Any]:
    """`{verified, retry_after_seconds}`: the user's password checked like a log-in."""
    user = repo.user(user_id)
    account_key = hashed_key(user["email_key"]) if user else hashed_key(f"unknown:{user_id}")
    try:
        repo.throttle.check(LOGIN_FAILURES_PER_ACCOUNT, account_key, now)
    except RateLimited as refused:
        return {"verified": False,
                "retry_after_seconds": refused.details.get("retry_after_seconds", 60)}
    password_hash = user["password_hash"] if user else hasher.decoy_hash
    verified = hasher.verify(password_hash, password) and user is not None
    if verified and user.get("status") != ACTIVE:
        verified = False
    if not verified:
        repo.throttle.hit(LOGIN_FAILURES_PER_ACCOUNT, account_key, now)
    return {"verified": verified, "retry_after_seconds": None}


def close_account(repo: AccountsRepository, user_id: str, now: datetime) -> bool:
    """Stop the account working at once (no log-in, no session, none cached by a gateway).
    True if it was active."""
    closed = repo.users.update_one(
        {"_id": user_id, "status": ACTIVE},
        with_event({"$set": {"status": CLOSING, "closed_at": now}},
                   account_changed(user_id, "account_closed", now=now), now=now))
    repo.delete_sessions(user_id)
    return closed is not None


def find_user(repo: AccountsRepository, email_or_id: str) -> dict[str, str] | None:
    """`{user_id, email}` of the account with this address or id, for operators."""
    if USER_ID_PATTERN.fullmatch(email_or_id):
        user = repo.user(email_or_id)
    else:
        try:
            _, email_key = normalize_email(email_or_id)
        except InvalidInput:
            return None
        user = repo.user_by_email_key(email_key)
    return {"user_id": user["_id"], "email": user["email"]} if user else None


def export_user(repo: AccountsRepository, user_id: str) -> dict[str, Any]:
    """Accounts' part of an export."""
    user = repo.user(user_id)
    if user is None:
        return {"account": None, "sessions": [], "links": []}
    account = {key: user.get(key) for key in (
        "email", "email_verified", "email_verified_at", "status", "created_at",
        "policy_version", "policy_accepted_at", "age_confirmed_at", "password_changed_at",
        "closed_at", "time_zone")}
    account["id"] = user["_id"]
    account["two_factor_enabled"] = user.get("totp_secret") is not None
    account["two_factor_enabled_at"] = user.get("totp_enabled_at")
    account["not_included"] = [
        "your password: kept only as an argon2id hash",
        "your two-factor secret and recovery codes: credentials, kept sealed or hashed",
    ]
    sessions = repo.sessions.find({"user_id": user_id}, sort=[("created_at", 1)])
    links = repo.tokens.find({"user_id": user_id})
    return {
        "account": account,
        "sessions": [{key: session.get(key) for key in (
            "created_at", "expires_at", "ip_truncated", "user_agent")} for session in sessions],
        "links": [{key: link.get(key) for key in (
            "purpose", "created_at", "expires_at", "used_at")}
            for link in sorted(links, key=lambda doc: doc["created_at"])],
    }


def announce_erasure(repo: AccountsRepository, user_id: str, now: datetime) -> bool:
    """Tell every gateway to forget the user's sessions (AccountChanged), before erasing."""
    return repo.announce(user_id, account_changed(user_id, "account_erased", now=now), now)


def erase_user(repo: AccountsRepository, user_id: str, email: str | None) -> dict[str, int]:
    """Delete the user and everything accounts keeps about them. Idempotent."""
    user = repo.user(user_id)
    addresses = {email.strip().casefold()} if email else set()
    if user is not None:
        addresses.add(user["email_key"])
    counters = forget_throttle(repo.throttle.collection, THROTTLE_BY_USER, user_id)
    for address in addresses:
        counters += forget_throttle(repo.throttle.collection, THROTTLE_BY_ADDRESS,
                                    hashed_key(address))
    return {
        "sessions": repo.delete_sessions(user_id),
        "links": repo.tokens.delete_many({"user_id": user_id}),
        "recovery_codes": repo.recovery_codes.delete_many({"user_id": user_id}),
        "second_steps": repo.second_steps.delete_many({"user_id": user_id}),
        "throttle_counters": counters,
        # The user last: a crash before this line leaves the account (closed) for the retry.
        "users": int(repo.users.delete_one({"_id": user_id})),
    }


def expire_unverified(repo: AccountsRepository, now: datetime, window: timedelta,
                      request_id: str | None = None) -> int:
    """Retention: hand accounts never verified within `window` to the erasure saga."""
    expired = 0
    cutoff = now - window
    stale = repo.users.find({"email_verified": False, "status": ACTIVE,
                             "created_at": {"$lt": cutoff}}, limit=RETENTION_BATCH)
    for user in stale:
        event = new_event("AccountExpired", {"user_id": user["_id"], "email": user["email"]},
                          producer="accounts", now=now, request_id=request_id)
        ended = account_changed(user["_id"], "account_expired", now=now, request_id=request_id)
        done = repo.users.update_one(
            {"_id": user["_id"], "status": ACTIVE, "email_verified": False},
            with_event(with_event({"$set": {"status": EXPIRED, "expired_at": now}}, ended,
                                  now=now), event, now=now))
        if done is not None:
            repo.delete_sessions(user["_id"])
            expired += 1
    if expired:
        log.info("retention: %d unverified account(s) older than %s handed to erasure",
                 expired, window)
    return expired
