"""Who is signed in: the session cookie resolved exactly as the API resolves a bearer token
(gateway/auth.py: by accounts, or from the worker's short-lived cache of sessions)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Response, current_app, g, redirect, request, url_for

from gateway.auth import TOKEN_PATTERN, resolve_session
from gateway.site.cookies import CookiePolicy, forget_session, session_token
from shared.errors import AuthenticationFailed

POLICY_KEY = "jicm.site.cookies"


def cookies() -> CookiePolicy:
    return current_app.extensions[POLICY_KEY]


def load_user() -> dict[str, Any] | None:
    """The signed-in user's profile (also on `g.user`), or None."""
    token = session_token(cookies())
    g.user, g.token = None, None
    if token is None or not TOKEN_PATTERN.fullmatch(token):
        return None
    try:
        g.user = resolve_session(token)
    except AuthenticationFailed:
        g.forget_session = True
        return None
    g.token = token
    return g.user


def signed_in(view: Callable[..., Response]) -> Callable[..., Response]:
    """Views for signed-in users only; anyone else is sent to the log-in page."""

    @wraps(view)
    def guarded(**params: Any) -> Response:
        if load_user() is None:
            back = request.path if request.method == "GET" else None
            return redirect(url_for("site_auth.log_in_page", next=back))
        return view(**params)

    return guarded


def drop_stale_cookie(response: Response) -> Response:
    """A session the accounts service refused is forgotten by the browser too."""
    if g.get("forget_session"):
        forget_session(response, cookies())
    return response
