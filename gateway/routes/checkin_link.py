"""The one-click check-in link of reminder mails: `GET /c/<token>` and `POST /c/<token>`.

A GET only shows a page with a button and changes nothing: mail scanners and link
previewers follow links, and a scanner "checking in" for someone who has died would
silently stop the release. The button POSTs the same URL; the token in it is the
credential (signed, bound to one switch and cycle, single-use, expiring), and the POST
must come from that page's form. Pages carry no personal data, since scanners read them,
and have their own Content-Security-Policy.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, render_template, request
from werkzeug.exceptions import HTTPException

from gateway.api import operation
from gateway.clients import client_context
from gateway.errors import ApiError
from gateway.pages import LINK_PAGE_CSP
from gateway.remote import call
from services.scheduler.tokens import TOKEN_PATTERN
from shared.config import SETTINGS_CONFIG_KEY
from shared.errors import ServiceError

bp = Blueprint("checkin_link", __name__)


# What each refusal of the scheduler means on the page.
PAGES_FOR_CODES = {
    "invalid_link": "invalid",
    "link_expired": "expired",
    "link_used": "used",
    "switch_fired": "fired",
    "rate_limited": "busy",
}

DESCRIPTION = ("Reminder mails link here. {what} The page holds no personal data. Errors "
               "are pages too: 404 not a valid link, 409 the switch has fired, 410 used or "
               "expired.")


@operation(bp, "GET", "/c/<token>", summary="One-click check-in: the confirmation page",
           tag="check-ins", auth=False, content_type="text/html", errors=(409, 410),
           description=DESCRIPTION.format(what="Shows a button and changes nothing, so a "
                                               "mail scanner following the link cannot "
                                               "check anyone in."))
def confirm_page(token: str) -> Response:
    if not TOKEN_PATTERN.fullmatch(token):
        return page("invalid", 404)
    try:
        call("scheduler", "inspect_link", token, client_context())
    except (ServiceError, ApiError) as refusal:
        return refusal_page(refusal)
    return page("confirm", 200, token=token)


@operation(bp, "POST", "/c/<token>", summary="One-click check-in: confirm",
           tag="check-ins", auth=False, content_type="text/html", errors=(403, 409, 410),
           description=DESCRIPTION.format(what="The confirmation page's button posts here "
                                               "(form field confirm=yes) and checks in."))
def check_in_by_link(token: str) -> Response:
    if not TOKEN_PATTERN.fullmatch(token):
        return page("invalid", 404)
    try:
        if not from_our_form():
            return page("forbidden", 403)
        answer = call("scheduler", "check_in_by_link", token, client_context())
    except (ServiceError, ApiError, HTTPException) as refusal:
        return refusal_page(refusal)
    return page("checked_in", 200, deadline=answer.get("deadline"))


def from_our_form() -> bool:
    """The POST was sent by our confirmation page's form, as far as a browser tells us."""
    if request.form.get("confirm") != "yes":
        return False
    # Browsers say where a form was submitted from; another site's page is refused.
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return False
    # `null` is what a browser sends for our own form under `Referrer-Policy: no-referrer`.
    origin = request.headers.get("Origin")
    return origin in (None, "null") or origin in _our_origins()


def _our_origins() -> set[str]:
    public = urlsplit(current_app.config[SETTINGS_CONFIG_KEY].public_url)
    return {f"{public.scheme}://{public.netloc}", request.host_url.rstrip("/")}


def refusal_page(refusal: ServiceError | ApiError | HTTPException) -> Response:
    if isinstance(refusal, HTTPException):
        return page("unavailable", refusal.code or 400)
    kind = PAGES_FOR_CODES.get(refusal.code, "unavailable")
    return page(kind, refusal.status)


def page(kind: str, status: int, **context: object) -> Response:
    html = render_template("checkin.html", kind=kind, **context)
    response = Response(html, status=status, mimetype="text/html")
    response.headers["Content-Security-Policy"] = LINK_PAGE_CSP
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    return response
