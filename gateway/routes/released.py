"""`GET /r/<token>`: a released message, read by its recipient in the browser, and kept
(`/r/<token>/letter.txt`, `/r/<token>/letter.eml`).

The link in a release mail opens one message for one recipient, in the site's look: who
wrote and when, the text (escaped), a print stylesheet, the two downloads, and what
happens to the link. Nothing tracks the reader: no cookie, no third party, no referrer,
no caching, no indexing; the one script is our own static file behind the "Print"
button. Reading changes nothing and may be repeated; the vault limits reads per client,
and answers the same 404 for anything that is not a valid link. A farewell letter that
is not due yet says when it opens. Every failure is a page too, never JSON.

`GET /r/test/<token>` is the same page opened from a test release's mail (the owner's
own): marked as a test, with the date its link expires. It asks the vault a question of
its own (`read_test_release`), so a test link never opens the real page, nor a real
read link the test page.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from flask import Blueprint, Response, current_app, render_template

from gateway.api import operation
from gateway.clients import client_context
from gateway.errors import ApiError
from gateway.remote import call
from gateway.site.letters import day, filename, letter_eml, letter_text
from gateway.site.timefmt import parse_time
from shared.config import SETTINGS_CONFIG_KEY
from shared.errors import ServiceError

bp = Blueprint("released", __name__)

TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{20,128}")

# Our stylesheets and the print button's script; nothing else, and no form at all.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")

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
NOT_YET = "not_yet_released"
TEST_QUESTION = "read_test_release"
TEST_GONE = ("This test link does not open any message",
             "Test links work for 24 hours, and only until the switch fires for real. To see "
             "your messages as your recipients would, send yourself a new test release from "
             "your switch's settings.")


@operation(bp, "GET", "/r/<token>", summary="Read a released message", tag="recipients",
           auth=False, content_type="text/html", errors=(404, 409, 429, 500, 503, 504),
           description="The page a release mail links to: the message, for its recipient. "
                       "409 for a farewell letter that is not due yet (the page says when). "
                       "Every answer, errors included, is an HTML page.")
def read_released(token: str) -> Response:
    return _opened(token, lambda message: _page(render_template(
        "site/letter.html", message=message,
        written_on=day(parse_time(message["written_at"])),
        released_on=day(parse_time(message["released_at"]))), 200))


@operation(bp, "GET", "/r/<token>/letter.txt", summary="Keep a released message as text",
           tag="recipients", auth=False, content_type="text/plain",
           error_content_type="text/html", errors=(404, 409, 429, 500, 503, 504),
           description="The message as a plain text file (a download); failures are pages.")
def download_text(token: str) -> Response:
    return _opened(token, lambda message: _download(
        letter_text(message).encode(), "text/plain; charset=utf-8",
        filename(message["subject"], "txt")))


@operation(bp, "GET", "/r/<token>/letter.eml", summary="Keep a released message as an email",
           tag="recipients", auth=False, content_type="message/rfc822",
           error_content_type="text/html", errors=(404, 409, 429, 500, 503, 504),
           description="The message as an .eml file any mail program opens; failures are "
                       "pages.")
def download_eml(token: str) -> Response:
    mail_from = current_app.config[SETTINGS_CONFIG_KEY].mail_from
    return _opened(token, lambda message: _download(
        letter_eml(message, mail_from), "message/rfc822", filename(message["subject"], "eml")))


@operation(bp, "GET", "/r/test/<token>", summary="Read a message of a test release",
           tag="recipients", auth=False, content_type="text/html",
           errors=(404, 429, 500, 503, 504),
           description="The page a test release's mail links to: the recipient's page, "
                       "marked as a test, for 24 hours. Every answer is an HTML page.")
def read_test_release(token: str) -> Response:
    return _opened(token, lambda message: _page(render_template(
        "site/letter.html", message=message, test=True,
        written_on=day(parse_time(message["written_at"])),
        released_on=day(parse_time(message["released_at"])),
        expires=_moment(message["expires_at"])), 200), question=TEST_QUESTION)


@operation(bp, "GET", "/r/test/<token>/letter.txt",
           summary="Keep a message of a test release as text", tag="recipients", auth=False,
           content_type="text/plain", error_content_type="text/html",
           errors=(404, 429, 500, 503, 504),
           description="The download of the test page, as the recipient would get it.")
def download_test_text(token: str) -> Response:
    return _opened(token, lambda message: _download(
        letter_text(message).encode(), "text/plain; charset=utf-8",
        filename(message["subject"], "txt")), question=TEST_QUESTION)


@operation(bp, "GET", "/r/test/<token>/letter.eml",
           summary="Keep a message of a test release as an email", tag="recipients",
           auth=False, content_type="message/rfc822", error_content_type="text/html",
           errors=(404, 429, 500, 503, 504),
           description="The download of the test page, as the recipient would get it.")
def download_test_eml(token: str) -> Response:
    mail_from = current_app.config[SETTINGS_CONFIG_KEY].mail_from
    return _opened(token, lambda message: _download(
        letter_eml(message, mail_from), "message/rfc822", filename(message["subject"], "eml")),
        question=TEST_QUESTION)


def _moment(value: str) -> str:
    moment = parse_time(value)
    return f"{day(moment)} at {moment:%H:%M} UTC"


def _opened(token: str, answer: Callable[[dict], Response],
            question: str = "read_released") -> Response:
    """`answer` to the message this link opens, or the page that says why it opens none.
    `question` is the vault's: a real read link's, or a test link's."""
    test = question == TEST_QUESTION
    if not TOKEN_PATTERN.fullmatch(token):
        return _failure(404, test=test)
    try:
        message = call("vault", question, token, client_context())
    except ServiceError as exc:
        if exc.code == NOT_YET:
            return _not_yet(exc.details.get("opens_at"))
        return _failure(exc.status, exc.details.get("retry_after_seconds"), test=test)
    except ApiError as exc:
        return _failure(exc.status, exc.headers.get("Retry-After"), test=test)
    return answer(message)


def _not_yet(opens_at: str | None) -> Response:
    when = _moment(opens_at) if opens_at else "later"
    page = render_template("site/letter.html", message=None,
                           heading="This letter is not to be opened yet",
                           explanation=f"Its author asked for it to be given to you on "
                                       f"{when}. Come back to this same link then: it "
                                       "will open the letter.")
    return _page(page, 409)


def _failure(status: int, retry_after: int | str | None = None, *,
             test: bool = False) -> Response:
    heading, explanation = FAILURES.get(status, UNAVAILABLE)
    if test and status == 404:
        heading, explanation = TEST_GONE
    page = render_template("site/letter.html", message=None, heading=heading,
                           explanation=explanation)
    response = _page(page, status if status in FAILURES or status >= 500 else 404)
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _download(body: bytes, mimetype: str, name: str) -> Response:
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return _private(response)


def _page(html: str, status: int) -> Response:
    response = Response(html, status=status, mimetype="text/html")
    response.headers["Content-Security-Policy"] = PAGE_CSP
    return _private(response)


def _private(response: Response) -> Response:
    response.headers["X-Robots-Tag"] = "noindex, nofollow, noarchive"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response
