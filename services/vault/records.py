"""The vault's stored documents as its domain reads them: a message (its sealed fields
and what the release and the listing read in clear) and the release of a fired switch.
`storage.py` says how they are kept; the repository hands out these records."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.events.schemas import CheckInMissed

SEALED, RELEASED = "sealed", "released"


@dataclass(frozen=True)
class SealedRecipient:
    """One recipient as stored: an id in clear, name and address sealed."""

    id: str
    name: bytes
    email: bytes

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> SealedRecipient:
        return cls(id=doc["id"], name=doc["name"], email=doc["email"])


@dataclass(frozen=True)
class ReadToken:
    """A recipient's read link once released: its SHA-256 (the lookup) and the token
    itself, sealed with the author's data key (the mail needs it, nothing else does)."""

    hash: str
    sealed: bytes


@dataclass(frozen=True)
class StoredMessage:
    """A message at one revision: sealed `subject`, `body`, sender and recipients."""

    id: str
    user_id: str
    switch_id: str
    state: str
    rev: int
    subject: bytes
    body: bytes
    sender_email: bytes
    sender_name: bytes | None
    recipients: tuple[SealedRecipient, ...]
    inline: bool
    release_delay_seconds: int
    created_at: datetime
    updated_at: datetime
    # Once released:
    released_at: datetime | None = None
    fired_at: datetime | None = None
    release_cycle: int | None = None
    release_at: datetime | None = None
    read_tokens: Mapping[str, ReadToken] = field(default_factory=dict)
    dispatch_due_at: datetime | None = None
    dispatched_at: datetime | None = None

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> StoredMessage:
        return cls(
            id=doc["_id"], user_id=doc["user_id"], switch_id=doc["switch_id"],
            state=doc["state"], rev=doc["rev"], subject=doc["subject"], body=doc["body"],
            sender_email=doc["sender_email"], sender_name=doc.get("sender_name"),
            recipients=tuple(SealedRecipient.from_doc(r) for r in doc["recipients"]),
            inline=doc["inline"], release_delay_seconds=doc["release_delay_seconds"],
            created_at=doc["created_at"], updated_at=doc["updated_at"],
            released_at=doc.get("released_at"), fired_at=doc.get("fired_at"),
            release_cycle=doc.get("release_cycle"), release_at=doc.get("release_at"),
            read_tokens={recipient_id: ReadToken(token["hash"], token["token"])
                         for recipient_id, token in (doc.get("read_tokens") or {}).items()},
            dispatch_due_at=doc.get("dispatch_due_at"), dispatched_at=doc.get("dispatched_at"),
        )

    def recipient(self, recipient_id: str) -> SealedRecipient | None:
        return next((r for r in self.recipients if r.id == recipient_id), None)

    def readable_at(self, now: datetime) -> bool:
        """Released, and its release time (a farewell letter's delay) has come."""
        return self.state == RELEASED and self.release_at is not None and self.release_at <= now


@dataclass(frozen=True)
class SwitchRelease:
    """A fired switch, as the vault heard of it, and whether the scheduler was told."""

    switch_id: str
    user_id: str
    cycle: int
    deadline: datetime
    fired_at: datetime
    state: str
    notify_due_at: datetime | None = None
    attempts: int = 0
    last_error: str | None = None
    notified_at: datetime | None = None

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> SwitchRelease:
        return cls(
            switch_id=doc["_id"], user_id=doc["user_id"], cycle=doc["cycle"],
            deadline=doc["deadline"], fired_at=doc["fired_at"], state=doc["state"],
            notify_due_at=doc.get("notify_due_at"), attempts=doc.get("attempts", 0),
            last_error=doc.get("last_error"), notified_at=doc.get("notified_at"),
        )

    def missed(self) -> CheckInMissed:
        """The CheckInMissed this release was recorded from."""
        return CheckInMissed(user_id=self.user_id, switch_id=self.switch_id, cycle=self.cycle,
                             deadline=self.deadline, fired_at=self.fired_at)
