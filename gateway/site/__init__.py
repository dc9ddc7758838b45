"""The web site: server-rendered pages over the same service RPCs as the API.

Each page calls the services exactly as the API route beside it does; the rules stay in
the services. Pages work without JavaScript (the static scripts only fill in the
browser's time zone, refresh progress pages and work the recipient's "Print" button),
every form carries a CSRF token (Flask-WTF), and the session is the API's own opaque
token in an HttpOnly cookie (`gateway/site/cookies.py`). The bearer API never reads that
cookie. No cookie but the strictly necessary is ever set, and the cookie question is
asked (and recorded as consent) before any other could be (`gateway/site/consent.py`).
"""

from __future__ import annotations

import logging

from flask import Flask, Response, g, redirect, request, url_for
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

from gateway.errors import PAGE_BLUEPRINTS, PAGE_RENDERER, ApiError
from gateway.pages import sentence
from gateway.site import (
    account,
    auth,
    billing,
    consent,
    dashboard,
    messages,
    privacy,
    public,
    switches,
    two_factor,
)
from gateway.site.cookies import cookie_policy
from gateway.site.pages import problem_page
from gateway.site.session import POLICY_KEY, drop_stale_cookie
from gateway.site.timefmt import in_years
from shared.config import Settings
from shared.errors import ServiceError

log = logging.getLogger(__name__)

BLUEPRINTS = (public.bp, auth.bp, dashboard.bp, messages.bp, switches.bp, account.bp,
              two_factor.bp, consent.bp, privacy.bp, billing.bp)
SITE_NAMES = frozenset(bp.name for bp in BLUEPRINTS)
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")

csrf = CSRFProtect()

TITLES = {
    400: "This request could not be understood",
    403: "This form has expired",
    404: "There is nothing here",
    405: "This is not allowed here",
    413: "That is too much at once",
    429: "Too many attempts",
    500: "Something went wrong on our side",
    502: "A part of Just in Case is not answering",
    503: "Just in Case is briefly unavailable",
    504: "Just in Case is slow to answer",
}
MESSAGES = {
    403: "For your safety, forms work only from our own pages and for a limited time. "
         "Go back, reload the page and try again.",
    404: "This page does not exist, or it is not yours to see.",
    500: "We have been told. Please try again in a minute.",
}


def init_site(app: Flask, settings: Settings) -> None:
    """Register the site on the gateway: cookies, CSRF, blueprints and HTML errors."""
    policy = cookie_policy(settings.public_url)
    app.extensions[POLICY_KEY] = policy
    app.config.update(
        SECRET_KEY=settings.derived_key("gateway/site-forms"),
        SESSION_COOKIE_NAME=policy.forms_name,
        SESSION_COOKIE_SECURE=policy.secure,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_PATH="/",
        # The site's own views ask for the check (below); the API, the webhooks and the
        # pages behind mailed links carry their own credentials and take none.
        WTF_CSRF_CHECK_DEFAULT=False,
        WTF_CSRF_SSL_STRICT=policy.secure,
    )
    csrf.init_app(app)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    app.before_request(_check_csrf)
    consent.init_banner(app)
    app.after_request(drop_stale_cookie)
    app.extensions[PAGE_RENDERER] = error_page
    app.extensions[PAGE_BLUEPRINTS] = SITE_NAMES
    # What an erasure keeps for tax law, and for how long, as the configuration says.
    app.jinja_env.globals["invoice_keeping"] = in_years(settings.retention_invoice_days)


def _check_csrf() -> None:
    """Every form of the site's own pages must carry its CSRF token."""
    if request.method in UNSAFE_METHODS and request.blueprint in SITE_NAMES:
        csrf.protect()


def error_page(exc: BaseException) -> Response:
    """Any failure on a site page as a page in words; never a stack trace."""
    if isinstance(exc, CSRFError):
        return problem_page(403, TITLES[403], MESSAGES[403])
    if isinstance(exc, ServiceError | ApiError):
        if exc.status == 401:
            return _to_log_in()
        return problem_page(exc.status, TITLES.get(exc.status, TITLES[400]),
                            MESSAGES.get(exc.status) or sentence(exc.message))
    if isinstance(exc, HTTPException):
        status = exc.code or 500
        page = problem_page(status, TITLES.get(status, TITLES[400]),
                            MESSAGES.get(status, "Please go back and try again."))
        if getattr(exc, "valid_methods", None):
            page.headers["Allow"] = ", ".join(exc.valid_methods)
        return page
    log.exception("unhandled error on a page", exc_info=exc)
    return problem_page(500, TITLES[500], MESSAGES[500])


def _to_log_in() -> Response:
    g.forget_session = True
    return redirect(url_for("site_auth.log_in_page"), 303)
