"""Bearer-token authentication: the token is checked by the accounts service on every
request; the gateway keeps nothing and decides nothing but "missing" or "malformed"."""

from __future__ import annotations

import re

from flask import g, request

from gateway.errors import ApiError
from gateway.remote import call

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
    g.user = call("accounts", "authenticate", g.token)
    return g.user


def current_user_id() -> str:
    return g.user["id"]


def _unauthorized(message: str, code: str = "unauthorized") -> ApiError:
    return ApiError(401, code, message, headers={"WWW-Authenticate": 'Bearer realm="jicm"'})
