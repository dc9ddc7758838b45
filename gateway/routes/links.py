"""The pages behind links in mail: `/verify?token=`, `/reset?token=`, `/u/<token>`.

GET only shows a page with a form and changes nothing, because mail scanners and link
previewers open links; the form's POST does the work. The mail clients' one-click
unsubscribe (RFC 8058) POSTs `List-Unsubscribe=One-Click` to `/u/<token>` directly.
"""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, request
from pydantic import ValidationError

from gateway.api import operation
from gateway.errors import ApiError
from gateway.pages import error_page, page, sentence
from gateway.remote import call
from services.accounts.schemas import PasswordReset
from shared.errors import InvalidInput, ServiceError

bp = Blueprint("links", __name__)

TOKEN_MAX = 256
INCOMPLETE_LINK = ("This link is incomplete: open the whole link from the mail, "
                   "or ask for a new one.")


def _token(source) -> str | None:
    token = (source.get("token") or "").strip()
    return token if 0 < len(token) <= TOKEN_MAX else None


def _missing_token(title: str) -> Response:
    return page("message.html", 400, title=title, message=INCOMPLETE_LINK, code="token_invalid")


# Email verification --------------------------------------------------------------------------


@operation(bp, "GET", "/verify", summary="Email verification page", tag="pages", auth=False,
           content_type="text/html", errors=(400,),
           description="The page a verification mail links to (`?token=`). Shows a button; "
                       "changes nothing.")
def verify_page() -> Response:
    token = _token(request.args)
    if token is None:
        return _missing_token("Confirm your email address")
    return page("verify.html", title="Confirm your email address", token=token)


@operation(bp, "POST", "/verify", summary="Verify an email address (form)", tag="pages",
           auth=False, content_type="text/html", errors=(400, 410),
           description="The verification page's form (`token`, form-encoded).")
def verify_form() -> Response:
    token = _token(request.form)
    title = "Confirm your email address"
    if token is None:
        return _missing_token(title)
    try:
        account = call("accounts", "verify_email", {"token": token})
    except (ServiceError, ApiError) as exc:
        return error_page(exc, title)
    return page("message.html", title="Your address is confirmed", code=None,
                message=f"Thank you: {account['email']} is confirmed. Your switch can now "
                        "remind you at this address.")


# Password reset ------------------------------------------------------------------------------


@operation(bp, "GET", "/reset", summary="Password reset page", tag="pages", auth=False,
           content_type="text/html", errors=(400,),
           description="The page a password reset mail links to (`?token=`): a form for the "
                       "new password. Changes nothing.")
def reset_page() -> Response:
    token = _token(request.args)
    if token is None:
        return _missing_token("Choose a new password")
    return page("reset.html", title="Choose a new password", token=token, problem=None)


@operation(bp, "POST", "/reset", summary="Set a new password (form)", tag="pages", auth=False,
           content_type="text/html", errors=(400, 410),
           description="The reset page's form (`token`, `password`, `confirm`; form-encoded).")
def reset_form() -> Response:
    title = "Choose a new password"
    token = _token(request.form)
    if token is None:
        return _missing_token(title)
    password = request.form.get("password", "")
    if not hmac.compare_digest(password.encode(), request.form.get("confirm", "").encode()):
        return page("reset.html", 422, title=title, token=token,
                    problem="The two passwords are not the same; please type them again.")
    try:
        body = PasswordReset(token=token, password=password)
    except ValidationError:
        return page("reset.html", 422, title=title, token=token,
                    problem="Please choose a password of 12 to 256 characters.")
    try:
        call("accounts", "reset_password", body.model_dump())
    except InvalidInput as exc:
        return page("reset.html", 422, title=title, token=token, problem=sentence(exc.message))
    except (ServiceError, ApiError) as exc:
        return error_page(exc, title)
    return page("message.html", title="Your password is changed", code=None,
                message="You can now sign in with your new password. Every device that was "
                        "signed in before has been signed out.")


# Unsubscribe ---------------------------------------------------------------------------------


@operation(bp, "GET", "/u/<token>", summary="Unsubscribe page", tag="pages", auth=False,
           content_type="text/html", errors=(404,),
           description="Where the unsubscribe link of a marketing mail leads: a button. "
                       "Changes nothing.")
def unsubscribe_page(token: str) -> Response:
    title = "Unsubscribe from news"
    try:
        call("delivery", "check_unsubscribe", token[:TOKEN_MAX * 2])
    except (ServiceError, ApiError) as exc:
        return error_page(exc, title)
    return page("unsubscribe.html", title=title, token=token)


@operation(bp, "POST", "/u/<token>", summary="Unsubscribe (one click)", tag="pages",
           auth=False, content_type="text/html", errors=(404,),
           description="One-click unsubscribe (RFC 8058: mail clients POST "
                       "`List-Unsubscribe=One-Click`), or the page's button. Takes effect at "
                       "once; marketing mail only.")
def unsubscribe(token: str) -> Response:
    title = "Unsubscribe from news"
    one_click = request.form.get("List-Unsubscribe") == "One-Click"
    try:
        call("delivery", "unsubscribe", token[:TOKEN_MAX * 2],
             "one_click" if one_click else "page")
    except (ServiceError, ApiError) as exc:
        return error_page(exc, title)
    return page("message.html", title="You are unsubscribed", code=None,
                message="You will receive no more news from Just in Case at this address. "
                        "Mail about your account and your switch still reaches you.")
