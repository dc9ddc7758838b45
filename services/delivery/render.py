"""Rendering a mail: subject, plain text and HTML from the kind's Jinja2 templates.

HTML templates autoescape everything (a sender's name or a message body is text, never
markup); text templates do not escape. Missing values are errors (StrictUndefined), never
an empty gap in a mail. Every template receives the request's context plus:

- `public_url`: the site's address (JICM_PUBLIC_URL), for "who is writing to you";
- `to_name`: the recipient's name when the requester gave one;
- `unsubscribe_link`: on marketing mail only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from services.delivery.kinds import MailKind, check_context

TEMPLATES = Path(__file__).resolve().parent / "templates"
SUBJECT_MAX = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    text: str
    html: str


@cache
def environment() -> Environment:
    """The one Jinja2 environment of the process (templates are compiled once)."""
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(
    kind: MailKind,
    context: Mapping[str, str],
    *,
    public_url: str,
    to_name: str | None = None,
    unsubscribe_link: str | None = None,
) -> RenderedMail:
    """Render `kind` with `context`; InvalidInput if the context does not fit the kind."""
    variant = check_context(kind, context)
    values = {
        **context,
        "public_url": public_url,
        "to_name": to_name,
        "unsubscribe_link": unsubscribe_link,
    }
    env = environment()
    subject = env.from_string(variant.subject).render(values)
    return RenderedMail(
        subject=clean_header(subject)[:SUBJECT_MAX],
        text=env.get_template(f"{variant.template}.txt").render(values),
        html=env.get_template(f"{variant.template}.html").render(values),
    )


def clean_header(value: str) -> str:
    """A value safe for a single header line: no line breaks, no control characters."""
    return _CONTROL.sub(" ", value).strip()
