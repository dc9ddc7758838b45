"""Rendering the site's pages: one Content-Security-Policy, the signed-in user, notices.

The policy allows our own stylesheets and scripts and nothing else: no inline script or
style (so an injected `<script>` or `style=` attribute does nothing), no other origin,
forms posting only to us, no framing. Images may also be `data:` URIs: Pico CSS draws its
checkbox and select icons so, and an image runs no code.
"""

from __future__ import annotations

from typing import Any

from flask import Response, g, render_template

SITE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def render(template: str, status: int = 200, **values: Any) -> Response:
    """`templates/site/<template>` as an HTML answer under the site's policy."""
    html = render_template(f"site/{template}", user=g.get("user"), **values)
    response = Response(html, status=status, mimetype="text/html")
    response.headers["Content-Security-Policy"] = SITE_CSP
    return response


def problem_page(status: int, title: str, message: str) -> Response:
    """A page that says what went wrong, in words, with its status."""
    return render("problem.html", status, title=title, message=message)
