"""Trusted contacts: the owner's API (`/api/v1/switches/<id>/trusted-contacts`) and the two
pages a contact reaches from a mail: the invitation (`/i/<token>`, accept or decline) and
the request while the switch is overdue (`/t/<token>`, hold the release or confirm).

As for check-in links, a GET only shows a page and changes nothing (mail scanners follow
links); the page's buttons POST the same URL, the token being the credential and the form
the page's own (`checkin_link.from_our_form`). The pages show the owner's address and the
moment of the release, and never a message, a recipient or a check-in button.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Response, render_template, request
from werkzeug.exceptions import HTTPException

from gateway.api import operation
from gateway.auth import current_user_id
from gateway.clients import client_context
from gateway.errors import ApiError
from gateway.pages import LINK_PAGE_CSP
from gateway.remote import call
from gateway.routes.checkin_link import from_our_form
from gateway.routes.switches import _switch_id
from gateway.site.timefmt import duration, parse_time, relative
from services.scheduler.schemas import (
    TrustedContactList,
    TrustedContactRequest,
    TrustedContactView,
)
from services.scheduler.trusted_contacts import (
    DECISIONS,
    INVITATION_TOKEN_PATTERN,
    REQUEST_TOKEN_PATTERN,
)
from shared.errors import ServiceError

bp = Blueprint("trusted_contacts", __name__)

CONTACT_ID_MAX_LENGTH = 64

# What each refusal of the scheduler means on a contact's page.
PAGES_FOR_CODES = {
    "invalid_link": "invalid",
    "link_expired": "expired",
    "link_used": "used",
    "no_longer_needed": "not_needed",
    "switch_fired": "too_late",
    "holds_used_up": "holds_used_up",
    "confirmation_not_asked": "invalid",
    "rate_limited": "busy",
}


def _contact_id(contact_id: str) -> str:
    if not contact_id or len(contact_id) > CONTACT_ID_MAX_LENGTH:
        raise ApiError(404, "trusted_contact_not_found", "there is no such trusted contact")
    return contact_id


# --- the owner's API ----------------------------------------------------------------------


@operation(bp, "GET", "/api/v1/switches/<switch_id>/trusted-contacts",
           summary="The switch's trusted contacts", tag="trusted contacts",
           response=TrustedContactList,
           description="Each contact with their status (invited, accepted, declined), and "
                       "how many this switch may have on your plan.")
def list_trusted_contacts(switch_id: str) -> dict:
    return call("scheduler", "list_trusted_contacts", current_user_id(), _switch_id(switch_id))


@operation(bp, "POST", "/api/v1/switches/<switch_id>/trusted-contacts",
           summary="Invite a trusted contact", tag="trusted contacts",
           body=TrustedContactRequest, response=TrustedContactView, status=201,
           errors=(402, 409),
           description="Mails the person an invitation to accept or decline the role. Only "
                       "a contact who accepted is ever asked anything: when the switch "
                       "becomes overdue, they can hold the release (by hold_seconds, at "
                       "most 3 times per cycle) or, with confirmation required, confirm "
                       "that you cannot check in. They never see a message or a recipient. "
                       "402 past your plan's limit; 409 `trusted_contact_exists`, "
                       "`email_not_verified` or `switch_fired`.")
def add_trusted_contact(body: TrustedContactRequest, switch_id: str) -> dict:
    return call("scheduler", "add_trusted_contact", current_user_id(), _switch_id(switch_id),
                body.model_dump(mode="json"))


@operation(bp, "DELETE", "/api/v1/switches/<switch_id>/trusted-contacts/<contact_id>",
           summary="Remove a trusted contact", tag="trusted contacts", status=204,
           description="The contact is asked nothing more, and nothing of them is kept.")
def remove_trusted_contact(switch_id: str, contact_id: str) -> None:
    call("scheduler", "remove_trusted_contact", current_user_id(), _switch_id(switch_id),
         _contact_id(contact_id))


# --- the contact's pages ------------------------------------------------------------------

PAGE_DESCRIPTION = ("A trusted contact's mail links here. {what} The page shows no message "
                    "and no recipient. Errors are pages too: 404 not a valid link, 409 "
                    "too late or not possible, 410 used or expired.")


@operation(bp, "GET", "/i/<token>", summary="Trusted contact invitation: the page",
           tag="trusted contacts", auth=False, content_type="text/html", errors=(410,),
           description=PAGE_DESCRIPTION.format(what="Shows what the role means, with "
                                                    "buttons to accept or decline; changes "
                                                    "nothing."))
def invitation_page(token: str) -> Response:
    if not INVITATION_TOKEN_PATTERN.fullmatch(token):
        return page("invalid", 404)
    try:
        invitation = call("scheduler", "inspect_invitation", token, client_context())
    except (ServiceError, ApiError) as refusal:
        return refusal_page(refusal)
    kind = "invitation" if invitation["status"] == "invited" else "used"
    return page(kind, 200, invitation=invitation)


@operation(bp, "POST", "/i/<token>", summary="Trusted contact invitation: accept or decline",
           tag="trusted contacts", auth=False, content_type="text/html",
           errors=(403, 410),
           description=PAGE_DESCRIPTION.format(what="The page's buttons post here (form "
                                                    "fields confirm=yes and decision="
                                                    "accepted or declined); the decision is "
                                                    "recorded with a consent receipt."))
def decide_invitation(token: str) -> Response:
    if not INVITATION_TOKEN_PATTERN.fullmatch(token):
        return page("invalid", 404)
    try:
        decision = request.form.get("decision", "")
        if not from_our_form() or decision not in DECISIONS:
            return page("forbidden", 403)
        invitation = call("scheduler", "decide_invitation", token, decision, client_context())
    except (ServiceError, ApiError, HTTPException) as refusal:
        return refusal_page(refusal)
    return page(invitation["status"], 200, invitation=invitation)


@operation(bp, "GET", "/t/<token>", summary="Trusted contact: the page of an overdue switch",
           tag="trusted contacts", auth=False, content_type="text/html", errors=(409, 410),
           description=PAGE_DESCRIPTION.format(what="Shows when the release happens, with "
                                                    "buttons to hold it or to confirm; "
                                                    "changes nothing."))
def request_page(token: str) -> Response:
    if not REQUEST_TOKEN_PATTERN.fullmatch(token):
        return page("invalid", 404)
    try:
        asked = call("scheduler", "inspect_contact_request", token, client_context())
    except (ServiceError, ApiError) as refusal:
        return refusal_page(refusal)
    return page("asked", 200, asked=_readable(asked))


@operation(bp, "POST", "/t/<token>", summary="Trusted contact: hold the release or confirm",
           tag="trusted contacts", auth=False, content_type="text/html",
           errors=(403, 409, 410),
           description=PAGE_DESCRIPTION.format(what="The page's buttons post here (form "
                                                    "fields confirm=yes and action=hold or "
                                                    "action=confirm)."))
def answer_request(token: str) -> Response:
    if not REQUEST_TOKEN_PATTERN.fullmatch(token):
        return page("invalid", 404)
    actions = {"hold": "hold_release", "confirm": "confirm_absence"}
    try:
        action = request.form.get("action", "")
        if not from_our_form() or action not in actions:
            return page("forbidden", 403)
        answer = call("scheduler", actions[action], token, client_context())
    except (ServiceError, ApiError, HTTPException) as refusal:
        return refusal_page(refusal)
    return page(answer["status"], 200, asked=_readable(answer))


def _readable(answer: dict) -> dict:
    """The answer with its moments and durations in words a person reads."""
    ends = parse_time(answer["grace_ends_at"])
    assert ends is not None
    return {**answer, "release_at": f"{ends:%A} {ends.day} {ends:%B %Y, %H:%M} UTC",
            "release_in": relative(ends, datetime.now(UTC)),
            "hold_words": duration(answer["hold_seconds"])}


def refusal_page(refusal: ServiceError | ApiError | HTTPException) -> Response:
    if isinstance(refusal, HTTPException):
        return page("unavailable", refusal.code or 400)
    return page(PAGES_FOR_CODES.get(refusal.code, "unavailable"), refusal.status)


def page(kind: str, status: int, **context: object) -> Response:
    html = render_template("trusted_contact.html", kind=kind, **context)
    response = Response(html, status=status, mimetype="text/html")
    response.headers["Content-Security-Policy"] = LINK_PAGE_CSP
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    return response
