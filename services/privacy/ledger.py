"""The ledger of privacy requests: who asked what, when, and the outcome; no content.

It is the evidence that a request was received and answered in time, so it outlives the
data it is about: an erasure never erases its own entry (nor any other). The person is
named only by a pseudonym (`shared.privacy.subject_of`, the one every service uses): the
HMAC-SHA256 of their user id under a key derived from `JICM_SECRET_KEY`. Nothing in the
ledger leads back to them, but whoever holds the key and a user id can find that user's
entries (to answer a regulator, say). Entries expire `JICM_RETENTION_LEDGER_DAYS` (24
months by default) after the request.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from services.privacy.records import PrivacyRequest


def ledger_entry(request: PrivacyRequest, keep_for: timedelta) -> dict[str, Any]:
    """The ledger entry of a request as it stands (counts and statuses, never content)."""
    return {
        "_id": request.id,
        "subject": request.subject,
        "type": request.type,
        "reason": request.reason,
        "requested_by": request.requested_by,
        "requested_at": request.created_at,
        "due_at": request.due_at,
        "status": request.status,
        "completed_at": request.completed_at,
        "services": {
            name: {"status": part.status, "summary": dict(part.summary),
                   "completed_at": part.completed_at}
            for name, part in sorted(request.services.items())
        },
        "expires_at": request.created_at + keep_for,
    }
