"""A released message as its recipient may keep it: a text file, or an `.eml` that any mail
program opens. Only what the recipient's page shows goes in: who wrote, when, the subject
and the text; no address of the author's account, no link, nothing that tracks."""

from __future__ import annotations

import re
from datetime import datetime
from email.headerregistry import Address, Group
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

from gateway.site.timefmt import parse_time

FILENAME_MAX = 60
_UNSAFE = re.compile(r"[^A-Za-z0-9 _-]+")


def day(moment: datetime) -> str:
    """"3 June 2030": the day alone, as a letter is dated."""
    return f"{moment.day} {moment:%B %Y}"


def letter_text(message: dict) -> str:
    """The message as a plain text file, headed like a letter."""
    written = day(parse_time(message["written_at"]))
    released = day(parse_time(message["released_at"]))
    return (f"{message['subject']}\n\nFrom: {message['sender_name']}\n"
            f"To: {message['recipient_name']}\nWritten: {written}\n\n"
            f"{message['body'].rstrip()}\n\n"
            f"--\nDelivered by Just in Case on {released}, as {message['sender_name']} "
            "asked.\n")


def letter_eml(message: dict, mail_from: str) -> bytes:
    """The message as an email file (RFC 5322): from its author, through our address."""
    mail = EmailMessage()
    _, sender_address = parseaddr(mail_from)
    mail["From"] = Address(display_name=f"{message['sender_name']} via Just in Case",
                           addr_spec=sender_address)
    # The recipient's name only: the page never shows an address, neither does its file.
    mail["To"] = Group(display_name=message["recipient_name"])
    mail["Subject"] = message["subject"]
    mail["Date"] = format_datetime(parse_time(message["written_at"]))
    mail.set_content(message["body"])
    return mail.as_bytes()


def filename(subject: str, extension: str) -> str:
    """A file name from the subject, safe in any file system and header."""
    stem = " ".join(_UNSAFE.sub(" ", subject).split())[:FILENAME_MAX].strip() or "letter"
    return f"{stem}.{extension}"
