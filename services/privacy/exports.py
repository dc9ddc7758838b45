"""Exports: everything every service holds about a person, in one documented JSON file.

A gathering loop (every second, in every privacy process) claims exports that are due,
with a lease (compare-and-set on `next_attempt_at`), and asks every service for its part
at once (`<service>.export_user(user_id)`, each bounded by `JICM_EXPORT_TIMEOUT`). Privacy's
own part is read locally. Only when every part has answered is the document assembled,
sealed (`export_seal.py`) and stored; the request becomes `complete` with an expiry
(`JICM_EXPORT_TTL`), and the "your export is ready" mail is queued in the same write.

A service that does not answer, or answers with an error, keeps the export open
(`in_progress`, or `error` when a service failed rather than stayed silent) and it is
tried again with back-off (5 s, 10 s, 20 s... at most every 5 minutes); the request's
per-service status says which one is missing. An export never completes with a hole.
Nothing of a part is kept between attempts: parts hold decrypted messages.

The format is described in docs/export-format.md.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from services.privacy.export_seal import (
    UnreadableExport,
    digest,
    encode,
    open_export,
    seal_export,
)
from services.privacy.ledger import ledger_entry
from services.privacy.records import (
    COMPLETE,
    DONE,
    ERROR,
    IN_PROGRESS,
    PrivacyRequest,
)
from services.privacy.requests import human_time
from services.privacy.storage import PrivacyRepository
from shared.errors import Conflict, Gone, NotFound
from shared.events import new_event

log = logging.getLogger(__name__)

FORMAT = "jicm-export/1"
ABOUT = ("Everything Just in Case keeps about you, one part per service that keeps it. "
         "The format is described at docs/export-format.md in our source repository. "
         "Passwords and link tokens are kept only as one-way hashes and are not included.")
BATCH = 5
RETRY_BASE = timedelta(seconds=5)
RETRY_CAP = timedelta(minutes=5)


@dataclass(frozen=True)
class PartAnswer:
    """One service's answer: its part, or why there is none (`silent` or `failed`)."""

    data: dict[str, Any] | None = None
    problem: str | None = None
    failed: bool = False

    @property
    def ok(self) -> bool:
        return self.data is not None


class ServiceParts(Protocol):
    def export_user(self, user_id: str, services: tuple[str, ...]) -> dict[str, PartAnswer]:
        """Ask every named service for its part at once; an answer (or a problem) each."""
        ...


@dataclass(frozen=True)
class ExportSettings:
    key: bytes
    public_url: str
    ttl: timedelta
    lease: timedelta
    ledger_retention: timedelta


def privacy_part(repo: PrivacyRepository, user_id: str, subject: str) -> dict[str, Any]:
    """Privacy's own part: consent, its receipts, and the person's requests."""
    consent = repo.consent(user_id) or {}
    return {
        "consent": {
            "marketing": consent.get("marketing", {}),
            "cookies": consent.get("cookies", {}),
            "policy_version": consent.get("policy_version"),
            "policy_accepted_at": consent.get("policy_accepted_at"),
            "updated_at": consent.get("updated_at"),
        },
        "consent_receipts": consent.get("receipts", []),
        "requests": [
            {"id": request.id, "type": request.type, "status": request.status,
             "created_at": request.created_at, "due_at": request.due_at,
             "completed_at": request.completed_at}
            for request in repo.requests_of(user_id)
        ],
        "ledger": [
            {"request_id": entry["_id"], "type": entry["type"], "reason": entry["reason"],
             "requested_by": entry["requested_by"], "requested_at": entry["requested_at"],
             "status": entry["status"]}
            for entry in repo.ledger_entries(subject)
        ],
    }


class Exports:
    """Gathering, finishing and downloading exports."""

    def __init__(self, repo: PrivacyRepository, parts: ServiceParts, settings: ExportSettings,
                 now: datetime, *, request_id: str | None = None) -> None:
        self.repo = repo
        self.parts = parts
        self.settings = settings
        self.now = now
        self.request_id = request_id

    # Gathering ----------------------------------------------------------------------------

    def gather_due(self) -> int:
        """Try every due export once. Returns how many finished."""
        finished = 0
        for due in self.repo.due_exports(self.now, BATCH):
            claimed = self.repo.claim_export(due, self.now + self.settings.lease, self.now)
            if claimed is None or not claimed.is_export:
                continue
            finished += self.gather(claimed)
        return finished

    def gather(self, claimed: PrivacyRequest) -> bool:
        """Ask every service for its part of a claimed export; finish it when all
        answered, else try again later. True if it finished."""
        user_id = claimed.user_id
        assert user_id is not None  # only a complete erasure forgets its user
        remote = tuple(name for name in claimed.services if name != "privacy")
        answers = self.parts.export_user(user_id, remote)
        if "privacy" in claimed.services:
            answers["privacy"] = PartAnswer(privacy_part(self.repo, user_id, claimed.subject))
        if all(answer.ok for answer in answers.values()) and set(answers) >= set(remote):
            return self._finish(claimed, answers)
        self._retry(claimed, answers)
        return False

    def _finish(self, claimed: PrivacyRequest, answers: dict[str, PartAnswer]) -> bool:
        request_id, user_id = claimed.id, claimed.user_id
        document = {
            "format": FORMAT,
            "request_id": request_id,
            "user_id": user_id,
            "generated_at": self.now,
            "about": ABOUT,
            "services": {name: answers[name].data for name in sorted(answers)},
        }
        payload = encode(_jsonable(document))
        expires_at = self.now + self.settings.ttl
        self.repo.store_chunks(request_id, seal_export(self.settings.key, request_id, user_id,
                                                       payload, expires_at))
        update = {
            "$set": {"status": COMPLETE, "completed_at": self.now, "expires_at": expires_at,
                     "purge_at": expires_at + self.settings.ledger_retention,
                     "size_bytes": len(payload), "sha256": digest(payload),
                     "status_changed_at": self.now,
                     "services": {name: {"status": DONE, "completed_at": self.now}
                                  for name in answers}},
            "$unset": {"next_attempt_at": ""},
        }
        mail = self._ready_mail(claimed, answers, expires_at)
        done = self.repo.update_held(claimed, update, mail, self.now)
        if done is None:
            if self.repo.request(request_id) is None:
                self.repo.delete_chunks(request_id)  # erased meanwhile: keep nothing
            return False
        self.repo.record(ledger_entry(done, self.settings.ledger_retention))
        log.info("export %s is ready (%d bytes)", request_id, len(payload))
        return True

    def _ready_mail(self, claimed: PrivacyRequest, answers: dict[str, PartAnswer],
                    expires_at: datetime) -> dict | None:
        accounts_part = answers["accounts"].data if "accounts" in answers else None
        account = (accounts_part or {}).get("account") or {}
        if not account.get("email"):
            log.warning("export %s: no address to tell that it is ready", claimed.id)
            return None
        # The privacy centre on the site: signed in, the download is one button there.
        link = f"{self.settings.public_url}/app/privacy"
        return new_event(
            "MailRequested",
            {"kind": "privacy_export_ready", "reference": f"{claimed.id}:ready",
             "to": account["email"], "user_id": claimed.user_id,
             "context": {"link": link, "expires_at": human_time(expires_at)}},
            producer="privacy", now=self.now, request_id=self.request_id,
        )

    def _retry(self, claimed: PrivacyRequest, answers: dict[str, PartAnswer]) -> None:
        attempts = claimed.attempts or 1
        delay = min(RETRY_CAP, RETRY_BASE * 2 ** max(attempts - 1, 0))
        services = {}
        for name in claimed.services:
            answer = answers.get(name, PartAnswer(problem="not asked"))
            if answer.ok:
                services[name] = {"status": DONE, "completed_at": self.now}
            else:
                services[name] = {"status": "error" if answer.failed else "waiting",
                                  "detail": answer.problem}
        failed = any(answer.failed for answer in answers.values())
        missing = sorted(name for name, part in services.items() if part["status"] != DONE)
        log.warning("export %s: no answer yet from %s; trying again in %ds", claimed.id,
                    ", ".join(missing), delay.total_seconds())
        done = self.repo.update_held(claimed, {"$set": {
            "status": ERROR if failed else IN_PROGRESS, "services": services,
            "next_attempt_at": self.now + delay, "status_changed_at": self.now}})
        if done is not None:
            self.repo.record(ledger_entry(done, self.settings.ledger_retention))

    # Downloading -----------------------------------------------------------------------

    def download(self, request: PrivacyRequest) -> dict[str, Any]:
        """The finished export of a request its owner holds (opened from its chunks)."""
        if not request.is_export:
            raise NotFound("an erasure has nothing to download", code="not_an_export")
        if not request.complete:
            raise Conflict("the export is not ready yet; we mail you when it is",
                           code="export_not_ready", details={"status": request.status})
        if not request.download_open(self.now):
            raise Gone("this export has expired and was deleted; ask for a new one",
                       code="export_expired")
        assert request.user_id is not None  # an export keeps its user until it is purged
        try:
            payload = open_export(self.settings.key, request.id, request.user_id,
                                  self.repo.chunks_of(request.id))
        except UnreadableExport as exc:
            log.error("export %s cannot be opened: %s", request.id, exc)
            raise Gone("this export can no longer be read; ask for a new one",
                       code="export_expired") from None
        return json.loads(payload)


def _jsonable(value: Any) -> Any:
    """Datetimes as ISO-8601 UTC text (what every part already is, apart from ours)."""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, bytes):
        return value.hex()
    return value
