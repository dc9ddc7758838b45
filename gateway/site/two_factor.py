"""Two-factor sign-in on the account page: setting it up (the QR code and the secret, then
a first code), the recovery codes shown once, and turning it off (password and a code).

The rules are the accounts service's; this only puts them behind forms. The QR code is an
SVG the service draws, shown as an image (a `data:` URL, which the site's policy allows
for images only).
"""

from __future__ import annotations

import base64

from flask import Blueprint, Response, flash, g, redirect, request, url_for

from gateway.errors import ApiError
from gateway.remote import call
from gateway.site.account import account_page
from gateway.site.forms import FormErrors, refusal, validated
from gateway.site.pages import render
from gateway.site.session import signed_in
from services.accounts.schemas import TotpConfirm, TotpDisable
from shared.errors import ServiceError

bp = Blueprint("site_two_factor", __name__)

CODE_WORDS = "Please type the 6 digits your authenticator app shows."
RECOVERY_WORDS = "Please type one of your recovery codes, such as abcd-efgh-jkmn."


def qr_image(svg: str) -> str:
    """The QR code's SVG as a `data:` URL for an <img>."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


@bp.post("/app/account/two-factor/start")
@signed_in
def start() -> Response:
    try:
        call("accounts", "start_totp", g.user["id"])
    except (ServiceError, ApiError) as exc:
        return account_page(exc.status, refusal(exc, "two_factor"))
    return redirect(url_for(".set_up_page"), 303)


@bp.get("/app/account/two-factor")
@signed_in
def set_up_page() -> Response:
    return _set_up_page(FormErrors())


def _set_up_page(errors: FormErrors, status: int = 200) -> Response:
    setup = call("accounts", "totp_set_up", g.user["id"])
    if setup is None:
        return redirect(url_for("site_account.account", _anchor="two-factor"), 303)
    return render("two_factor_setup.html", status, setup=setup, errors=errors,
                  qr=qr_image(setup["qr_svg"]))


@bp.post("/app/account/two-factor/confirm")
@signed_in
def confirm() -> Response:
    body, errors = validated(TotpConfirm, {"code": request.form.get("code", "").strip()})
    if errors:
        return _set_up_page(FormErrors({"code": CODE_WORDS}), 422)
    try:
        confirmed = call("accounts", "confirm_totp", g.user["id"], body.model_dump())
    except (ServiceError, ApiError) as exc:
        return _set_up_page(refusal(exc, "code"), exc.status)
    # Shown on this answer only: the service keeps nothing but their hashes.
    return render("two_factor_codes.html", codes=confirmed["recovery_codes"])


@bp.post("/app/account/two-factor/disable")
@signed_in
def disable() -> Response:
    form = request.form
    typed = form.get("off_code", "").strip()
    # One field takes either: 6 digits are the app's code, anything else a recovery code.
    proof = {"code": typed} if typed.isdigit() else {"recovery_code": typed or None}
    body, problems = validated(TotpDisable, {"password": form.get("off_password", ""), **proof},
                               names={"password": "off_password", "code": "off_code",
                                      "recovery_code": "off_code", "_form": "off_code"})
    if problems:
        errors = FormErrors({field: CODE_WORDS if field == "off_code" else message
                             for field, message in problems.items()})
        return account_page(422, errors)
    try:
        call("accounts", "disable_totp", g.user["id"], body.model_dump())
    except (ServiceError, ApiError) as exc:
        return account_page(exc.status, _off_refusal(exc))
    flash("Two-factor sign-in is off. Your password alone logs you in again.", "ok")
    return redirect(url_for("site_account.account", _anchor="two-factor"), 303)


def _off_refusal(exc: ServiceError | ApiError) -> FormErrors:
    errors = refusal(exc, "off_code")
    names = {"password": "off_password", "code": "off_code", "recovery_code": "off_code"}
    return FormErrors({names.get(field, field): message for field, message in errors.items()})
