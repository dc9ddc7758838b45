"""The cookie choice of a visitor's browser: how long it holds, and how it is named.

The web site asks every visitor about non-essential cookies and remembers the answer in a
cookie holding a random visitor token. Privacy keeps the proof of that answer (a consent
receipt) under the token's SHA-256, never the token itself; accounts names the same id in
`UserRegistered` when the visitor signs up, so the choice joins the new account.

The lifetime is a promise made in the cookie list of the site and kept by privacy's
expiry of the record: one constant, read by both.
"""

from __future__ import annotations

import hashlib
import re

# After this long without a new choice the site asks again and the proof expires.
COOKIE_CHOICE_DAYS = 180
# The site's tokens are URL-safe base64 of 24 random bytes; nothing else is one.
VISITOR_TOKEN = re.compile(r"[A-Za-z0-9_-]{32,64}")


def is_visitor_token(value: str | None) -> bool:
    return bool(value) and VISITOR_TOKEN.fullmatch(value) is not None


def visitor_consent_id(token: str) -> str:
    """The id privacy keeps a visitor's cookie choice under: the token's SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()
