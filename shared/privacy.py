"""Each service's part of the erasure saga: erase once, answer every time.

Privacy publishes `ErasureRequested`; every service that holds personal data erases or
pseudonymises its part and answers `ErasureCompleted`. A service declares the `Erasures`
dependency and hands it its own erasure::

    erasures = Erasures()

    @event_handler("ErasureRequested")
    def on_erasure_requested(self, event):
        self.erasures.answer(event.data, erase=lambda: erase_user(self.store, ...))

The answer is written through the service's own outbox (`Erasures` relays it), in the
very write that records "done" in the service's `erasures` collection: one small document
per request id, holding nothing that names the person (the request id, the reason, what was
erased and when, and the person's pseudonym: `subject_of` their user id). So:

- a crash after the erasure and before that write runs the erasure again on redelivery
  (every service's erasure is idempotent: a second run finds nothing and changes nothing);
- a crash after that write loses nothing: the relay publishes the answer;
- a replayed `ErasureRequested` (a redelivery, an operator replaying a dead letter, privacy
  asking again) erases nothing twice: it finds the record and answers again with the
  summary of the first run;
- an event about the person that arrives after their erasure (one that waited in a retry
  queue behind it, or a dead letter replayed later) must not bring their data back:
  handlers that create or change a user's data first ask `erased(user_id)`, which finds
  the record by the pseudonym.

Records expire `JICM_RETENTION_CLOSED_DAYS` after the erasure (the `erasures` collection is
declared for every service by the storage layer); a request replayed after that is erased
again (finding nothing) and answered again, which is just as harmless.

`forget_throttle` removes rate-limit counters keyed by a user's id or hashed address, so an
erased user's id does not linger in a counter until its window ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from shared.config import settings_of
from shared.events import new_event
from shared.events.outbox import OutboxRelay, new_document_with_events, with_event
from shared.events.schemas import ErasureRequested
from shared.storage import Collection, DuplicateKeyError
from shared.storage.provider import ERASURES, database_of

log = logging.getLogger(__name__)

# The key of every service's pseudonym of a user (derived from JICM_SECRET_KEY), the same
# everywhere so that whoever holds the key and a user id finds every record about them.
SUBJECT_KEY_PURPOSE = "privacy/subject"


def subject_of(key: bytes, user_id: str) -> str:
    """A user's pseudonym: the HMAC-SHA256 of their id. It leads back to nobody without the key."""
    return hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()


def answer_erasure(
    erasures: Collection,
    request: ErasureRequested,
    *,
    service: str,
    erase: Callable[[], dict[str, int]],
    subject: str,
    now: datetime,
    keep_for: timedelta,
    request_id: str | None = None,
) -> dict[str, int]:
    """Erase the user (once per request) and answer ErasureCompleted. Returns the summary."""
    done = erasures.get(request.request_id)
    if done is not None:
        # Answered before: answer again (privacy may have missed it), erase nothing.
        event = _completed(request, service, done["summary"], now, request_id)
        erasures.update_one({"_id": request.request_id},
                            with_event({"$inc": {"answers": 1}}, event, now=now))
        log.info("erasure %s was already done by %s; answered again", request.request_id,
                 service)
        return dict(done["summary"])
    summary = {key: int(value) for key, value in erase().items()}
    record = {
        "_id": request.request_id,
        "reason": request.reason,
        "subject": subject,
        "summary": summary,
        "completed_at": now,
        "answers": 1,
        "expires_at": now + keep_for,
    }
    event = _completed(request, service, summary, now, request_id)
    # A duplicate means another worker of this service finished the same request at the
    # same moment: its record carries the answer.
    with contextlib.suppress(DuplicateKeyError):
        erasures.insert(new_document_with_events(record, event, now=now))
    log.info("erasure %s (%s) done by %s: %s", request.request_id, request.reason, service,
             summary)
    return summary


def _completed(request: ErasureRequested, service: str, summary: dict[str, int],
               now: datetime, request_id: str | None) -> dict:
    return new_event(
        "ErasureCompleted",
        {"request_id": request.request_id, "user_id": request.user_id, "service": service,
         "summary": dict(summary)},
        producer=service,
        now=now,
        request_id=request_id,
    )


def was_erased(erasures: Collection, subject: str) -> bool:
    """Whether this service erased the person with this pseudonym (within the record's life)."""
    return erasures.find_one({"subject": subject}) is not None


class ErasureAnswers:
    """What a worker holds: `answer(request, erase)` and `erased(user_id)` for its service."""

    def __init__(self, erasures: Collection, service: str, subject_key: bytes, now: datetime,
                 keep_for: timedelta, request_id: str | None) -> None:
        self.erasures = erasures
        self.service = service
        self.subject_key = subject_key
        self.now = now
        self.keep_for = keep_for
        self.request_id = request_id

    def answer(self, request: ErasureRequested,
               erase: Callable[[], dict[str, int]]) -> dict[str, int]:
        return answer_erasure(self.erasures, request, service=self.service, erase=erase,
                              subject=subject_of(self.subject_key, request.user_id),
                              now=self.now, keep_for=self.keep_for, request_id=self.request_id)

    def erased(self, user_id: str | None, event_type: str = "event") -> bool:
        """True (and logged) if the user was erased here: their late event must change nothing."""
        if user_id is None or not was_erased(self.erasures,
                                             subject_of(self.subject_key, user_id)):
            return False
        log.info("%s about an erased user ignored by %s", event_type, self.service)
        return True


class Erasures(OutboxRelay):
    """A service's erasure records, and the relay that publishes their answers."""

    def __init__(self) -> None:
        super().__init__(ERASURES)

    def setup(self) -> None:
        super().setup()
        settings = settings_of(self.container)
        self.keep_for = timedelta(days=settings.retention_closed_days)
        self.subject_key = settings.derived_key(SUBJECT_KEY_PURPOSE)

    def get_dependency(self, worker_ctx) -> ErasureAnswers:
        erasures = database_of(self.container).collection(ERASURES)
        return ErasureAnswers(erasures, self.container.service_name, self.subject_key,
                              self.clock.now(), self.keep_for, worker_ctx.data.get("request_id"))


def forget_throttle(throttle: Collection, scopes: Iterable[str], key: str) -> int:
    """Delete the rate-limit counters of `key` in each scope (every window). Returns how many.

    Counters are stored as `<scope>:<key>:<window start>`; a range on the `_id` finds all
    windows of one key (`;` is the character right after `:`).
    """
    removed = 0
    for scope in scopes:
        prefix = f"{scope}:{key}:"
        removed += throttle.delete_many({"_id": {"$gte": prefix, "$lt": f"{scope}:{key};"}})
    return removed
