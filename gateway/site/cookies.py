"""The site's two cookies, both strictly necessary, and the flags they carry.

- the session: the same opaque token the API takes as a bearer token, `HttpOnly`,
  `SameSite=Lax`, for as long as the session lives;
- the form cookie (Flask's signed session): the secret behind the CSRF tokens of our
  forms, and the one-line notices shown after a redirect. It ends with the browser.

Both are `__Host-` cookies (`Secure`, `Path=/`, no `Domain`): a browser refuses such a
cookie over plain http, so only when the public URL is plain http on this very machine
(`make run`: http://127.0.0.1:8000) do they go without the prefix and without `Secure`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from flask import Response, request

SESSION = "jicm_session"
FORMS = "jicm_forms"
HOST_PREFIX = "__Host-"


@dataclass(frozen=True)
class CookiePolicy:
    """The cookie names and the Secure flag that follow from the public URL."""

    secure: bool

    @property
    def session_name(self) -> str:
        return HOST_PREFIX + SESSION if self.secure else SESSION

    @property
    def forms_name(self) -> str:
        return HOST_PREFIX + FORMS if self.secure else FORMS


def cookie_policy(public_url: str) -> CookiePolicy:
    """Secure `__Host-` cookies, unless the site is served over plain http on loopback."""
    parts = urlsplit(public_url)
    return CookiePolicy(secure=not (parts.scheme == "http" and _is_loopback(parts.hostname)))


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def session_token(policy: CookiePolicy) -> str | None:
    """The session token the browser sent, if any."""
    return request.cookies.get(policy.session_name) or None


def keep_session(response: Response, policy: CookiePolicy, token: str,
                 expires_at: datetime) -> None:
    """Hand the browser its session cookie, until the session expires."""
    response.set_cookie(policy.session_name, token, expires=expires_at, path="/",
                        secure=policy.secure, httponly=True, samesite="Lax")


def forget_session(response: Response, policy: CookiePolicy) -> None:
    response.delete_cookie(policy.session_name, path="/", secure=policy.secure,
                           httponly=True, samesite="Lax")
