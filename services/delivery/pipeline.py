"""The sending loop's work: claim due mail one record at a time, send it, record the outcome.

A batch of due mail is shared out among a few *lanes* (`JICM_DELIVERY_LANES`), each its
own SMTP conversation, reused from one mail to the next: the server's round trips of one
mail overlap with those of the others. A lane takes the next mail of the batch only when it
is done with its current one, so a slow or stalled conversation holds up its own mail
and nobody else's (the batch ends when the last lane is done). Each mail is still claimed,
sent and recorded on its own, exactly as below: a refusal fails only its own mail.

Each attempt is bracketed by two writes. Before the SMTP conversation, a compare-and-set
claims the record (`state: sending`, a lease id, and `next_attempt_at` pushed to the end
of the lease), so of several delivery processes exactly one sends it. After the
conversation, a second write, guarded by that lease id, records the outcome. A process
that dies between the two leaves the record `sending`; when the lease ends, the record is
due again and the next sender sends it again with the same Message-ID (logged as an
interrupted attempt). Nothing is held in memory between attempts: the retry schedule is
the records' `next_attempt_at`, so it survives any restart.

Outcomes: accepted -> `sent`; a temporary failure -> `retrying` after an exponential
back-off with jitter, until the attempts or the age run out; a permanent failure, or
giving up -> `failed` (with why: `bounced`, `refused`, `gave_up`, `unbuildable`),
announced as `DeliveryFailed` through the record's outbox. A reminder that is sent or
bounced is also announced as `ReminderSettled` in the same write (`reminders.py`).

One attempt (building the mail and the SMTP conversation) must end while the claim still
holds, or a second sender could take the mail over and send it too: the conversation
gets a deadline a margin before the claim expires, and is cut off there.

Values that must never be stored (the text of an inline release) are fetched by `fetch`
while the mail is built; not getting them now is a temporary failure like any other.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import eventlet

from services.delivery import reminders
from services.delivery.context_seal import ContextSeal, Unreadable
from services.delivery.deliveries import marketing_allowed
from services.delivery.kinds import kind_named
from services.delivery.message import OutgoingMail, build_message
from services.delivery.records import MailRecord
from services.delivery.render import render
from services.delivery.smtp import ACCEPTED, PERMANENT, Outcome, SmtpSession
from services.delivery.storage import (
    BOUNCED,
    FAILED,
    GAVE_UP,
    REFUSED,
    RETRYING,
    SENDING,
    SENT,
    SUPPRESSED,
    UNBUILDABLE,
    DeliveryRepository,
)
from services.delivery.unsubscribe import make_token
from shared.config import Settings
from shared.errors import InvalidInput
from shared.events import new_event
from shared.events.outbox import carries_events, with_event

log = logging.getLogger(__name__)

# Mail read per look: large enough that lanes seldom wait for the slowest at its end.
BATCH = 200
# Room left in a claim after the attempt's deadline, to record its outcome.
RECORDING_MARGIN_SECONDS = 10.0
_random = random.SystemRandom()


def attempt_budget(lease_seconds: float) -> float:
    """Seconds one attempt may take so that its claim still holds when the outcome is
    written: the lease less a margin (a fifth of it, at most 10 s)."""
    return lease_seconds - min(RECORDING_MARGIN_SECONDS, lease_seconds / 5)


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again after a temporary failure, and when to stop trying."""

    base: float
    cap: float
    max_attempts: int
    max_age: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(settings.delivery_retry_base, settings.delivery_retry_cap,
                   settings.delivery_max_attempts, timedelta(seconds=settings.delivery_max_age))

    def delay(self, attempts: int) -> float:
        """Seconds before the next attempt after `attempts` tries: base, 2x, 4x... capped,
        each drawn between half and all of that ("equal jitter"), so mail that failed
        together does not come back together."""
        ceiling = min(self.cap, self.base * 2 ** max(attempts - 1, 0))
        return _random.uniform(ceiling / 2, ceiling)

    def gives_up(self, attempts: int, queued_at: datetime, now: datetime) -> bool:
        return attempts >= self.max_attempts or now - queued_at >= self.max_age


@dataclass(frozen=True)
class Suppressed:
    """Marketing mail that must not go (no consent, or the address unsubscribed)."""


class ValuesUnavailable(Exception):
    """Values to fetch for the mail cannot be had right now: try the mail again later."""


class ValuesGone(Exception):
    """Values to fetch for the mail will never be had: the mail fails for good."""


# (kind, the record's context) -> the variant's fetched values.
Fetch = Callable[[str, Mapping[str, str]], dict[str, str]]


def _nothing_to_fetch(kind: str, context: Mapping[str, str]) -> dict[str, str]:
    raise ValuesGone(f"{kind} mail needs values that this sender cannot fetch")


class Pipeline:
    """Sends due mail. One instance per batch (a worker of the sending loop)."""

    def __init__(
        self,
        repo: DeliveryRepository,
        settings: Settings,
        seal: ContextSeal,
        clock: Any,
        session: Callable[[], SmtpSession],
        fetch: Fetch = _nothing_to_fetch,
        lanes: int | None = None,
        relay: Callable[[], None] = lambda: None,
    ) -> None:
        self.repo = repo
        self.settings = settings
        self.seal = seal
        self.clock = clock
        self.session = session
        self.fetch = fetch
        # Each lane costs the server one connection; a handful hides the round trips of
        # one conversation behind the others' work, within what relays allow a client.
        self.lanes = lanes or settings.delivery_lanes
        # Wakes the outbox relay: an outcome's event (a reminder settled, a delivery
        # failed) leaves as soon as it is written, not when the whole batch is done.
        self.relay = relay
        self.policy = RetryPolicy.from_settings(settings)
        self.lease = timedelta(seconds=settings.delivery_lease)
        self.unsubscribe_key = settings.derived_key("delivery/unsubscribe")

    def send_due(self, keep_going: Callable[[], bool] = lambda: True) -> bool:
        """Attempt every due record of one batch; True if more may be due right now.

        The batch is shared among the lanes (green threads, each with its own SMTP
        session); `keep_going()` is asked before each mail, so once it says no every lane
        ends after its current mail.
        """
        due = self.repo.due(self.clock.now(), BATCH)
        if not due:
            return False
        waiting = deque(MailRecord.from_doc(doc) for doc in due)
        stopped: list[bool] = []

        def lane() -> None:
            with self.session() as smtp:
                while waiting:
                    if not keep_going():
                        stopped.append(True)
                        return
                    self.attempt(waiting.popleft(), smtp)

        pool = eventlet.GreenPool(self.lanes)
        lanes = [pool.spawn(lane) for _ in range(min(self.lanes, len(due)))]
        pool.waitall()
        for finished in lanes:
            finished.wait()  # a lane's error (the store failing, say) fails the batch
        return not stopped and len(due) == BATCH

    def attempt(self, record: MailRecord, smtp: SmtpSession) -> None:
        """Claim one record, send it, record the outcome (nothing if another sender claimed it)."""
        now = self.clock.now()
        lease = uuid.uuid4().hex
        deadline = time.monotonic() + attempt_budget(self.lease.total_seconds())
        doc = self.repo.claim(record.id, record.next_attempt_at, now=now, lease=lease,
                              lease_until=now + self.lease)
        if doc is None:
            return  # another sender took it, or it changed: the next batch looks again
        claimed = MailRecord.from_doc(doc)
        if record.state == SENDING:
            log.warning("delivery %s (%s) was interrupted mid-attempt; sending it again with "
                        "the same Message-ID", record.id, record.kind)
            if claimed.attempts > self.policy.max_attempts:
                # Every attempt so far died before its outcome was recorded: stop here.
                self._fail(claimed, lease, f"gave up after {claimed.attempts - 1} "
                                           "interrupted attempts", GAVE_UP)
                return
        try:
            prepared = self._prepare(claimed)
        except (Unreadable, InvalidInput, ValuesGone) as exc:
            self._fail(claimed, lease, f"cannot build the mail: {exc}", UNBUILDABLE)
            return
        except ValuesUnavailable as exc:
            self._settle(claimed, lease, Outcome.temporary(f"cannot build the mail yet: {exc}"))
            return
        except Exception as exc:
            # A bug (a template, a library): retry, so a fixed deployment still sends it.
            log.exception("delivery %s (%s): building the mail failed", record.id, record.kind)
            self._settle(claimed, lease, Outcome.temporary(f"cannot build the mail: {exc!r}"))
            return
        if isinstance(prepared, Suppressed):
            self._suppress(claimed, lease)
            return
        outcome = smtp.send(prepared, self.settings.mail_from_address, claimed.recipient,
                            deadline=deadline)
        self._settle(claimed, lease, outcome)

    # Building the message -------------------------------------------------------------

    def _prepare(self, record: MailRecord) -> OutgoingMail | Suppressed:
        kind = kind_named(record.kind)
        unsubscribe_link = None
        if kind.marketing:
            if not marketing_allowed(self.repo, record):
                return Suppressed()
            token = make_token(self.unsubscribe_key, record.recipient, record.user_id)
            unsubscribe_link = f"{self.settings.public_url}/u/{token}"
        context = self.seal.open(record.id, record.context_sealed)
        fetched = self.fetch(kind.name, context) if kind.variant(context).fetched else None
        rendered = render(kind, context, public_url=self.settings.public_url,
                          to_name=record.to_name, unsubscribe_link=unsubscribe_link,
                          fetched=fetched)
        return build_message(
            record_id=record.id,
            mail_from=self.settings.mail_from,
            mail_from_address=self.settings.mail_from_address,
            to=record.recipient,
            to_name=record.to_name,
            rendered=rendered,
            created_at=record.created_at,
            unsubscribe_link=unsubscribe_link,
        )

    # Recording the outcome --------------------------------------------------------------

    def _settle(self, record: MailRecord, lease: str, outcome: Outcome) -> None:
        if outcome.result == ACCEPTED:
            self._sent(record, lease)
        elif outcome.result == PERMANENT:
            self._fail(record, lease, outcome.detail, BOUNCED if outcome.bounced else REFUSED)
        elif self.policy.gives_up(record.attempts, record.queued_at, self.clock.now()):
            self._fail(record, lease, f"gave up after {record.attempts} attempts; "
                                      f"last: {outcome.detail}", GAVE_UP)
        else:
            self._retry(record, lease, outcome.detail)

    def _sent(self, record: MailRecord, lease: str) -> None:
        now = self.clock.now()
        kind = kind_named(record.kind)
        forget = {"recipient": "", "to_name": ""} if kind.forget_recipient else {}
        update = {
            "$set": {"state": SENT, "sent_at": now},
            # The sealed values (links, tokens) are of no use once the mail has left.
            "$unset": {"next_attempt_at": "", "lease": "", "context_sealed": "", **forget},
        }
        if kind.holds_release:
            update = with_event(update, reminders.settled_event(record, "sent", now), now=now)
        self._record(record, lease, update)
        log.info("delivery %s (%s %s) sent after %d attempt(s)", record.id, record.kind,
                 record.reference, record.attempts)

    def _retry(self, record: MailRecord, lease: str, detail: str) -> None:
        delay = self.policy.delay(record.attempts)
        done = self.repo.settle(record.id, lease, {
            "$set": {"state": RETRYING, "last_error": detail,
                     "next_attempt_at": self.clock.now() + timedelta(seconds=delay)},
            "$unset": {"lease": ""},
        })
        self._check_settled(done, record)
        log.warning("delivery %s (%s) failed temporarily (attempt %d), retrying in %.0f s: %s",
                    record.id, record.kind, record.attempts, delay, detail)

    def _fail(self, record: MailRecord, lease: str, reason: str, failure: str) -> None:
        now = self.clock.now()
        event = new_event(
            "DeliveryFailed",
            {"delivery_id": record.id, "kind": record.kind, "reference": record.reference,
             "recipient": record.recipient, "reason": reason, "attempts": record.attempts},
            producer="delivery",
            now=now,
        )
        update = with_event({
            "$set": {"state": FAILED, "failed_at": now, "failure": failure, "last_error": reason},
            "$unset": {"next_attempt_at": "", "lease": ""},
        }, event, now=now)
        if failure == BOUNCED and kind_named(record.kind).holds_release:
            update = with_event(update, reminders.settled_event(record, "bounced", now), now=now)
        self._record(record, lease, update)
        log.error("delivery %s (%s %s) failed for good (%s): %s", record.id, record.kind,
                  record.reference, failure, reason)

    def _suppress(self, record: MailRecord, lease: str) -> None:
        done = self.repo.settle(record.id, lease, {
            "$set": {"state": SUPPRESSED, "suppressed_at": self.clock.now()},
            "$unset": {"next_attempt_at": "", "lease": "", "context_sealed": ""},
        })
        self._check_settled(done, record)
        log.info("delivery %s (%s) not sent: no marketing consent for this address",
                 record.id, record.kind)

    def _record(self, record: MailRecord, lease: str, update: dict[str, Any]) -> None:
        """Write an outcome that may carry events, and have them relayed at once."""
        done = self.repo.settle(record.id, lease, update)
        self._check_settled(done, record)
        if done is not None and carries_events(update):
            self.relay()

    def _check_settled(self, done: dict[str, Any] | None, record: MailRecord) -> None:
        if done is None:
            # Our lease ran out during the conversation and another sender took over: it
            # records its own outcome. Only an SMTP server slower than the lease does this.
            log.warning("delivery %s: the claim expired before the outcome was recorded "
                        "(SMTP slower than JICM_DELIVERY_LEASE?)", record.id)
