"""Tokens for links in mail: email verification (`/verify?token=`) and password reset
(`/reset?token=`).

A token is 32 random bytes, URL-safe. The database never holds it: a token document is
stored under HMAC-SHA256(key, token), the key derived from JICM_SECRET_KEY for this
purpose only, so neither a copy of the database nor anyone without the secret key can
produce a working link. Each token has one purpose, an expiry, and is single-use: using
it is a compare-and-set on `used_at` (see `AccountsRepository.use_token`).

Used and expired documents are kept for a while (`purge_at`) so that a second click on
a link says "already used" or "expired" rather than "unknown".
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.config import Settings

VERIFY, RESET = "verify", "reset"
TOKEN_BYTES = 32
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")
KEY_PURPOSE = "accounts/link-tokens"
KEEP_AFTER_EXPIRY = timedelta(days=7)


@dataclass(frozen=True)
class LinkSettings:
    """What accounts needs to make links in mail."""

    key: bytes
    public_url: str
    verify_ttl: timedelta
    reset_ttl: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> LinkSettings:
        return cls(
            key=settings.derived_key(KEY_PURPOSE),
            public_url=settings.public_url,
            verify_ttl=timedelta(seconds=settings.verify_token_ttl),
            reset_ttl=timedelta(seconds=settings.reset_token_ttl),
        )

    def ttl(self, purpose: str) -> timedelta:
        return self.verify_ttl if purpose == VERIFY else self.reset_ttl

    def link(self, purpose: str, token: str) -> str:
        path = "verify" if purpose == VERIFY else "reset"
        return f"{self.public_url}/{path}?token={token}"


def token_id(key: bytes, token: str) -> str:
    """Where a token's document is stored: its HMAC, never the token."""
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()


def well_formed(token: str) -> bool:
    return bool(TOKEN_PATTERN.fullmatch(token))


def new_token(
    links: LinkSettings, purpose: str, user: dict[str, Any], now: datetime
) -> tuple[str, dict[str, Any]]:
    """A fresh token for `user` and the document to store for it."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    expires_at = now + links.ttl(purpose)
    return token, {
        "_id": token_id(links.key, token),
        "purpose": purpose,
        "user_id": user["_id"],
        # The address the link was mailed to: verifying proves this one, and no other.
        "email_key": user["email_key"],
        "reference": uuid.uuid4().hex,  # the delivery record of the mail that carries it
        "created_at": now,
        "expires_at": expires_at,
        "purge_at": expires_at + KEEP_AFTER_EXPIRY,
    }


def human_time(moment: datetime) -> str:
    """A moment as a person reads it in a mail: `Tuesday 3 June 2030 at 14:00 UTC`."""
    return f"{moment:%A} {moment.day} {moment:%B %Y at %H:%M} UTC"
