"""The cookie question: the banner on every page until it is answered, and the cookie
settings page (`/cookies`) that lists every cookie and takes the answer again.

Until a visitor answers, the site sets only strictly necessary cookies. "Accept all",
"Reject all" and "Choose" carry the same weight, nothing is ticked in advance, and the
answer is recorded by the privacy service as consent (a receipt of method `web`): on the
account when someone is signed in, otherwise under the visitor's token, which joins the
account at sign-up. A Global Privacy Control or Do Not Track signal already refused every
non-essential category, so the banner does not ask and says the signal is honoured.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask import Blueprint, Flask, Response, current_app, flash, redirect, request

from gateway.clients import consent_context, privacy_signals
from gateway.remote import call
from gateway.site.cookies import (
    CookieChoice,
    cookie_choice,
    keep_choice,
    listed_cookies,
    new_visitor_token,
)
from gateway.site.pages import local_path, render
from gateway.site.session import cookies, load_user
from gateway.site.timefmt import duration, parse_time
from services.privacy.schemas import COOKIE_CATEGORIES
from shared.config import SETTINGS_CONFIG_KEY
from shared.visitors import COOKIE_CHOICE_DAYS

bp = Blueprint("site_consent", __name__)

SIGNAL_NAMES = {"gpc": "Global Privacy Control", "dnt": "Do Not Track"}
CATEGORIES = {
    "analytics": ("Analytics", "would count visits to improve the site"),
    "marketing": ("Marketing", "would measure our advertising"),
}


def init_banner(app: Flask) -> None:
    """Give every page what its cookie banner needs."""
    app.context_processor(banner_context)


def banner_context() -> dict:
    """This browser's answer (if any), the privacy signal it sends, and where it is."""
    signals = privacy_signals()
    signal = "gpc" if signals["gpc"] else ("dnt" if signals["dnt"] else None)
    return {"cookie_choice": cookie_choice(cookies()), "privacy_signal": signal,
            "signal_name": SIGNAL_NAMES.get(signal or ""), "here": request.path}


@bp.get("/cookies")
def settings_page() -> Response:
    load_user()
    lifetime = duration(current_app.config[SETTINGS_CONFIG_KEY].session_ttl)
    return render("cookies.html", choice=cookie_choice(cookies()), categories=CATEGORIES,
                  cookies=listed_cookies(cookies(), lifetime),
                  next_path=local_path(request.args.get("next"), "/"))


@bp.post("/cookies")
def choose() -> Response:
    user = load_user()
    answer = request.form.get("choice", "")
    if answer == "accept":
        wanted = dict.fromkeys(COOKIE_CATEGORIES, True)
    elif answer in ("reject", "signal", "save"):
        # "save": the settings page's own boxes, none of them ticked unless ticked now.
        wanted = {c: answer == "save" and request.form.get(c) == "yes"
                  for c in COOKIE_CATEGORIES}
    else:
        flash("Please choose one of the buttons.", "problem")
        return redirect("/cookies", 303)
    token = (cookie_choice(cookies()) or CookieChoice(new_visitor_token(), False, False)).token
    kept, expires_at = _record(user, token, wanted)
    response = redirect(local_path(request.form.get("next"), "/cookies"), 303)
    choice = CookieChoice(token, kept["analytics"], kept["marketing"])
    keep_choice(response, cookies(), choice, expires_at)
    flash(_saved_words(choice), "ok")
    return response


def _record(user: dict | None, token: str,
            wanted: dict[str, bool]) -> tuple[dict[str, bool], datetime]:
    """The choice recorded by privacy (a signal keeps everything off), and its expiry."""
    context = consent_context("web")
    if user is None:
        view = call("privacy", "choose_visitor_cookies", token, wanted, context)
        return view["cookies"], parse_time(view["expires_at"])
    view = call("privacy", "update_consent", user["id"], {"cookies": wanted}, context)
    return view["cookies"], datetime.now(UTC) + timedelta(days=COOKIE_CHOICE_DAYS)


def _saved_words(choice: CookieChoice) -> str:
    allowed = [CATEGORIES[c][0].lower() for c in COOKIE_CATEGORIES if getattr(choice, c)]
    if not allowed:
        return ("Your choice is saved: only the cookies the site needs to work. You can "
                "change it at any time under \u201cCookie settings\u201d.")
    return (f"Your choice is saved: {' and '.join(allowed)} cookies are allowed. You can "
            "change it at any time under \u201cCookie settings\u201d.")


def signed_up_with() -> dict:
    """What sign-up tells accounts about this browser's cookie choice (its token)."""
    choice = cookie_choice(cookies())
    return {"visitor": choice.token} if choice else {}
