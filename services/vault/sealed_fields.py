"""A message's readable content, and how it is sealed into (and opened from) a document.

Each field is sealed on its own, bound to (user, message, revision, field), so the
release can open one recipient's address without the body, and delivery's question
about one recipient opens nothing of the others. A recipient's fields are named by the
recipient's id: `recipient.<id>.name`, `recipient.<id>.email`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any

from services.vault.crypto import DataKey
from services.vault.records import SealedRecipient, StoredMessage


@dataclass(frozen=True)
class PlainRecipient:
    id: str
    name: str
    email: str


@dataclass(frozen=True)
class Content:
    """Everything about a message that is stored encrypted."""

    subject: str
    body: str
    sender_email: str
    sender_name: str | None
    recipients: tuple[PlainRecipient, ...]

    def with_changes(self, **changes: Any) -> Content:
        return replace(self, **changes)

    @property
    def sender_display(self) -> str:
        return sender_display(self.sender_name, self.sender_email)


def sender_display(sender_name: str | None, sender_email: str) -> str:
    """How recipients see the sender named: "Ada Lovelace (ada@example.org)", or the address."""
    return f"{sender_name} ({sender_email})" if sender_name else sender_email


def new_recipients(
    entered: list[tuple[str, str]], before: tuple[PlainRecipient, ...] = ()
) -> tuple[PlainRecipient, ...]:
    """Recipients from (name, email) pairs; one already on the message keeps its id."""
    known = {recipient.email.casefold(): recipient.id for recipient in before}
    return tuple(
        PlainRecipient(id=known.get(email.casefold(), str(uuid.uuid4())), name=name, email=email)
        for name, email in entered
    )


class Sealer:
    """Seals and opens the fields of one message at one revision."""

    def __init__(self, key: DataKey, user_id: str, message_id: str, rev: int) -> None:
        self.key = key
        self.user_id = user_id
        self.message_id = message_id
        self.rev = rev

    def seal(self, field: str, plaintext: str) -> bytes:
        return self.key.seal(plaintext, user_id=self.user_id, message_id=self.message_id,
                             rev=self.rev, field=field)

    def open(self, field: str, sealed: bytes) -> str:
        return self.key.open(sealed, user_id=self.user_id, message_id=self.message_id,
                             rev=self.rev, field=field)

    @classmethod
    def of(cls, key: DataKey, message: StoredMessage) -> Sealer:
        """The sealer for a stored message at its stored revision."""
        return cls(key, message.user_id, message.id, message.rev)

    # Whole messages -----------------------------------------------------------------

    def seal_content(self, content: Content) -> dict[str, Any]:
        """The encrypted fields of a message document."""
        return {
            "subject": self.seal("subject", content.subject),
            "body": self.seal("body", content.body),
            "sender_email": self.seal("sender_email", content.sender_email),
            "sender_name": (
                None if content.sender_name is None
                else self.seal("sender_name", content.sender_name)
            ),
            "recipients": [self.seal_recipient(recipient) for recipient in content.recipients],
        }

    def seal_recipient(self, recipient: PlainRecipient) -> dict[str, Any]:
        prefix = f"recipient.{recipient.id}"
        return {
            "id": recipient.id,
            "name": self.seal(f"{prefix}.name", recipient.name),
            "email": self.seal(f"{prefix}.email", recipient.email),
        }

    def open_content(self, message: StoredMessage) -> Content:
        return Content(
            subject=self.open("subject", message.subject),
            body=self.open("body", message.body),
            sender_email=self.open("sender_email", message.sender_email),
            sender_name=self._sender_name(message),
            recipients=tuple(self.open_recipient(stored) for stored in message.recipients),
        )

    def open_recipient(self, stored: SealedRecipient) -> PlainRecipient:
        prefix = f"recipient.{stored.id}"
        return PlainRecipient(
            id=stored.id,
            name=self.open(f"{prefix}.name", stored.name),
            email=self.open(f"{prefix}.email", stored.email),
        )

    def open_subject(self, message: StoredMessage) -> str:
        return self.open("subject", message.subject)

    def open_sender(self, message: StoredMessage) -> str:
        """The sender's display name, opening only the sender fields."""
        return sender_display(self._sender_name(message),
                              self.open("sender_email", message.sender_email))

    def _sender_name(self, message: StoredMessage) -> str | None:
        if message.sender_name is None:
            return None
        return self.open("sender_name", message.sender_name)
