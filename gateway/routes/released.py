"""`GET /r/<token>`: a released message, read by its recipient in the browser.

The link in a release mail opens one message for one recipient, as a plain page: no
script, no external resource, escaped text, a CSP that allows nothing but its own inline
style (by hash), no referrer, no caching, no indexing. Reading changes nothing and may be
repeated; the vault limits reads per client. Every failure is a page too, never JSON.
"""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import datetime

from flask import Blueprint, Response, render_template
from markupsafe import Markup

from gateway.api import operation
from gateway.clients import client_context
from gateway.errors import ApiError
from gateway.remote import call
from shared.errors import ServiceError

bp = Blueprint("released", __name__)

TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{20,128}")

STYLE = (
    "body{margin:0;background:#f6f5f2;color:#1d1d1b;"
    "font:1.05rem/1.6 Georgia,'Times New Roman',serif}"
    "main{max-width:40rem;margin:0 auto;padding:2.5rem 1.25rem}"
    "h1{font-size:1.6rem;line-height:1.3;margin:.5rem 0}"
    ".from,.when,footer{font-family:system-ui,sans-serif;font-size:.9rem;color:#55554f}"
    "article{white-space:pre-wrap;overflow-wrap:anywhere;margin:2rem 0;padding:1.5rem;"
    "background:#fff;border:1px solid #e2e0da;border-radius:6px}"
    "footer{border-top:1px solid #e2e0da;margin-top:2rem;padding-top:1rem}"
)
# Our own constant, inserted verbatim: escaping would change the bytes the CSP hash covers.
STYLE_MARKUP = Markup(STYLE)  # noqa: S704
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
PAGE_CSP = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)

FAILURES = {
    404: ("This link does not open any message",
          "Check that the whole link from the mail was copied. If it was, the message may "
          "have been removed."),
    429: ("Too many requests",
          "This address has asked for messages too often. Please wait a few minutes and "
          "try again."),
}
UNAVAILABLE = ("The message cannot be shown right now",
               "Something on our side is not answering. Nothing is lost: please try the same "
               "link again in a few minutes.")


@operation(bp, "GET", "/r/<token>", summary="Read a released message", tag="recipients",
           auth=False, content_type="text/html", errors=(404, 429, 500, 503, 504),
           description="The page a release mail links to: the message, for its recipient. "
                       "Every answer, errors included, is an HTML page.")
def read_released(token: str) -> Response:
    if not TOKEN_PATTERN.fullmatch(token):
        return _failure(404)
    try:
        message = call("vault", "read_released", token, client_context())
    except ServiceError as exc:
        retry_after = (exc.details or {}).get("retry_after_seconds")
        return _failure(exc.status, retry_after)
    except ApiError as exc:
        return _failure(exc.status, exc.headers.get("Retry-After"))
    released = datetime.fromisoformat(message["released_at"])
    page = render_template("released_message.html", message=message, style=STYLE_MARKUP,
                           released_on=released.strftime("%-d %B %Y"))
    return _page(page, 200)


def _failure(status: int, retry_after: int | str | None = None) -> Response:
    heading, explanation = FAILURES.get(status, UNAVAILABLE)
    page = render_template("released_message.html", message=None, heading=heading,
                           explanation=explanation, style=STYLE_MARKUP)
    response = _page(page, status if status in FAILURES or status >= 500 else 404)
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _page(html: str, status: int) -> Response:
    response = Response(html, status=status, mimetype="text/html")
    response.headers["Content-Security-Policy"] = PAGE_CSP
    response.headers["X-Robots-Tag"] = "noindex, nofollow, noarchive"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response
