"""The MIME message of one delivery record: headers that say plainly who writes and why.

The Message-ID is `<record-id@domain of JICM_MAIL_FROM>` and the Date is the record's
creation time, so a mail sent again after a crash is the very same message, which lets
receiving systems recognise the copy.

A message is built straight into the bytes that go over SMTP. When every address is
plain ASCII (nearly always), it is built with the standard library's `email.mime`
classes under the `compat32` policy: non-ASCII names and subjects become RFC 2047
encoded words, a body outside ASCII quoted-printable UTF-8 (one within it goes as it
is), and a header line is folded only when it holds encoded words. An address outside
ASCII cannot be an encoded word, so such a message is built with the modern
`EmailMessage` API instead and needs a server that takes SMTPUTF8 (RFC 6531). Both read
the same in any mail program; the first costs a fraction of the second's CPU, which
matters when thousands of releases leave at once.
"""

from __future__ import annotations

import email.charset
import email.policy
from dataclasses import dataclass
from datetime import datetime
from email.generator import BytesGenerator
from email.header import Header
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage, Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr, parseaddr
from functools import cache
from io import BytesIO

from services.delivery.render import RenderedMail, clean_header

NAME_MAX = 120
LINESEP = "\r\n"
# RFC 5322's limit on a line; 78 is only recommended, and folding a link or a name at 78
# would put its first part on a line of its own.
LINE_MAX = 998


@dataclass(frozen=True)
class OutgoingMail:
    """A message as it goes over SMTP: its bytes, with CRLF line ends, and whether an
    address outside ASCII needs the server's SMTPUTF8."""

    data: bytes
    smtputf8: bool = False


class _Compat32(email.policy.Compat32):
    """`compat32`, except that a plain-ASCII header that fits on a line is written as it is.

    compat32 folds every header through an `email.header.Header`, which costs more than
    the rest of the message and breaks a long link after the header's name; encoded
    words (names and subjects outside ASCII) are still folded by it.
    """

    def fold_binary(self, name: str, value: object) -> bytes:
        if (isinstance(value, str) and value.isascii() and "\r" not in value
                and "\n" not in value and len(name) + 2 + len(value) <= LINE_MAX):
            return f"{name}: {value}{self.linesep}".encode("ascii")
        return super().fold_binary(name, value)


_ASCII_POLICY = _Compat32(linesep=LINESEP)
_UTF8_QP = email.charset.Charset("utf-8")
_UTF8_QP.body_encoding = email.charset.QP


class _CachedHeaderRegistry(HeaderRegistry):
    """The standard header registry, but each header's class is built once.

    `HeaderRegistry` builds a new class (`type(...)`) for every header of every message;
    the classes depend only on the header's name, so one per name does the same work.
    """

    @cache  # noqa: B019 (one registry for the life of the process)
    def __getitem__(self, name: str) -> type[BaseHeader]:
        return super().__getitem__(name)


# The policy of a message to an address outside ASCII: the standard one, as SMTPUTF8
# allows (raw UTF-8 in the headers).
_UTF8_POLICY = email.policy.default.clone(header_factory=_CachedHeaderRegistry(),
                                          utf8=True, linesep=LINESEP)


def message_id(record_id: str, mail_from_address: str) -> str:
    """The stable Message-ID of a record."""
    return f"<{record_id}@{mail_from_address.rpartition('@')[2]}>"


def build_message(
    *,
    record_id: str,
    mail_from: str,
    mail_from_address: str,
    to: str,
    to_name: str | None,
    rendered: RenderedMail,
    created_at: datetime,
    unsubscribe_link: str | None = None,
) -> OutgoingMail:
    """A multipart/alternative message (text first, then HTML) ready for SMTP."""
    headers = {
        "Date": format_datetime(created_at),
        "Message-ID": message_id(record_id, mail_from_address),
        # Everything we send is automatic (RFC 3834): no vacation auto-replies, please.
        "Auto-Submitted": "auto-generated",
        "X-Auto-Response-Suppress": "All",
    }
    if unsubscribe_link:
        # RFC 2369 and RFC 8058: mail clients show an unsubscribe button that POSTs here.
        headers["List-Unsubscribe"] = f"<{unsubscribe_link}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    name = clean_header(to_name or "")[:NAME_MAX]
    if (to + mail_from_address + parseaddr(mail_from)[1]).isascii():
        return OutgoingMail(_ascii_message(mail_from, to, name, rendered, headers))
    return OutgoingMail(_utf8_message(mail_from, to, name, rendered, headers), smtputf8=True)


def _ascii_message(mail_from: str, to: str, name: str, rendered: RenderedMail,
                   headers: dict[str, str]) -> bytes:
    msg = MIMEMultipart("alternative", policy=_ASCII_POLICY)
    msg["From"] = formataddr(parseaddr(mail_from), charset="utf-8")
    msg["To"] = formataddr((name, to), charset="utf-8")
    subject = rendered.subject
    msg["Subject"] = subject if subject.isascii() else Header(subject, "utf-8")
    for header, value in headers.items():
        msg[header] = value
    for body, subtype in ((rendered.text, "plain"), (rendered.html, "html")):
        part = MIMEText(body, subtype, _body_charset(body), policy=_ASCII_POLICY)
        del part["MIME-Version"]  # said once, on the message itself
        msg.attach(part)
    return _flatten(msg, _ASCII_POLICY)


def _body_charset(body: str) -> str | email.charset.Charset:
    """Plain ASCII in lines SMTP takes as they are goes as it is (7bit); anything else as
    quoted-printable UTF-8."""
    if body.isascii() and all(len(line) <= LINE_MAX for line in body.splitlines()):
        return "us-ascii"
    return _UTF8_QP


def _utf8_message(mail_from: str, to: str, name: str, rendered: RenderedMail,
                  headers: dict[str, str]) -> bytes:
    msg = EmailMessage(policy=_UTF8_POLICY)
    msg["From"] = mail_from
    local, _, domain = to.rpartition("@")
    msg["To"] = Address(display_name=name, username=local, domain=domain)
    msg["Subject"] = rendered.subject
    for header, value in headers.items():
        msg[header] = value
    # Quoted-printable, as in every other message: only the headers are raw UTF-8.
    msg.set_content(rendered.text, cte="quoted-printable")
    msg.add_alternative(rendered.html, subtype="html", cte="quoted-printable")
    return _flatten(msg, _UTF8_POLICY)


def _flatten(msg: Message, policy: email.policy.Policy) -> bytes:
    out = BytesIO()
    BytesGenerator(out, policy=policy).flatten(msg)
    return out.getvalue()
