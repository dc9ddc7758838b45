"""A data subject request as privacy's domain reads it: an export or an erasure, where
it stands, and how each service stands with it. `storage.py` says how it is kept; the
repository hands out these records and takes new ones."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

EXPORT, ERASURE = "export", "erasure"
PENDING, IN_PROGRESS, COMPLETE, ERROR = "pending", "in_progress", "complete", "error"
OPEN = (PENDING, IN_PROGRESS, ERROR)
DONE = "done"


@dataclass(frozen=True)
class RequestPart:
    """How one service stands with a request: pending, waiting, error or done; for an
    erasure, what the service's answer counted."""

    status: str
    detail: str | None = None
    summary: Mapping[str, int] = field(default_factory=dict)
    completed_at: datetime | None = None

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> RequestPart:
        return cls(status=doc["status"], detail=doc.get("detail"),
                   summary=dict(doc.get("summary") or {}), completed_at=doc.get("completed_at"))

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"status": self.status}
        if self.detail is not None:
            doc["detail"] = self.detail
        if self.summary:
            doc["summary"] = dict(self.summary)
        if self.completed_at is not None:
            doc["completed_at"] = self.completed_at
        return doc

    @property
    def done(self) -> bool:
        return self.status == DONE


@dataclass(frozen=True)
class PrivacyRequest:
    """One stored request. `user_id` and `email` are gone once an erasure is complete;
    `email` (the receipts' address) is only ever on an erasure the person asked for."""

    id: str
    type: str
    status: str
    subject: str
    reason: str
    requested_by: str
    created_at: datetime
    due_at: datetime
    status_changed_at: datetime
    services: Mapping[str, RequestPart]
    user_id: str | None = None
    email: str | None = None
    progress_token_hash: str | None = None
    completed_at: datetime | None = None
    purge_at: datetime | None = None
    # An export being gathered, and once it is finished:
    next_attempt_at: datetime | None = None
    attempts: int | None = None
    expires_at: datetime | None = None
    size_bytes: int | None = None
    sha256: str | None = None

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> PrivacyRequest:
        return cls(
            id=doc["_id"], type=doc["type"], status=doc["status"], subject=doc["subject"],
            reason=doc["reason"], requested_by=doc["requested_by"],
            created_at=doc["created_at"], due_at=doc["due_at"],
            status_changed_at=doc["status_changed_at"],
            services={name: RequestPart.from_doc(part)
                      for name, part in (doc.get("services") or {}).items()},
            user_id=doc.get("user_id"), email=doc.get("email"),
            progress_token_hash=doc.get("progress_token_hash"),
            completed_at=doc.get("completed_at"), purge_at=doc.get("purge_at"),
            next_attempt_at=doc.get("next_attempt_at"), attempts=doc.get("attempts"),
            expires_at=doc.get("expires_at"), size_bytes=doc.get("size_bytes"),
            sha256=doc.get("sha256"),
        )

    def to_doc(self) -> dict[str, Any]:
        """The document as stored: what is not set is left out, as the updates leave it."""
        doc: dict[str, Any] = {
            "_id": self.id, "type": self.type, "status": self.status, "subject": self.subject,
            "reason": self.reason, "requested_by": self.requested_by,
            "created_at": self.created_at, "due_at": self.due_at,
            "status_changed_at": self.status_changed_at,
            "services": {name: part.to_doc() for name, part in self.services.items()},
        }
        optional = {
            "user_id": self.user_id, "email": self.email,
            "progress_token_hash": self.progress_token_hash,
            "completed_at": self.completed_at, "purge_at": self.purge_at,
            "next_attempt_at": self.next_attempt_at, "attempts": self.attempts,
            "expires_at": self.expires_at, "size_bytes": self.size_bytes, "sha256": self.sha256,
        }
        doc.update({key: value for key, value in optional.items() if value is not None})
        return doc

    @property
    def is_export(self) -> bool:
        return self.type == EXPORT

    @property
    def is_erasure(self) -> bool:
        return self.type == ERASURE

    @property
    def complete(self) -> bool:
        return self.status == COMPLETE

    def overdue(self, now: datetime) -> bool:
        """Past its due date and not complete."""
        return not self.complete and self.due_at < now

    @property
    def every_part_done(self) -> bool:
        return all(part.done for part in self.services.values())

    def download_open(self, now: datetime) -> bool:
        """A finished export that has not expired."""
        return (self.is_export and self.complete and self.expires_at is not None
                and self.expires_at > now)
