"""Rendering the site's pages: one Content-Security-Policy, the signed-in user, notices.

The policy allows our own stylesheets and scripts and nothing else: no inline script or
style (so an injected `<script>` or `style=` attribute does nothing), no other origin,
forms posting only to us, no framing. Images may also be `data:` URIs: Pico CSS draws its
checkbox and select icons so, and an image runs no code. `connect-src 'self'` lets the
static script of progress pages ask for the page again.

The billing page is the one exception: its forms are answered with a redirect to
Stripe's payment page or customer portal, and a browser holds such a redirect to the
form's `form-action` too, so that page names those origins as well (`form_targets`).
"""

from __future__ import annotations

import re
from typing import Any

from flask import Response, g, render_template

FORM_ACTION_SELF = "form-action 'self'"
SITE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    f"connect-src 'self'; {FORM_ACTION_SELF}; frame-ancestors 'none'; base-uri 'none'"
)
# A path of this site to return to after a form: no scheme, no host, no `//`.
LOCAL_PATH = re.compile(r"/(?!/)[A-Za-z0-9/_.~%-]*(#[A-Za-z0-9_-]*)?")


def render(template: str, status: int = 200, *, form_targets: tuple[str, ...] = (),
           **values: Any) -> Response:
    """`templates/site/<template>` as an HTML answer under the site's policy; its forms
    may also lead to `form_targets` (origins)."""
    html = render_template(f"site/{template}", user=g.get("user"), **values)
    response = Response(html, status=status, mimetype="text/html")
    csp = SITE_CSP
    if form_targets:
        csp = csp.replace(FORM_ACTION_SELF, " ".join((FORM_ACTION_SELF, *form_targets)))
    response.headers["Content-Security-Policy"] = csp
    return response


def problem_page(status: int, title: str, message: str) -> Response:
    """A page that says what went wrong, in words, with its status."""
    return render("problem.html", status, title=title, message=message)


def local_path(value: str | None, default: str) -> str:
    """`value` if it is a path of this site (never another site: no open redirect)."""
    return value if value and LOCAL_PATH.fullmatch(value) else default
