"""The privacy centre (`/app/privacy`): marketing consent per channel, the receipts that
prove every choice, "download my data", and the way to "erase my account"; and the page
that follows an erasure once the account is closed (`/erasure`).

Every switch and button is one request that takes effect at once, recorded by the
privacy service (receipts of method `web`); the rules (opt-in, privacy signals, due
dates, who may see what) are the service's. Progress pages work without script: they
carry a "Check again" link, and `static/site.js` refreshes their progress on its own.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Response, flash, g, redirect, request, session, url_for
from werkzeug.exceptions import NotFound

from gateway.clients import client_context, consent_context
from gateway.errors import ApiError
from gateway.pages import sentence
from gateway.remote import call
from gateway.routes.privacy import DOWNLOAD_TIMEOUT, REQUEST_ID, export_file
from gateway.site.pages import render
from gateway.site.session import signed_in
from gateway.site.timefmt import parse_time, when, zone
from services.privacy.schemas import CHANNELS
from shared.errors import ServiceError

bp = Blueprint("site_privacy", __name__)

ERASURE_KEY = "erasure"  # in the form cookie: which erasure this browser follows
POLL_SECONDS = 3

CHANNEL_WORDS = {"email": "By email", "postal": "By post", "phone": "By phone",
                 "sms": "By text message"}
PURPOSE_WORDS = {
    "marketing.email": "News by email", "marketing.postal": "News by post",
    "marketing.phone": "News by phone", "marketing.sms": "News by text message",
    "cookies.analytics": "Analytics cookies", "cookies.marketing": "Marketing cookies",
    "policy": "The privacy policy",
}
METHOD_WORDS = {
    "signup": "when you signed up", "web": "on this site", "api": "through the API",
    "gpc": "your browser\u2019s Global Privacy Control", "dnt": "your browser\u2019s Do Not Track",
    "unsubscribe_link": "the unsubscribe link in a mail",
}
SERVICE_WORDS = {
    "accounts": "Your account, sessions and mailed links",
    "vault": "Your messages and their recipients",
    "scheduler": "Your switches and check-ins",
    "delivery": "The mail we sent for you",
    "billing": "Your plan and payments",
    "privacy": "Your consent and its receipts",
}
PART_WORDS = {"pending": "not started yet", "waiting": "waiting for its answer",
              "error": "failed; we try again", "done": "done"}
STATUS_WORDS = {"pending": "received", "in_progress": "under way",
                "error": "held up; we keep trying", "complete": "complete"}


def change_words(change: dict) -> str:
    """One change of a receipt in words: "News by email: on"."""
    what = PURPOSE_WORDS.get(change["purpose"], change["purpose"])
    choice = change["choice"]
    if isinstance(choice, bool):
        return f"{what}: {'on' if choice else 'off'}"
    return f"{what}: version {choice} accepted"


def _words() -> dict:
    """What the privacy pages need to put times, receipts and progress into words."""
    words = {"tz": zone(g.user.get("time_zone") if g.get("user") else None),
            "now": datetime.now(UTC), "when": when, "parse_time": parse_time,
            "change_words": change_words, "method_words": METHOD_WORDS,
            "service_words": SERVICE_WORDS, "part_words": PART_WORDS,
            "status_words": STATUS_WORDS, "poll_seconds": POLL_SECONDS}
    return {**words, "words": words}


def _request_id(value: str) -> str:
    if not REQUEST_ID.fullmatch(value):
        raise NotFound()
    return value


# The centre ---------------------------------------------------------------------------------


@bp.get("/app/privacy")
@signed_in
def centre() -> Response:
    consent = call("privacy", "get_consent", g.user["id"], consent_context("web"))
    receipts = call("privacy", "list_receipts", g.user["id"])["receipts"]
    exports = [r for r in call("privacy", "list_requests", g.user["id"])["requests"]
               if r["type"] == "export"]
    return render("privacy_centre.html", active="privacy", consent=consent,
                  receipts=list(reversed(receipts)), exports=list(reversed(exports))[:5],
                  channels=CHANNEL_WORDS, **_words())


@bp.post("/app/privacy/marketing/<channel>")
@signed_in
def set_marketing(channel: str) -> Response:
    if channel not in CHANNELS:
        raise NotFound()
    wanted = request.form.get("on") == "yes"
    try:
        view = call("privacy", "update_consent", g.user["id"],
                    {"marketing": {channel: wanted}}, consent_context("web"))
    except (ServiceError, ApiError) as exc:
        flash(sentence(exc.message), "problem")
        return redirect(url_for(".centre") + "#marketing", 303)
    what = CHANNEL_WORDS[channel].lower()
    if view["kept_off"]:
        flash(f"Your browser\u2019s privacy signal keeps news {what} off.", "problem")
    else:
        state = "on" if view["marketing"][channel] else "off"
        flash(f"News {what} is {state}, from now on.", "ok")
    return redirect(url_for(".centre") + "#marketing", 303)


# Download my data ----------------------------------------------------------------------------


@bp.post("/app/privacy/export")
@signed_in
def start_export() -> Response:
    created = call("privacy", "create_request", g.user["id"], g.user["email"],
                   {"type": "export"}, consent_context("web"))
    return redirect(url_for(".request_page", request_id=created["id"]), 303)


@bp.get("/app/privacy/requests/<request_id>")
@signed_in
def request_page(request_id: str) -> Response:
    found = call("privacy", "get_request", g.user["id"], _request_id(request_id))
    return render("privacy_request.html", active="privacy", request_view=found, **_words())


@bp.get("/app/privacy/requests/<request_id>/download")
@signed_in
def download(request_id: str) -> Response:
    document = call("privacy", "download_export", g.user["id"], _request_id(request_id),
                    timeout=DOWNLOAD_TIMEOUT)
    return export_file(document, request_id)


# Erase my account: what follows once the account is closed -------------------------------------


def follow_erasure(created: dict) -> bool:
    """Remember, in this browser's form cookie, the erasure to follow; False without a
    progress token (an erasure asked for before, elsewhere)."""
    if not created.get("progress_token"):
        return False
    session[ERASURE_KEY] = {"id": created["id"], "token": created["progress_token"]}
    return True


@bp.get("/erasure")
def erasure_page() -> Response:
    followed = session.get(ERASURE_KEY) or {}
    if not followed.get("id") or not followed.get("token"):
        raise NotFound()
    try:
        progress = call("privacy", "erasure_progress", followed["id"], followed["token"],
                        client_context())
    except ServiceError as exc:
        if exc.status != 404:
            raise
        session.pop(ERASURE_KEY, None)  # purged since: nothing left to follow
        raise NotFound() from None
    return render("erasure.html", request_view=progress, **_words())
