"""Rendering a mail: subject, plain text and HTML from the kind's Jinja2 templates.

HTML templates autoescape everything (a sender's name or a message body is text, never
markup); text templates do not escape. Missing values are errors (StrictUndefined), never
an empty gap in a mail. Every template receives the request's context plus:

- `public_url`: the site's address (JICM_PUBLIC_URL), for "who is writing to you";
- `to_name`: the recipient's name when the requester gave one;
- `unsubscribe_link`: on marketing mail only;
- the variant's `fetched` values (an inline release's text), given by the caller that
  fetched them just now. Checking a request at the door renders with placeholders.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, select_autoescape

from services.delivery.kinds import MailKind, check_context
from shared.errors import InvalidInput

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
    """The one Jinja2 environment of the process (templates are compiled once).

    Templates ship with the code and change only with a deployment, so they are never
    checked for changes on disk (`auto_reload` would stat each file on every render).
    """
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        auto_reload=False,
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
    fetched: Mapping[str, str] | None = None,
) -> RenderedMail:
    """Render `kind` with `context`; InvalidInput if the context does not fit the kind."""
    variant = check_context(kind, context)
    fetched = fetched or {}
    missing = [key for key in variant.fetched if not isinstance(fetched.get(key), str)]
    if missing:
        raise InvalidInput(f"{missing[0]}: was not fetched for {kind.name} mail",
                           code="invalid_mail_context", details={"field": missing[0]})
    values = {
        **context,
        **{key: fetched[key] for key in variant.fetched},
        "public_url": public_url,
        "to_name": to_name,
        "unsubscribe_link": unsubscribe_link,
    }
    env = environment()
    subject = subject_template(variant.subject).render(values)
    return RenderedMail(
        subject=clean_header(subject)[:SUBJECT_MAX],
        text=env.get_template(f"{variant.template}.txt").render(values),
        html=env.get_template(f"{variant.template}.html").render(values),
    )


@cache
def subject_template(source: str) -> Template:
    """A variant's subject line, compiled once (there are a handful of them)."""
    return environment().from_string(source)


def placeholders(kind: MailKind, context: Mapping[str, str]) -> dict[str, str]:
    """Stand-ins for the fetched values, to check a request before anything is fetched."""
    return {key: "" for key in kind.variant(context).fetched}


def clean_header(value: str) -> str:
    """A value safe for a single header line: no line breaks, no control characters."""
    return _CONTROL.sub(" ", value).strip()
