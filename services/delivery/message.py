"""The MIME message of one delivery record: headers that say plainly who writes and why.

The Message-ID is `<record-id@domain of JICM_MAIL_FROM>` and the Date is the record's
creation time, so a mail sent again after a crash is the very same message, which lets
receiving systems recognise the copy.
"""

from __future__ import annotations

import email.policy
from datetime import datetime
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.utils import format_datetime
from functools import cache

from services.delivery.render import RenderedMail, clean_header

NAME_MAX = 120


class _CachedHeaderRegistry(HeaderRegistry):
    """The standard header registry, but each header's class is built once.

    `HeaderRegistry` builds a new class (`type(...)`) for every header of every message;
    the classes depend only on the header's name, so one per name does the same work.
    """

    @cache  # noqa: B019 (one registry for the life of the process)
    def __getitem__(self, name: str) -> type[BaseHeader]:
        return super().__getitem__(name)


# The policy of every message we build: the standard one (`email.policy.default`).
POLICY = email.policy.default.clone(header_factory=_CachedHeaderRegistry())


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
) -> EmailMessage:
    """A multipart/alternative message (text first, then HTML) ready for SMTP."""
    msg = EmailMessage(policy=POLICY)
    msg["From"] = mail_from
    local, _, domain = to.rpartition("@")
    msg["To"] = Address(display_name=clean_header(to_name or "")[:NAME_MAX],
                        username=local, domain=domain)
    msg["Subject"] = rendered.subject
    msg["Date"] = format_datetime(created_at)
    msg["Message-ID"] = message_id(record_id, mail_from_address)
    # Everything we send is automatic (RFC 3834): no vacation auto-replies, please.
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Auto-Response-Suppress"] = "All"
    if unsubscribe_link:
        # RFC 2369 and RFC 8058: mail clients show an unsubscribe button that POSTs here.
        msg["List-Unsubscribe"] = f"<{unsubscribe_link}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(rendered.text)
    msg.add_alternative(rendered.html, subtype="html")
    return msg
