"""Delivery's mail itself: every kind renders in text and HTML and says who writes and why;
requests that no template could render are refused at the door; values are kept sealed."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest

from services.delivery.context_seal import ContextSeal, Unreadable
from services.delivery.kinds import KINDS, kind_named
from services.delivery.message import build_message
from services.delivery.render import RenderedMail, render
from services.delivery.smtp import PERMANENT, TEMPORARY, Outcome
from services.delivery.unsubscribe import BadToken, address_key, make_token, read_token
from shared.errors import InvalidInput

PUBLIC = "https://jic.example"
LINK = f"{PUBLIC}/verify?token=abc"

SAMPLES: dict[tuple[str, str], dict[str, str]] = {
    ("verification", ""): {"link": LINK, "expires_at": "Friday 3 May 2030 at 10:00 UTC"},
    ("password_reset", ""): {"link": LINK, "expires_at": "Friday 3 May 2030 at 10:00 UTC"},
    ("account_exists", ""): {"reset_link": LINK, "expires_at": "Friday 3 May 2030 at 10:00 UTC"},
    ("reminder", "upcoming"): {"stage": "upcoming", "link": f"{PUBLIC}/c/tok",
                               "deadline": "Tuesday 3 June 2030 at 14:00 UTC"},
    ("reminder", "overdue"): {"stage": "overdue", "link": f"{PUBLIC}/c/tok",
                              "deadline": "Tuesday 3 June 2030 at 14:00 UTC"},
    ("released_message", "link"): {"variant": "link", "sender_name": "Ada Lovelace",
                                   "link": f"{PUBLIC}/r/tok"},
    ("released_message", "inline"): {"variant": "inline", "sender_name": "Ada Lovelace",
                                     "message_id": "m-1", "recipient_id": "r-1"},
    ("test_release", "link"): {"variant": "link", "sender_name": "Ada Lovelace",
                               "recipient_name": "Bob", "link": f"{PUBLIC}/r/test/tok",
                               "expires_at": "Saturday 4 May 2030 at 10:00 UTC"},
    ("test_release", "inline"): {"variant": "inline", "sender_name": "Ada Lovelace",
                                 "recipient_name": "Bob", "test_release_id": "t-1",
                                 "message_id": "m-1", "recipient_id": "r-1"},
    ("privacy_export_ready", ""): {"link": f"{PUBLIC}/export", "expires_at": "tomorrow"},
    ("privacy_erasure_received", ""): {"due_at": "Friday 3 May 2030"},
    ("privacy_erasure_completed", ""): {},
    ("payment_failed", ""): {"billing_url": f"{PUBLIC}/app/billing", "amount": "€4.00",
                             "plan": "Premium", "invoice_number": "INV-7",
                             "next_attempt_at": "2030-05-04T10:00:00+00:00"},
    ("product_news", ""): {"headline": "Pausing is here", "body": "Going on holiday?"},
    ("trusted_contact_invitation", ""): {"owner_email": "ada@example.org",
                                         "link": f"{PUBLIC}/i/tok",
                                         "expires_at": "Friday 3 May 2030 at 10:00 UTC"},
    ("trusted_contact_request", ""): {"owner_email": "ada@example.org", "link": f"{PUBLIC}/t/tok",
                                      "grace_ends_at": "Tuesday 3 June 2030 at 14:00 UTC",
                                      "hold": "7 days", "holds_left": "2",
                                      "confirmation": "required", "held_before": "no"},
    ("trusted_contact_hold", ""): {"contact_name": "Sam Rivera",
                                   "grace_ends_at": "Tuesday 10 June 2030 at 14:00 UTC",
                                   "holds_left": "2"},
}


# Values fetched when the mail is built, never stored with it.
FETCHED: dict[tuple[str, str], dict[str, str]] = {
    ("released_message", "inline"): {"message_subject": "For Byron",
                                     "message_body": "The key is under the mat."},
    ("test_release", "inline"): {"message_subject": "For Byron",
                                 "message_body": "The key is under the mat."},
}
# Context values that name things for the sender only, never shown in the mail.
UNSHOWN = ("stage", "variant", "message_id", "recipient_id", "test_release_id", "confirmation",
           "held_before")


def test_every_kind_and_variant_has_a_sample_here():
    variants = {(kind.name, key) for kind in KINDS.values() for key in kind.variants}
    assert variants == set(SAMPLES)


@pytest.mark.parametrize("kind, variant", sorted(SAMPLES))
def test_every_kind_renders_in_text_and_html_saying_who_writes_and_why(kind, variant):
    context = SAMPLES[(kind, variant)]
    fetched = FETCHED.get((kind, variant))
    mail = render(KINDS[kind], context, public_url=PUBLIC, to_name="Bob",
                  unsubscribe_link=f"{PUBLIC}/u/t" if KINDS[kind].marketing else None,
                  fetched=fetched)
    for body in (mail.text, mail.html):
        assert "Just in Case" in body
        assert "You receive this mail because" in body
        assert PUBLIC in body
        assert "Hello Bob," in body
        for key, value in {**context, **(fetched or {})}.items():
            if key not in UNSHOWN:
                assert value in body, f"{key} missing from {kind}/{variant}"
    assert mail.subject and "\n" not in mail.subject
    assert mail.html.lstrip().startswith("<!DOCTYPE html>")


def test_a_released_message_names_its_sender_and_explains_what_just_in_case_is():
    mail = render(KINDS["released_message"], SAMPLES[("released_message", "link")],
                  public_url=PUBLIC)
    assert mail.subject == "A message for you from Ada Lovelace"
    assert "Ada Lovelace named you" in mail.text
    assert "stops checking in" in mail.text
    assert "You have no account with us" in mail.text


def test_the_html_part_escapes_what_people_wrote_and_the_text_part_keeps_it():
    context = {**SAMPLES[("released_message", "inline")], "sender_name": "<b>Ada</b>"}
    fetched = {**FETCHED[("released_message", "inline")],
               "message_body": "<script>alert(1)</script>"}
    mail = render(KINDS["released_message"], context, public_url=PUBLIC, fetched=fetched)
    assert "<script>" not in mail.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in mail.html
    assert "<script>alert(1)</script>" in mail.text
    assert "&lt;b&gt;Ada&lt;/b&gt;" in mail.html


def test_an_inline_release_takes_its_text_only_when_the_mail_is_built():
    inline = SAMPLES[("released_message", "inline")]
    with pytest.raises(InvalidInput) as handed_over:
        render(KINDS["released_message"], {**inline, "message_body": "the text"},
               public_url=PUBLIC, fetched=FETCHED[("released_message", "inline")])
    assert handed_over.value.details["field"] == "context.message_body"
    with pytest.raises(InvalidInput) as not_fetched:
        render(KINDS["released_message"], inline, public_url=PUBLIC)
    assert not_fetched.value.details["field"] == "message_subject"


def test_a_subject_cannot_smuggle_a_header():
    context = {"headline": "News\r\nBcc: everyone@example.org", "body": "x"}
    mail = render(KINDS["product_news"], context, public_url=PUBLIC, unsubscribe_link=PUBLIC)
    assert "\n" not in mail.subject and "\r" not in mail.subject


def test_a_missing_value_is_refused_naming_it():
    with pytest.raises(InvalidInput) as refused:
        render(KINDS["verification"], {"link": LINK}, public_url=PUBLIC)
    assert refused.value.details["field"] == "context.expires_at"


def test_a_variant_that_does_not_exist_is_refused():
    with pytest.raises(InvalidInput, match="overdue, upcoming"):
        render(KINDS["reminder"], {"stage": "someday", "link": LINK, "deadline": "x"},
               public_url=PUBLIC)


def test_an_unknown_kind_is_refused_naming_the_known_ones():
    with pytest.raises(InvalidInput, match="verification") as refused:
        kind_named("chain_letter")
    assert refused.value.code == "unknown_mail_kind"


@pytest.mark.parametrize("link", ["javascript:alert(1)", "/verify?token=x", "ftp://x.example/"])
def test_links_must_be_absolute_http_urls(link):
    with pytest.raises(InvalidInput) as refused:
        render(KINDS["verification"], {"link": link, "expires_at": "x"}, public_url=PUBLIC)
    assert refused.value.details["field"] == "context.link"


def received(mail) -> EmailMessage:
    """The message as a receiving mail program parses it."""
    assert b"\n" not in mail.data.replace(b"\r\n", b""), "every line ends in CRLF"
    # Raw UTF-8 in the headers (SMTPUTF8) is read as text, as RFC 6532 readers do.
    return email.message_from_string(mail.data.decode(), policy=email.policy.default)


def text_of(msg: EmailMessage, subtype: str) -> str:
    """A body as a mail program shows it (line ends as the reader's system has them)."""
    return msg.get_body((subtype,)).get_content().replace("\r\n", "\n")


def build(to: str = "bob@example.org", to_name: str | None = "Bob", **changes):
    rendered = render(KINDS["verification"], SAMPLES[("verification", "")], public_url=PUBLIC)
    arguments = {"record_id": "abc123", "mail_from": "Just in Case <no-reply@jic.example>",
                 "mail_from_address": "no-reply@jic.example", "to": to, "to_name": to_name,
                 "rendered": rendered, "created_at": datetime(2030, 5, 1, 10, 0, tzinfo=UTC),
                 **changes}
    return build_message(**arguments)


def test_the_message_says_who_sends_it_and_carries_a_stable_message_id():
    mail = build(to_name="Bob\r\nBcc: x@example.org")
    msg = received(mail)
    assert not mail.smtputf8
    assert msg["Message-ID"] == "<abc123@jic.example>"
    assert msg["From"] == "Just in Case <no-reply@jic.example>"
    assert msg["To"].addresses[0].addr_spec == "bob@example.org"
    assert "\n" not in str(msg["To"]) and msg["Bcc"] is None
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Date"] == "Wed, 01 May 2030 10:00:00 +0000"
    assert msg["List-Unsubscribe"] is None
    assert msg["MIME-Version"] == "1.0"
    assert [part.get_content_type() for part in msg.iter_parts()] == ["text/plain", "text/html"]


def test_names_and_subjects_outside_ascii_arrive_intact_in_a_plain_ascii_message():
    rendered = RenderedMail(subject="Für dich, Zoë 💌 " + "ein langer Betreff " * 8,
                            text="Grüße ✓\n" + "eine lange Zeile " * 10 + "\n",
                            html="<p>Grüße ✓</p>")
    mail = build(to_name="Zoë Ñandú, \"the Younger\"", rendered=rendered,
                 mail_from="Juste à temps <no-reply@jic.example>")
    assert mail.data.isascii(), "encoded words and quoted-printable: 7-bit clean"
    assert all(len(line) <= 998 for line in mail.data.split(b"\r\n"))
    msg = received(mail)
    assert msg["Subject"] == rendered.subject
    assert msg["To"].addresses[0].display_name == 'Zoë Ñandú, "the Younger"'
    assert msg["From"].addresses[0].display_name == "Juste à temps"
    assert text_of(msg, "plain") == rendered.text
    assert text_of(msg, "html") == rendered.html


def test_an_address_outside_ascii_needs_smtputf8_and_arrives_intact():
    mail = build(to="zoë@exämple.org", to_name="Zoë")
    assert mail.smtputf8
    msg = received(mail)
    assert msg["To"].addresses[0].addr_spec == "zoë@exämple.org"
    assert msg["Message-ID"] == "<abc123@jic.example>"
    assert [part.get_content_type() for part in msg.iter_parts()] == ["text/plain", "text/html"]


def test_marketing_messages_carry_one_click_unsubscribe_headers():
    rendered = render(KINDS["product_news"], SAMPLES[("product_news", "")], public_url=PUBLIC,
                      unsubscribe_link=f"{PUBLIC}/u/tok")
    msg = received(build(to_name=None, rendered=rendered, unsubscribe_link=f"{PUBLIC}/u/tok"))
    assert msg["List-Unsubscribe"] == f"<{PUBLIC}/u/tok>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


# Sealed values -------------------------------------------------------------------------------


def test_sealed_values_open_only_for_their_own_record_and_key():
    seal = ContextSeal(b"s" * 32)
    sealed = seal.seal("record-1", {"link": LINK})
    assert b"token=abc" not in sealed
    assert seal.open("record-1", sealed) == {"link": LINK}
    with pytest.raises(Unreadable):
        seal.open("record-2", sealed)
    with pytest.raises(Unreadable):
        ContextSeal(b"t" * 32).open("record-1", sealed)


# Unsubscribe tokens ---------------------------------------------------------------------------


def test_an_unsubscribe_token_names_the_address_only_as_a_hash_and_cannot_be_forged():
    key = b"u" * 32
    token = make_token(key, "Bob@Example.org", "user-1")
    assert "bob" not in token.lower()
    assert read_token(key, token) == (address_key("bob@example.org"), "user-1")
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for bad in (forged, "x" * 60, "", token + "x"):
        with pytest.raises(BadToken):
            read_token(key, bad)
    with pytest.raises(BadToken):
        read_token(b"v" * 32, token)


# SMTP verdicts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code, stage, result",
    [
        (550, "RCPT", PERMANENT),
        (554, "DATA", PERMANENT),
        (553, "MAIL", PERMANENT),
        (552, "RCPT", TEMPORARY),  # RFC 5321: treat as 452
        (451, "DATA", TEMPORARY),
        (421, "RCPT", TEMPORARY),
        (-1, "DATA", TEMPORARY),
    ],
)
def test_only_a_5xx_verdict_on_the_message_is_permanent(code, stage, result):
    assert Outcome.from_reply(code, b"reason", stage).result == result
