"""Sign-up, log-in, log-out and "forgot my password": the API's own calls behind forms.

As in the API, nothing here tells whether an address has an account: a sign-up with a
taken address and a reset for an unknown one answer exactly like the others, and a failed
log-in says only that the address or password is wrong. Rate limits are the services'.

An account with two-factor sign-in gets a second page after the password: the code from
the authenticator app, or a recovery code. The log-in's challenge travels in that page's
form (single-use and short-lived; the cookie is set only once the code is right).
"""

from __future__ import annotations

import contextlib
from datetime import date

from flask import Blueprint, Response, current_app, g, redirect, request, url_for

from gateway.auth import forget_signed_in_user
from gateway.clients import client_context
from gateway.errors import ApiError
from gateway.remote import call
from gateway.site.consent import signed_up_with
from gateway.site.cookies import forget_session, keep_session
from gateway.site.forms import FormErrors, refusal, validated
from gateway.site.pages import local_path, render
from gateway.site.session import cookies, load_user
from gateway.site.timefmt import parse_time
from services.accounts.schemas import (
    LogIn,
    PasswordResetRequest,
    SecondStep,
    SignUp,
    iana_time_zone,
)
from shared.config import SETTINGS_CONFIG_KEY
from shared.errors import AuthenticationFailed, ServiceError

bp = Blueprint("site_auth", __name__)

DOB_FIELD = "date_of_birth"
CHALLENGE_ENDED = "challenge_invalid"


def _policy_version() -> str:
    return current_app.config[SETTINGS_CONFIG_KEY].policy_version


# Sign-up ------------------------------------------------------------------------------------


@bp.get("/signup")
def sign_up_page() -> Response:
    return _sign_up_form({}, FormErrors())


@bp.post("/signup")
def sign_up() -> Response:
    form = request.form
    errors = FormErrors()
    birth = _date_of_birth(form, errors)
    if form.get("accept_policy") != _policy_version():
        errors["accept_policy"] = ("Please read the privacy policy and tick the box to "
                                   "accept it.")
    body, problems = validated(SignUp, {
        "email": form.get("email", "").strip(), "password": form.get("password", ""),
        "date_of_birth": birth.isoformat() if birth else None,
        "accept_policy_version": _policy_version()})
    errors = FormErrors({**problems, **errors})
    if errors:
        return _sign_up_form(form, errors, 422)
    try:
        call("accounts", "sign_up", body.model_dump(mode="json"),
             {**client_context(), **signed_up_with()})
    except (ServiceError, ApiError) as exc:
        return _sign_up_form(form, refusal(exc), exc.status)
    return render("signed_up.html", email=body.email)


def _sign_up_form(form, errors: FormErrors, status: int = 200) -> Response:
    return render("signup.html", status, form=form, errors=errors,
                  policy_version=_policy_version())


def _date_of_birth(form, errors: FormErrors) -> date | None:
    """The three fields of the date of birth as one date, or a sentence about them."""
    try:
        return date(int(form.get("dob_year", "")), int(form.get("dob_month", "")),
                    int(form.get("dob_day", "")))
    except ValueError:
        errors[DOB_FIELD] = ("Please give your date of birth as a day, a month and a "
                             "four-digit year, for example 27 3 1985.")
        return None


# Log-in and log-out -----------------------------------------------------------------------


@bp.get("/login")
def log_in_page() -> Response:
    after = local_path(request.args.get("next"), url_for("site_dashboard.dashboard"))
    if load_user() is not None:
        return redirect(after)
    return render("login.html", form={"next": request.args.get("next", "")},
                  errors=FormErrors())


@bp.post("/login")
def log_in() -> Response:
    form = request.form
    body, errors = validated(LogIn, {"email": form.get("email", "").strip(),
                                     "password": form.get("password", "")})
    if errors:
        return render("login.html", 422, form=form, errors=errors)
    try:
        session = call("accounts", "log_in", body.model_dump(mode="json"), client_context())
    except (ServiceError, ApiError) as exc:
        return render("login.html", exc.status, form=form, errors=refusal(exc))
    if session.get("second_step") == "totp":
        return _code_page({"challenge": session["challenge"], "next": form.get("next", ""),
                           "time_zone": form.get("time_zone", "")}, FormErrors())
    return _signed_in_from(form, session)


def _signed_in_from(form, session: dict) -> Response:
    _remember_time_zone(session["token"], form.get("time_zone", ""))
    # Back to the page that asked for the log-in (a link in a mail, say): ours only.
    response = redirect(local_path(form.get("next"), url_for("site_dashboard.dashboard")), 303)
    keep_session(response, cookies(), session["token"], parse_time(session["expires_at"]))
    return response


def _code_page(form, errors: FormErrors, status: int = 200) -> Response:
    recovery = form.get("use") == "recovery" or "recovery_code" in errors
    return render("login_code.html", status, form=form, errors=errors, recovery=recovery)


@bp.post("/login/code")
def log_in_code() -> Response:
    form = request.form
    proof = ({"recovery_code": form.get("recovery_code", "").strip()}
             if form.get("use") == "recovery" else {"code": form.get("code", "").strip()})
    body, errors = validated(SecondStep, {"challenge": form.get("challenge", ""), **proof})
    if errors:
        return _code_page(form, _code_errors(errors), 422)
    try:
        session = call("accounts", "log_in_second_step", body.model_dump(mode="json"),
                       client_context())
    except (ServiceError, ApiError) as exc:
        if getattr(exc, "code", None) == CHALLENGE_ENDED:
            return render("login.html", exc.status, form={"next": form.get("next", "")},
                          errors=refusal(exc))
        return _code_page(form, refusal(exc, next(iter(proof))), exc.status)
    return _signed_in_from(form, session)


@bp.post("/login/code/recovery")
def log_in_code_recovery() -> Response:
    """The same second step, answered with a recovery code instead (no phone at hand)."""
    return _code_page({**request.form, "use": "recovery"}, FormErrors())


def _code_errors(errors: FormErrors) -> FormErrors:
    """The model's words for a code as a person reads them."""
    words = {"code": "Please type the 6 digits your authenticator app shows.",
             "recovery_code": "Please type one of your recovery codes, such as abcd-efgh-jkmn."}
    return FormErrors({field: words.get(field, message) for field, message in errors.items()
                       if field != "challenge"} or {"_form": CHALLENGE_WORDS})


CHALLENGE_WORDS = "This sign-in has expired. Please log in again with your password."


def _remember_time_zone(token: str, browser_zone: str) -> None:
    """The browser's zone (sent by static/site.js) becomes the account's, if it has none."""
    try:
        zone = iana_time_zone(browser_zone)
        profile = call("accounts", "authenticate", token)
        if profile.get("time_zone") is None:
            call("accounts", "update_profile", profile["id"], {"time_zone": zone})
    except (ValueError, ServiceError, ApiError):
        return  # a nicety: the account page lets the sender choose


@bp.post("/logout")
def log_out() -> Response:
    if load_user() is not None:
        # Signed out already, or accounts unreachable: the cookie goes anyway.
        with contextlib.suppress(AuthenticationFailed, ApiError):
            call("accounts", "log_out", g.token)
            forget_signed_in_user()
    response = redirect(url_for("site_auth.log_in_page", signed_out=1), 303)
    forget_session(response, cookies())
    return response


# Forgot password -----------------------------------------------------------------------------


@bp.get("/forgot")
def forgot_page() -> Response:
    return render("forgot.html", form={}, errors=FormErrors(), sent=None)


@bp.post("/forgot")
def forgot() -> Response:
    form = request.form
    body, errors = validated(PasswordResetRequest, {"email": form.get("email", "").strip()})
    if errors:
        return render("forgot.html", 422, form=form, errors=errors, sent=None)
    try:
        queued = call("accounts", "request_password_reset", body.model_dump(mode="json"),
                      client_context())
    except (ServiceError, ApiError) as exc:
        return render("forgot.html", exc.status, form=form, errors=refusal(exc, "email"),
                      sent=None)
    return render("forgot.html", form=form, errors=FormErrors(), sent=queued["message"])
