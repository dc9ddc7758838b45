"""Bearer-token authentication: the token is resolved to its user by the accounts service,
or from this worker's short-lived cache of sessions accounts resolved (gateway/sessions.py);
the gateway decides nothing but "missing" or "malformed"."""

from __future__ import annotations

import re

from flask import current_app, g, request

from gateway.errors import ApiError
from gateway.sessions import Sessions

SESSIONS_KEY = "jicm.sessions"

# Tokens are URL-safe base64 of 32 random bytes; anything else is refused before any RPC.
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{20,128}")


def bearer_token() -> str:
    """The request's bearer token, or a 401."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("send a session token as Authorization: Bearer <token>")
    token = token.strip()
    if not TOKEN_PATTERN.fullmatch(token):
        raise _unauthorized("the session token is invalid or has expired", "invalid_token")
    return token


def authenticate_request() -> dict:
    """Resolve the bearer token to the signed-in user's profile (kept on `g.user`)."""
    g.token = bearer_token()
    g.user = resolve_session(g.token)
    return g.user


def resolve_session(token: str) -> dict:
    """The profile of the live session `token` (AuthenticationFailed if it is none)."""
    sessions: Sessions = current_app.extensions[SESSIONS_KEY]
    return sessions.resolve(token)


def forget_signed_in_user() -> None:
    """After a request that ended the signed-in user's sessions or changed their profile:
    this worker forgets them now (the AccountChanged broadcast tells every other worker)."""
    sessions: Sessions = current_app.extensions[SESSIONS_KEY]
    sessions.forget_user(current_user_id())


def current_user_id() -> str:
    return g.user["id"]


def _unauthorized(message: str, code: str = "unauthorized") -> ApiError:
    return ApiError(401, code, message, headers={"WWW-Authenticate": 'Bearer realm="jicm"'})
