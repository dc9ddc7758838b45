"""The account page: the address and its verification, the time zone, the password,
two-factor sign-in (its forms: `two_factor.py`), the open sessions ("sign out everywhere")
and closing the account (the erasure, followed on `/erasure` once the account is closed)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import available_timezones

from flask import Blueprint, Response, flash, g, redirect, request, url_for

from gateway.auth import forget_signed_in_user
from gateway.clients import client_context, consent_context
from gateway.errors import ApiError
from gateway.remote import call
from gateway.site.cookies import forget_session, keep_session
from gateway.site.forms import FormErrors, refusal, validated
from gateway.site.pages import render
from gateway.site.privacy import follow_erasure
from gateway.site.session import cookies, signed_in
from gateway.site.timefmt import parse_time, when, zone
from services.accounts.schemas import PasswordChange, ProfileChanges
from shared.errors import ServiceError

bp = Blueprint("site_account", __name__)

CLOSED = ("Your account is closing. You are signed out, no reminder will be sent, and "
          "everything we hold about you is being erased from every service; a receipt is "
          "on its way to your address.")


def time_zones() -> list[str]:
    """IANA place names (Area/City) and UTC, for the time zone list."""
    return ["UTC", *sorted(name for name in available_timezones()
                           if "/" in name and not name.startswith(("Etc/", "SystemV/")))]


def account_page(status: int = 200, errors: FormErrors | None = None,
                 form: dict | None = None) -> Response:
    """The account page, with `errors` beside the fields of the form that failed."""
    sessions = call("accounts", "list_sessions", g.token)["sessions"]
    two_factor = call("accounts", "totp_status", g.user["id"])
    return render("account.html", status, sessions=sessions, errors=errors or FormErrors(),
                  form=form or {}, zones=time_zones(), tz=zone(g.user.get("time_zone")),
                  when=when, parse_time=parse_time, now=datetime.now(UTC),
                  two_factor=two_factor)


@bp.get("/app/account")
@signed_in
def account() -> Response:
    return account_page()


@bp.post("/app/account/time-zone")
@signed_in
def set_time_zone() -> Response:
    changes, errors = validated(ProfileChanges, {"time_zone": request.form.get("time_zone", "")})
    if errors:
        return account_page(422, errors, request.form)
    profile = call("accounts", "update_profile", g.user["id"], changes.model_dump())
    forget_signed_in_user()
    g.user = profile
    flash(f"Times are now shown in {changes.time_zone}.", "ok")
    return redirect(url_for(".account"), 303)


@bp.post("/app/account/password")
@signed_in
def change_password() -> Response:
    form = request.form
    errors = FormErrors()
    if form.get("new_password", "") != form.get("confirm_password", ""):
        errors["confirm_password"] = "The two new passwords are not the same."  # noqa: S105
    body, problems = validated(PasswordChange, {
        "current_password": form.get("current_password", ""),
        "new_password": form.get("new_password", "")})
    errors = FormErrors({**problems, **errors})
    if errors:
        return account_page(422, errors)
    try:
        session = call("accounts", "change_password", g.token, body.model_dump(),
                       client_context())
    except (ServiceError, ApiError) as exc:
        return account_page(exc.status, refusal(exc, "current_password"))
    forget_signed_in_user()
    flash("Your password is changed. Every other device is signed out.", "ok")
    response = redirect(url_for(".account"), 303)
    keep_session(response, cookies(), session["token"], parse_time(session["expires_at"]))
    return response


@bp.post("/app/account/sessions/end")
@signed_in
def sign_out_everywhere() -> Response:
    call("accounts", "end_sessions", g.user["id"])
    forget_signed_in_user()
    response = redirect(url_for("site_auth.log_in_page", signed_out="everywhere"), 303)
    forget_session(response, cookies())
    return response


@bp.get("/app/account/close")
@signed_in
def close_page() -> Response:
    return render("close.html", errors=FormErrors())


@bp.post("/app/account/close")
@signed_in
def close() -> Response:
    password = request.form.get("password", "")
    if not password:
        return render("close.html", 422, errors=FormErrors(
            {"password": "Please type your password to confirm."}))
    try:
        created = call("privacy", "create_request", g.user["id"], g.user["email"],
                       {"type": "erasure", "password": password}, consent_context("web"))
    except (ServiceError, ApiError) as exc:
        return render("close.html", exc.status, errors=refusal(exc, "password"))
    g.user = None
    if follow_erasure(created):
        response = redirect(url_for("site_privacy.erasure_page"), 303)
    else:
        response = render("closed.html", message=CLOSED)
    forget_session(response, cookies())
    return response
