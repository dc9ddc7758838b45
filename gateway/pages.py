"""Small HTML pages for links in mail (verify, reset, unsubscribe), with their own CSP.

The API's policy forbids everything (`default-src 'none'`); a page needs a little more:
the site's stylesheets (`/static`, same origin) and posting its form to this site.
Nothing else loads: no scripts, no images, no third parties, and the
`Referrer-Policy: no-referrer` of every answer keeps tokens in the URL from leaking.

A page's form is its own credential: the token it carries is what authorises the POST,
so there is no session to ride and no CSRF token to add. (An Origin check would refuse
our own forms: with `no-referrer` browsers send `Origin: null`.)
"""

from __future__ import annotations

from typing import Any

from flask import Response, render_template

from gateway.errors import ApiError
from shared.errors import ServiceError

# No script-src: `default-src 'none'` forbids every script on these pages.
LINK_PAGE_CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; "
                 "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def page(template: str, status: int = 200, **values: Any) -> Response:
    """Render `templates/<template>` as an HTML answer with the link pages' CSP."""
    response = Response(render_template(template, **values), status=status,
                        mimetype="text/html")
    response.headers["Content-Security-Policy"] = LINK_PAGE_CSP
    return response


def error_page(exc: ServiceError | ApiError, title: str) -> Response:
    """A failed action as a page: the service's message, with its status."""
    return page("message.html", exc.status, title=title, message=sentence(exc.message),
                code=exc.code)


def sentence(text: str) -> str:
    """API messages are lower-case clauses; a page shows them as sentences."""
    text = text.strip()
    if not text:
        return text
    return text[0].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")
