"""Data subject requests: asking for an export or an erasure, and seeing where they stand.

Every request is due 30 days after it was made (stricter than GDPR's month and CCPA's 45
days), is written to the ledger, and is its owner's alone: another user's request is
answered exactly like one that does not exist (404).

An erasure needs the password again (accounts checks it, rate limited like a log-in). It
is stored together with `ErasureRequested` (and, when the person asked, the "we received
your request" mail) in one write; then accounts closes the account at once, so no session
of the person works any longer while the services erase their parts. The address the
final receipt goes to is kept on the request until that receipt is queued, then dropped.
A person has at most one open request of each type: asking again answers the open one.

Since the account closes at once, the person who asked follows their erasure with a
progress token instead of a session: handed out once, with the new request, and kept only
as its SHA-256 (`progress`). It opens that request's status and nothing else, for as long
as the finished request is kept.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from services.privacy.ledger import ledger_entry
from services.privacy.records import ERASURE, EXPORT, PENDING, PrivacyRequest, RequestPart
from services.privacy.schemas import (
    DUE_AFTER,
    ClientContext,
    Download,
    NewPrivacyRequest,
    PrivacyRequestCreated,
    PrivacyRequestList,
    PrivacyRequestView,
    ServicePart,
)
from services.privacy.storage import PrivacyRepository
from shared.errors import Forbidden, NotFound
from shared.events import new_event
from shared.privacy import subject_of
from shared.storage import DuplicateKeyError
from shared.throttle import Limit, hashed_key

log = logging.getLogger(__name__)

PRODUCER = "privacy"
REQUESTS_PER_USER = Limit("privacy-request-user", count=10, window_seconds=3600)
REQUESTS_PER_CLIENT = Limit("privacy-request-client", count=30, window_seconds=3600)
# A progress page polls every few seconds; this only stops guessing.
PROGRESS_READS_PER_CLIENT = Limit("erasure-progress-client", count=1200, window_seconds=3600)
PROGRESS_TOKEN_BYTES = 32
# Retention erasures get an id derived from the user: asking twice finds the first one.
RETENTION_NAMESPACE = uuid.UUID("c5d0b1f6-2a9e-4d53-8f11-7b3e6c0a4d92")


class AccountsDirectory(Protocol):
    """What privacy asks accounts (over RPC, each call bounded in time)."""

    def verify_password(self, user_id: str, password: str) -> bool: ...

    def close_account(self, user_id: str) -> None: ...

    def find_user(self, email_or_id: str) -> dict[str, str] | None: ...


@dataclass(frozen=True)
class RequestSettings:
    subject_key: bytes
    public_url: str
    ledger_retention: timedelta
    erasing_services: tuple[str, ...]
    export_services: tuple[str, ...]


def human_time(moment: datetime) -> str:
    """A moment as a person reads it in a mail: `Tuesday 3 June 2030 at 14:00 UTC`."""
    return f"{moment:%A} {moment.day} {moment:%B %Y at %H:%M} UTC"


def retention_request_id(user_id: str) -> str:
    return str(uuid.uuid5(RETENTION_NAMESPACE, f"retention:{user_id}"))


def view(request: PrivacyRequest, now: datetime, public_url: str) -> PrivacyRequestView:
    """A stored request as its owner sees it."""
    download = None
    if request.download_open(now):
        assert request.expires_at is not None  # a finished export always expires
        download = Download(url=f"{public_url}/api/v1/privacy/requests/{request.id}/download",
                            expires_at=request.expires_at)
    return PrivacyRequestView(
        id=request.id,
        type=request.type,
        status=request.status,
        created_at=request.created_at,
        due_at=request.due_at,
        overdue=request.overdue(now),
        completed_at=request.completed_at,
        services={name: ServicePart(status=part.status, detail=part.detail,
                                    completed_at=part.completed_at)
                  for name, part in sorted(request.services.items())},
        download=download,
    )


def created(request: PrivacyRequest,
            progress_token: str | None = None) -> PrivacyRequestCreated:
    """What the person who asked is told of a new (or the open) request."""
    return PrivacyRequestCreated(id=request.id, type=request.type, status=request.status,
                                 due_at=request.due_at, progress_token=progress_token)


def token_hash(token: str) -> str:
    """Progress tokens are kept only as their SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()


class Requests:
    """Use cases of data subject requests, for one RPC or event."""

    def __init__(self, repo: PrivacyRepository, now: datetime, settings: RequestSettings,
                 accounts: AccountsDirectory, *, request_id: str | None = None) -> None:
        self.repo = repo
        self.now = now
        self.settings = settings
        self.accounts = accounts
        self.request_id = request_id

    # Asking -----------------------------------------------------------------------------

    def create(self, user_id: str, email: str, new: NewPrivacyRequest,
               client: ClientContext) -> PrivacyRequestCreated:
        """A new export or erasure for the signed-in user (or the open one of that type)."""
        self.repo.throttle.consume(REQUESTS_PER_USER, hashed_key(user_id), self.now)
        if client.ip:
            self.repo.throttle.consume(REQUESTS_PER_CLIENT, hashed_key(client.ip), self.now)
        if new.type == EXPORT:
            return created(self.start_export(user_id))
        assert new.password is not None  # the schema requires it for an erasure
        if not self.accounts.verify_password(user_id, new.password):
            raise Forbidden("the password is not correct; an erasure needs your password",
                            code="password_incorrect", details={"field": "password"})
        token = secrets.token_urlsafe(PROGRESS_TOKEN_BYTES)
        request = self.start_erasure(user_id, email, reason="user", requested_by="user",
                                     progress_token=token)
        # Only the request made just now carries this token; an open one keeps its own.
        fresh = hmac.compare_digest(request.progress_token_hash or "", token_hash(token))
        return created(request, token if fresh else None)

    def start_export(self, user_id: str) -> PrivacyRequest:
        """A new export for the gathering loop to take at once (or the open export)."""
        open_request = self.repo.open_request(user_id, EXPORT)
        if open_request is not None:
            return open_request
        request = replace(self._new_request(str(uuid.uuid4()), EXPORT, user_id, "user", "user",
                                            self.settings.export_services),
                          next_attempt_at=self.now, attempts=0)
        self.repo.add_request(request, now=self.now)
        self._record(request)
        log.info("export %s requested", request.id)
        return request

    def start_erasure(self, user_id: str, email: str, *, reason: str, requested_by: str,
                      request_id: str | None = None,
                      progress_token: str | None = None) -> PrivacyRequest:
        """Start the erasure saga (or answer the open erasure of this user)."""
        open_request = self.repo.open_request(user_id, ERASURE)
        if open_request is not None:
            return open_request
        request = self._new_request(request_id or str(uuid.uuid4()), ERASURE, user_id, reason,
                                    requested_by, self.settings.erasing_services)
        if progress_token is not None:
            request = replace(request, progress_token_hash=token_hash(progress_token))
        events = [new_event("ErasureRequested",
                            {"request_id": request.id, "user_id": user_id, "reason": reason,
                             "email": email},
                            producer=PRODUCER, now=self.now, request_id=self.request_id)]
        if reason == "user":
            # The person asked: they get a receipt now and another when it is done, at the
            # address they have now (kept on the request until the last receipt is queued).
            request = replace(request, email=email)
            events.append(self._mail("privacy_erasure_received", request, email,
                                     {"due_at": human_time(request.due_at)}))
        try:
            self.repo.add_request(request, *events, now=self.now)
        except DuplicateKeyError:
            existing = self.repo.request(request.id)
            assert existing is not None
            return existing
        self._record(request)
        log.info("erasure %s requested (%s, by %s)", request.id, reason, requested_by)
        self._close_account(user_id)
        return request

    def erase_child(self, email_or_user_id: str) -> PrivacyRequestCreated:
        """An operator learned that an account belongs to someone under 16: erase it."""
        found = self.accounts.find_user(email_or_user_id.strip())
        if found is None:
            raise NotFound("no account has this address or id", code="account_not_found")
        request = self.start_erasure(found["user_id"], found["email"], reason="child",
                                     requested_by="operator")
        return created(request)

    def _new_request(self, request_id: str, request_type: str, user_id: str, reason: str,
                     requested_by: str, services: tuple[str, ...]) -> PrivacyRequest:
        return PrivacyRequest(
            id=request_id,
            type=request_type,
            status=PENDING,
            user_id=user_id,
            subject=subject_of(self.settings.subject_key, user_id),
            reason=reason,
            requested_by=requested_by,
            created_at=self.now,
            due_at=self.now + DUE_AFTER,
            status_changed_at=self.now,
            services={name: RequestPart(status=PENDING) for name in services},
        )

    def _mail(self, kind: str, request: PrivacyRequest, email: str,
              context: dict[str, str]) -> dict:
        # No user id on purpose: these receipts are about an erasure, and delivery's own
        # erasure must not cancel them; delivery drops the address once they have left.
        return new_event("MailRequested",
                         {"kind": kind, "reference": f"{request.id}:{kind}", "to": email,
                          "context": context},
                         producer=PRODUCER, now=self.now, request_id=self.request_id)

    def _close_account(self, user_id: str) -> None:
        try:
            self.accounts.close_account(user_id)
        except Exception:
            # The erasure goes on regardless: accounts' part of it ends every session too.
            log.warning("could not close account %s at once; its erasure will", user_id,
                        exc_info=True)

    def _record(self, request: PrivacyRequest) -> None:
        self.repo.record(ledger_entry(request, self.settings.ledger_retention))

    # Reading ------------------------------------------------------------------------------

    def list(self, user_id: str) -> PrivacyRequestList:
        return PrivacyRequestList(requests=[view(request, self.now, self.settings.public_url)
                                            for request in self.repo.requests_of(user_id)])

    def get(self, user_id: str, request_id: str) -> PrivacyRequestView:
        return view(self.owned(user_id, request_id), self.now, self.settings.public_url)

    def progress(self, request_id: str, token: str, client: ClientContext) -> PrivacyRequestView:
        """An erasure's status for whoever holds its progress token (the same 404 for a
        wrong token, another request, or none at all)."""
        if client.ip:
            self.repo.throttle.consume(PROGRESS_READS_PER_CLIENT, hashed_key(client.ip),
                                       self.now)
        request = self.repo.request(request_id)
        stored = request.progress_token_hash if request is not None else None
        if request is None or not stored or not hmac.compare_digest(stored, token_hash(token)):
            raise NotFound("no erasure has this id and progress token",
                           code="request_not_found")
        return view(request, self.now, self.settings.public_url)

    def owned(self, user_id: str, request_id: str) -> PrivacyRequest:
        """The user's own request; another user's is answered like none at all (404)."""
        request = self.repo.request_of(user_id, request_id)
        if request is None:
            raise NotFound(f"you have no privacy request {request_id[:64]}",
                           code="request_not_found")
        return request
