"""The erasure saga as privacy runs it: who has answered, and when it is over.

Privacy published `ErasureRequested` with the request; every erasing service answers
`ErasureCompleted`. Each answer marks that service `done` on the request (once: a repeated
answer changes nothing), the first one moves the request to `in_progress`, and the one
that completes the set moves it to `complete` in a single conditional update that also
drops the user id and the captured address from the request and queues the final receipt
to that address. A service that was down answers when it is back, and the request
completes then; until then it stays `in_progress`, naming the service it waits for, and
operators see it (`jicm privacy requests --overdue`).

Privacy's own part (`erase_privacy_part`) is the person's consent and receipts, and their
other requests with any export still stored. The ledger is never erased.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from services.privacy.ledger import ledger_entry
from services.privacy.records import DONE, PrivacyRequest, RequestPart
from services.privacy.storage import PrivacyRepository
from shared.events import new_event
from shared.events.schemas import ErasureCompleted
from shared.privacy import forget_throttle
from shared.throttle import hashed_key

log = logging.getLogger(__name__)

PRIVACY_THROTTLE_SCOPES = ("consent-user", "privacy-request-user")


class Saga:
    """Tracks erasures as the services answer."""

    def __init__(self, repo: PrivacyRepository, now: datetime, *, closed_retention: timedelta,
                 ledger_retention: timedelta, request_id: str | None = None) -> None:
        self.repo = repo
        self.now = now
        self.closed_retention = closed_retention
        self.ledger_retention = ledger_retention
        self.request_id = request_id

    def answered(self, answer: ErasureCompleted) -> str | None:
        """Record one service's answer; returns the request's status afterwards."""
        part = RequestPart(status=DONE, summary=dict(answer.summary), completed_at=self.now)
        self.repo.mark_part(answer.request_id, answer.service, part)
        request = self.repo.request(answer.request_id)
        if request is None or not request.is_erasure:
            log.warning("ErasureCompleted from %s for unknown request %s", answer.service,
                        answer.request_id)
            return None
        self.repo.start_progress(answer.request_id, self.now)
        if request.every_part_done:
            self._complete(request)
        request = self.repo.request(answer.request_id)
        assert request is not None
        self.repo.record(ledger_entry(request, self.ledger_retention))
        return request.status

    def _complete(self, request: PrivacyRequest) -> None:
        mail = None
        if request.email:
            mail = new_event(
                "MailRequested",
                {"kind": "privacy_erasure_completed",
                 "reference": f"{request.id}:privacy_erasure_completed", "to": request.email},
                producer="privacy", now=self.now, request_id=self.request_id,
            )
        fields = {"completed_at": self.now, "status_changed_at": self.now,
                  "purge_at": self.now + self.closed_retention}
        if self.repo.complete_erasure(request.id, fields, mail, self.now) is not None:
            log.info("erasure %s is complete: every service has answered", request.id)


def erase_privacy_part(repo: PrivacyRepository, user_id: str, request_id: str) -> dict[str, int]:
    """Privacy's part of an erasure: consent and receipts, other requests, stored exports."""
    consent = repo.consent(user_id)
    removed_requests = repo.delete_requests_of(user_id, keep=request_id)
    chunks = sum(repo.delete_chunks(removed) for removed in removed_requests)
    return {
        "consents": int(repo.consents.delete_one({"_id": user_id})),
        "consent_receipts": len(consent.get("receipts", [])) if consent else 0,
        "requests": len(removed_requests),
        "export_chunks": chunks,
        "throttle_counters": forget_throttle(repo.throttle.collection, PRIVACY_THROTTLE_SCOPES,
                                             hashed_key(user_id)),
    }
