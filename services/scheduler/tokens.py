"""One-click check-in tokens: the credential inside the link of every reminder mail.

A token names a switch, the cycle the reminder belongs to and an expiry, and carries an
HMAC-SHA256 over them with a key derived from `JICM_SECRET_KEY` for this purpose only.
Nothing about it is stored: it is verified by recomputing the MAC (in constant time).

- *Bound*: it checks in that one switch, for that one cycle, and nothing else.
- *Single-use*: a check-in starts a new cycle, after which the token no longer matches.
- *Expiring*: it dies a little after the end of its cycle's grace period. When grace
  starts again (the overdue notice left late, after our own outage), a link of that cycle
  keeps working until a little after the new end of grace (`valid_until`).

Layout (URL-safe base64, no padding): version byte, the switch id's 16 bytes, the cycle
(4 bytes), the expiry in Unix seconds (8 bytes), then the 32-byte MAC over all of those.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

VERSION = 1
PURPOSE = b"jicm/checkin-link/v1"
_BODY = struct.Struct(">B16sIQ")
_MAC_BYTES = 32
TOKEN_LENGTH = len(base64.urlsafe_b64encode(b"\0" * (_BODY.size + _MAC_BYTES)).rstrip(b"="))
TOKEN_PATTERN = re.compile(rf"[A-Za-z0-9_-]{{{TOKEN_LENGTH}}}")
# A check-in link outlives its cycle's grace by this much, then expires.
LINK_MARGIN = timedelta(days=1)


class BadToken(Exception):
    """Not a token we issued (malformed, or its MAC does not match)."""


@dataclass(frozen=True)
class LinkClaim:
    """What a verified token says: check in `switch_id` for `cycle`, until `expires_at`."""

    switch_id: str
    cycle: int
    expires_at: datetime

    def expired(self, now: datetime, grace_ends_at: datetime | None = None) -> bool:
        """Whether the link has expired, given the current end of its cycle's grace."""
        return now >= self.valid_until(grace_ends_at)

    def valid_until(self, grace_ends_at: datetime | None = None) -> datetime:
        """The signed expiry, or a little after a later end of grace of the same cycle."""
        if grace_ends_at is None:
            return self.expires_at
        return max(self.expires_at, grace_ends_at + LINK_MARGIN)


def link_key(secret_key: bytes) -> bytes:
    """The MAC key for check-in links, derived so that it serves no other purpose."""
    return hmac.new(secret_key, PURPOSE, hashlib.sha256).digest()


def issue(key: bytes, switch_id: str, cycle: int, expires_at: datetime) -> str:
    """A token for `switch_id` at `cycle`, valid until `expires_at` (to the second)."""
    body = _BODY.pack(VERSION, uuid.UUID(switch_id).bytes, cycle, int(expires_at.timestamp()))
    mac = hmac.new(key, body, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(body + mac).rstrip(b"=").decode("ascii")


def verify(key: bytes, token: str) -> LinkClaim:
    """What a genuine token says; BadToken for anything we did not issue.

    Expiry is left to the caller, who can then tell "expired" from "forged".
    """
    if not isinstance(token, str) or not TOKEN_PATTERN.fullmatch(token):
        raise BadToken("malformed")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise BadToken("malformed") from None
    body, mac = raw[: _BODY.size], raw[_BODY.size :]
    expected = hmac.new(key, body, hashlib.sha256).digest()
    if not hmac.compare_digest(mac, expected):
        raise BadToken("bad signature")
    version, switch_bytes, cycle, expires = _BODY.unpack(body)
    if version != VERSION:
        raise BadToken("unknown version")
    return LinkClaim(
        switch_id=str(uuid.UUID(bytes=switch_bytes)),
        cycle=cycle,
        expires_at=datetime.fromtimestamp(expires, tz=UTC),
    )
