"""The site's cookies, all strictly necessary, and the flags they carry.

- the session: the same opaque token the API takes as a bearer token, `HttpOnly`,
  `SameSite=Lax`, for as long as the session lives;
- the form cookie (Flask's signed session): the secret behind the CSRF tokens of our
  forms, the one-line notices shown after a redirect, and which erasure this browser
  follows once its account is closed. It ends with the browser;
- the cookie choice: the visitor's answer to the cookie question (and the random token
  privacy files its proof under), so the question is not asked on every page. It is set
  only once the visitor answered, and lasts `COOKIE_CHOICE_DAYS`.

`listed_cookies` lists them for the cookie settings page; a test fails if the site sets
any other. All are `__Host-` cookies (`Secure`, `Path=/`, no `Domain`): a browser refuses
such a cookie over plain http, so only when the public URL is plain http on this very
machine (`make run`: http://127.0.0.1:8000) do they go without the prefix and `Secure`.
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from flask import Response, request

from shared.visitors import COOKIE_CHOICE_DAYS, is_visitor_token

SESSION = "jicm_session"
FORMS = "jicm_forms"
CHOICE = "jicm_cookies"
HOST_PREFIX = "__Host-"
VISITOR_TOKEN_BYTES = 24


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

    @property
    def choice_name(self) -> str:
        return HOST_PREFIX + CHOICE if self.secure else CHOICE


@dataclass(frozen=True)
class ListedCookie:
    """A cookie as the cookie settings page lists it."""

    name: str
    purpose: str
    lifetime: str


def listed_cookies(policy: CookiePolicy, session_lifetime: str) -> list[ListedCookie]:
    """Every cookie the site sets, each strictly necessary, with its purpose and lifetime."""
    return [
        ListedCookie(policy.session_name,
                     "Keeps you signed in after you log in: the key to your session, "
                     "unreadable by any script.",
                     f"until you log out, or {session_lifetime} after you logged in"),
        ListedCookie(policy.forms_name,
                     "The safety token that proves a form was sent from our own pages, "
                     "the short notice shown after an action, and while an account is "
                     "being erased, which erasure this browser follows.",
                     "until you close the browser"),
        ListedCookie(policy.choice_name,
                     "Remembers your answer to the cookie question, so we do not ask on "
                     "every page. Set only once you answered.",
                     f"{COOKIE_CHOICE_DAYS} days after your last answer"),
    ]


@dataclass(frozen=True)
class CookieChoice:
    """The visitor's answer to the cookie question, as their browser keeps it."""

    token: str
    analytics: bool
    marketing: bool

    def value(self) -> str:
        return f"{self.token}.{int(self.analytics)}{int(self.marketing)}"

    @classmethod
    def parse(cls, value: str | None) -> CookieChoice | None:
        """The choice in a cookie's value (`<token>.<analytics><marketing>`), or None."""
        token, _, flags = (value or "").partition(".")
        if not is_visitor_token(token) or flags not in ("00", "01", "10", "11"):
            return None
        return cls(token, flags[0] == "1", flags[1] == "1")


def new_visitor_token() -> str:
    return secrets.token_urlsafe(VISITOR_TOKEN_BYTES)


def cookie_choice(policy: CookiePolicy) -> CookieChoice | None:
    """The answer this browser gave to the cookie question, if any."""
    return CookieChoice.parse(request.cookies.get(policy.choice_name))


def keep_choice(response: Response, policy: CookiePolicy, choice: CookieChoice,
                expires_at: datetime) -> None:
    response.set_cookie(policy.choice_name, choice.value(), expires=expires_at, path="/",
                        secure=policy.secure, httponly=True, samesite="Lax")


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
