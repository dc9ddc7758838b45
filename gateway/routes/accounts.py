"""Sign-up, log-in, log-out and the signed-in user's profile."""

from __future__ import annotations

from flask import Blueprint, g

from gateway.api import operation
from gateway.clients import client_context
from gateway.remote import call
from services.accounts.schemas import Account, LogIn, Profile, Session, SignUp

bp = Blueprint("accounts", __name__)


@operation(bp, "POST", "/api/v1/accounts", summary="Sign up", tag="accounts",
           body=SignUp, response=Account, status=201, auth=False,
           description="Creates an account (16 or older). The answer is the same whether or "
                       "not the address already has an account.")
def sign_up(body: SignUp) -> dict:
    return call("accounts", "sign_up", body.model_dump(mode="json"), client_context())


@operation(bp, "POST", "/api/v1/sessions", summary="Log in", tag="accounts",
           body=LogIn, response=Session, status=201, auth=False, errors=(401,))
def log_in(body: LogIn) -> dict:
    return call("accounts", "log_in", body.model_dump(mode="json"), client_context())


@operation(bp, "DELETE", "/api/v1/sessions/current", summary="Log out", tag="accounts",
           status=204)
def log_out() -> None:
    call("accounts", "log_out", g.token)


@operation(bp, "GET", "/api/v1/me", summary="Your profile", tag="accounts", response=Profile)
def me() -> dict:
    return g.user
