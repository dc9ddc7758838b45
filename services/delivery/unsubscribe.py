"""One-click unsubscribe links for marketing mail: `{JICM_PUBLIC_URL}/u/<token>`.

The token names the address (as a hash) and the account it was sent for, and carries an
HMAC-SHA256 under a key derived from JICM_SECRET_KEY for this purpose only, so nobody can
unsubscribe an address they did not receive mail at. It does not expire: an unsubscribe
link must keep working for as long as someone may find the mail.

Addresses are known here only as `address_key`: the SHA-256 of the case-folded address.
The suppression list is keyed by it, so it keeps working after an erasure removed the
address itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

PURPOSE = "delivery/unsubscribe"
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{40,400}\.[A-Za-z0-9_-]{43}")


class BadToken(Exception):
    """Not a token we made."""


def address_key(address: str) -> str:
    """The suppression list's key for an address: SHA-256 of its case-folded form."""
    return hashlib.sha256(address.strip().casefold().encode()).hexdigest()


def make_token(key: bytes, address: str, user_id: str | None) -> str:
    """The token for an unsubscribe link sent to `address` (for the account `user_id`)."""
    payload = _b64(f"{address_key(address)}|{user_id or ''}".encode())
    return f"{payload}.{_b64(_mac(key, payload))}"


def read_token(key: bytes, token: str) -> tuple[str, str | None]:
    """(address_key, user_id) of a genuine token; BadToken otherwise (constant-time check)."""
    if not TOKEN_PATTERN.fullmatch(token or ""):
        raise BadToken("malformed")
    payload, _, mac = token.partition(".")
    if not hmac.compare_digest(_b64(_mac(key, payload)), mac):
        raise BadToken("signature")
    try:
        decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise BadToken("payload") from None
    addr_key, _, user_id = decoded.partition("|")
    return addr_key, user_id or None


def _mac(key: bytes, payload: str) -> bytes:
    return hmac.new(key, payload.encode(), hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
