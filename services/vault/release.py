"""The release: when a switch fires, its messages go to their recipients, exactly once.

Three steps, each a compare-and-set, so that any crash in between is recovered by a retry
and nothing is ever sent twice:

1. **Mark** (on `CheckInMissed`): the fired switch is recorded first (`releases`, one
   document per switch, which also holds the notice still owed to the scheduler); then
   each sealed message of the switch becomes `released` in
   one conditional update `{_id, switch_id, state: sealed, rev}` -> `released`, which also
   mints one read token per recipient (its SHA-256 for the lookup, the token itself sealed
   with the author's data key) and sets `dispatch_due_at`: the fire time, or later for a
   farewell letter (`release_delay_seconds`). A redelivered `CheckInMissed` finds nothing
   sealed and does nothing; a crash half-way leaves some messages released and the rest
   sealed, and the retry releases the rest.
2. **Dispatch** (`ReleaseDispatcher`, a loop in `dependencies.py`): a message whose
   `dispatch_due_at` has come is claimed with a lease (compare-and-set on that field),
   its recipients' addresses and tokens are opened, `MessageReleased` is published (a
   batch of messages at once, their publisher confirms awaited together), and each
   message the broker confirmed is marked `dispatched_at`. Its event id is derived
   from the message and the cycle, so a crash between the publish and the mark publishes
   the very same event again, which consumers recognise and skip.
3. **Tell the scheduler** (a timer, `notify_due`): once no message of the switch is
   sealed and every released one was handed over, `scheduler.mark_released` moves the
   switch `fired -> released` (every switch a look found complete, in one question).
   The notice is due in the switch's `releases` document until the scheduler confirmed
   it, so a crash, or a scheduler that is down, only delays it (retried with back-off);
   a switch without messages is complete at once. Each look first releases any sealed
   message that reached the switch after it fired (a write racing the firing), so none
   is left behind.

Why not the document's outbox: an outbox entry is the event in clear, addresses and read
tokens included, resting in the database until it is relayed. Here the event is built
from sealed fields at the moment it leaves, so nothing readable ever rests in the store.

The switch has been handed to delivery entirely once none of its messages is sealed
and every released one has `dispatched_at` (`release_status`).

Reading a released message (delivery's question, or a recipient's read link) opens it
only once it is released and its release time has come. Before that time, a valid read
link of a farewell letter learns when it opens (and nothing else); any other link is the
same 404 as one that never existed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any, Protocol

from services.vault.crypto import DecryptionFailed
from services.vault.keys import DataKeys, MissingDataKey, UnknownKek
from services.vault.records import RELEASED, StoredMessage, SwitchRelease
from services.vault.schemas import ReleasedContent
from services.vault.sealed_fields import Sealer
from services.vault.storage import NOTIFIED, REFUSED, RELEASING, VaultRepository
from shared.errors import Conflict, Forbidden, NotFound, Unavailable
from shared.events import new_event
from shared.events.schemas import CheckInMissed
from shared.throttle import Limit, hashed_key

log = logging.getLogger(__name__)

READ_TOKEN_BYTES = 32
RELEASE_BATCH = 100
DISPATCH_BATCH = 50
DISPATCH_LEASE = timedelta(seconds=30)
RETRY_AFTER_PUBLISH_FAILURE = timedelta(seconds=5)
# A message that cannot be opened (a KEK missing from the configuration, say) is a
# problem for an operator; looking again every few minutes keeps the log readable.
RETRY_AFTER_UNREADABLE = timedelta(minutes=5)

# Telling the scheduler: a claim, the first look after a change, and the back-off while
# the scheduler cannot be reached (1 s, 2 s, 4 s... at most 5 minutes).
NOTIFY_BATCH = 50
NOTIFY_LEASE = timedelta(seconds=30)
NOTIFY_SOON = timedelta(seconds=2)
NOTIFY_RETRY_BASE_SECONDS = 1.0
NOTIFY_RETRY_CAP_SECONDS = 300.0

# A read link is the recipient's to keep and reopen; this only stops guessing and scraping.
READS_PER_CLIENT = Limit("read-released-client", count=60, window_seconds=10 * 60)

# Event ids of MessageReleased are uuid5 in this namespace, over message id and cycle.
RELEASE_EVENT_NAMESPACE = uuid.UUID("6f0e5c1e-8d3f-4b8e-9a55-3c1c2b7a9d10")


class Publisher(Protocol):
    def publish_all(self, envelopes: list[dict[str, Any]]) -> list[bool]:
        """Publish in order; for each, whether the broker confirmed it."""


class SwitchReleases(Protocol):
    def mark_released(self, releases: list[tuple[str, int]]) -> dict[str, str | None]:
        """Mark each (switch id, cycle) released: by switch id, None if it was, or why it
        was refused; Unavailable if the scheduler cannot be asked now."""


def notify_retry_delay(attempts: int) -> timedelta:
    """How long to wait after the scheduler could not be told `attempts` times."""
    seconds = NOTIFY_RETRY_BASE_SECONDS * 2 ** max(attempts - 1, 0)
    return timedelta(seconds=min(seconds, NOTIFY_RETRY_CAP_SECONDS))


def token_hash(token: str) -> str:
    """Read tokens are looked up, and kept, only as their SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()


def release_event_id(message_id: str, cycle: int) -> str:
    """The one event id a message's release ever has."""
    return str(uuid.uuid5(RELEASE_EVENT_NAMESPACE, f"MessageReleased|{message_id}|{cycle}"))


def _token_field(recipient_id: str) -> str:
    return f"recipient.{recipient_id}.read_token"


class Release:
    """The release of messages, and reading them once released."""

    def __init__(self, repo: VaultRepository, keys: DataKeys, now: datetime) -> None:
        self.repo = repo
        self.keys = keys
        self.now = now

    # 1. Marking a fired switch's messages released -------------------------------------

    def release_switch(self, missed: CheckInMissed) -> int:
        """Record the fired switch, then mark every sealed message of it released.

        Returns how many messages were released now. The record goes first: a message
        written at the same moment either is seen here, or sees the record (`Messages`).
        """
        with self.repo.grouped_writes():
            self.repo.record_release({
                "_id": missed.switch_id, "user_id": missed.user_id, "cycle": missed.cycle,
                "deadline": missed.deadline, "fired_at": missed.fired_at,
                "heard_at": self.now, "state": RELEASING, "notify_due_at": self.now,
                "attempts": 0,
            })
            return self._release_sealed(missed)

    def _release_sealed(self, missed: CheckInMissed) -> int:
        """Mark released every message of the fired switch that is still sealed.

        A short batch all of whose messages were marked was the whole of them: a message
        written after that look sees the switch's release record and takes itself back
        (`Messages.create`), and any other late one is caught by the notifier's look.
        """
        released = 0
        while True:
            sealed = self.repo.sealed_in_switch(missed.user_id, missed.switch_id, RELEASE_BATCH)
            marked = sum(self._release_one(message, missed) for message in sealed)
            released += marked
            if len(sealed) < RELEASE_BATCH and marked == len(sealed):
                return released

    def _release_one(self, message: StoredMessage, missed: CheckInMissed) -> int:
        sealer = Sealer.of(self.keys.get(message.user_id), message)
        tokens = {stored.id: secrets.token_urlsafe(READ_TOKEN_BYTES)
                  for stored in message.recipients}
        hashes = {recipient_id: token_hash(token) for recipient_id, token in tokens.items()}
        # The lookups go first: a crash before the mark leaves lookups that match no
        # released message (they never open anything) and the message still sealed.
        self.repo.add_read_tokens([
            {"_id": hashes[recipient_id], "message_id": message.id, "user_id": message.user_id,
             "recipient_id": recipient_id, "created_at": self.now}
            for recipient_id in tokens
        ])
        release_at = max(
            self.now, missed.fired_at + timedelta(seconds=message.release_delay_seconds)
        )
        marked = self.repo.mark_released(message, {
            "released_at": self.now,
            "fired_at": missed.fired_at,
            "release_cycle": missed.cycle,
            "release_at": release_at,
            "dispatch_due_at": release_at,
            "read_tokens": {
                recipient_id: {"hash": hashes[recipient_id],
                               "token": sealer.seal(_token_field(recipient_id), token)}
                for recipient_id, token in tokens.items()
            },
        })
        if marked is None:
            # Edited, deleted or released by someone else meanwhile: the caller looks again.
            self.repo.drop_read_tokens(list(hashes.values()))
            return 0
        self.repo.drop_stale_read_tokens(message.id, keep=list(hashes.values()))
        log.info("released message %s of switch %s (cycle %s), due %s",
                 message.id, message.switch_id, missed.cycle, release_at.isoformat())
        return 1

    # 2. Handing released messages to delivery -------------------------------------------

    def dispatch_due(self, publisher: Publisher, batch: int = DISPATCH_BATCH) -> int:
        """Publish MessageReleased for each message whose release time has come, the whole
        batch at once (its confirms awaited together)."""
        ready: list[tuple[StoredMessage, dict[str, Any]]] = []
        with self.repo.grouped_writes():
            for message in self.repo.due_dispatches(self.now, batch):
                claimed = self.repo.claim_dispatch(message, self.now + DISPATCH_LEASE)
                if claimed is None:
                    continue  # another dispatcher has it
                envelope = self._envelope(claimed)
                if envelope is not None:
                    ready.append((claimed, envelope))
        confirmed = publisher.publish_all([envelope for _, envelope in ready])
        with self.repo.grouped_writes():
            return sum(self._dispatched(message, ok)
                       for (message, _), ok in zip(ready, confirmed, strict=True))

    def _envelope(self, message: StoredMessage) -> dict[str, Any] | None:
        """The message's MessageReleased, or None (looked at again later) if it cannot be
        opened now."""
        try:
            return self.released_event(message)
        except (MissingDataKey, UnknownKek, DecryptionFailed) as exc:
            log.error("message %s cannot be opened for its release (%s); looking again in %s",
                      message.id, exc, RETRY_AFTER_UNREADABLE)
            self.repo.postpone_dispatch(message, self.now + RETRY_AFTER_UNREADABLE)
            return None

    def _dispatched(self, message: StoredMessage, confirmed: bool) -> int:
        if not confirmed:
            log.error("the broker did not confirm the release of message %s; retrying",
                      message.id)
            self.repo.postpone_dispatch(message, self.now + RETRY_AFTER_PUBLISH_FAILURE)
            return 0
        self.repo.finish_dispatch(message, self.now)
        self.repo.poke_notification(message.switch_id, self.now)
        log.info("handed message %s to delivery (%d recipients)",
                 message.id, len(message.recipients))
        return 1

    def released_event(self, message: StoredMessage) -> dict[str, Any]:
        """The MessageReleased envelope of a released message: ids, names, addresses, tokens."""
        sealer = Sealer.of(self.keys.get(message.user_id), message)
        recipients = []
        for stored in message.recipients:
            recipient = sealer.open_recipient(stored)
            token = sealer.open(_token_field(recipient.id),
                                message.read_tokens[recipient.id].sealed)
            recipients.append({"recipient_id": recipient.id, "name": recipient.name,
                               "email": recipient.email, "read_token": token})
        envelope = new_event(
            "MessageReleased",
            {
                "user_id": message.user_id,
                "switch_id": message.switch_id,
                "message_id": message.id,
                "sender_name": sealer.open_sender(message),
                "recipients": recipients,
                "inline": message.inline,
            },
            producer="vault",
            now=self.now,
        )
        assert message.release_cycle is not None, "only a released message is dispatched"
        return {**envelope, "event_id": release_event_id(message.id, message.release_cycle)}

    def release_status(self, switch_id: str) -> dict[str, Any]:
        """How far the switch's release has got: `complete` once all was handed to
        delivery; `scheduler` says whether the switch was marked released there yet."""
        counts = self.repo.switch_counts(switch_id)
        complete = _handed_over(counts)
        release = self.repo.release_of(switch_id)
        return {"switch_id": switch_id, **counts, "complete": complete,
                "scheduler": release.state if release else None}

    def _complete(self, switch_id: str) -> bool:
        return _handed_over(self.repo.switch_counts(switch_id))

    # 3. Telling the scheduler the switch is released -------------------------------------

    def notify_due(self, scheduler: SwitchReleases, batch: int = NOTIFY_BATCH) -> int:
        """Tell the scheduler about every switch whose release is complete, all of them in
        one question. Returns how many it marked released."""
        complete = []
        with self.repo.grouped_writes():
            for release in self.repo.due_notifications(self.now, batch):
                claimed = self.repo.claim_notification(release, self.now + NOTIFY_LEASE)
                if claimed is None:
                    continue  # another vault process has it
                if self._handed_over(claimed):
                    complete.append(claimed)
        if not complete:
            return 0
        try:
            refusals = scheduler.mark_released([(r.switch_id, r.cycle) for r in complete])
        except Unavailable as exc:
            with self.repo.grouped_writes():
                for release in complete:
                    self._tell_later(release, exc)
            return 0
        with self.repo.grouped_writes():
            return sum(self._told(release, refusals.get(release.switch_id))
                       for release in complete)

    def _handed_over(self, release: SwitchRelease) -> bool:
        """Whether every message of the claimed release left; if not, look again later."""
        switch_id = release.switch_id
        # The release record is there (this look holds its claim): only the messages.
        if self._release_sealed(release.missed()):
            log.warning("released message(s) that reached switch %s after it fired", switch_id)
        if self._complete(switch_id):
            return True
        self.repo.postpone_notification(release, self._next_look(switch_id))
        return False

    def _tell_later(self, release: SwitchRelease, exc: Unavailable) -> None:
        delay = notify_retry_delay(release.attempts + 1)
        log.warning("switch %s is complete but the scheduler cannot be told (%s); "
                    "trying again in %s", release.switch_id, exc, delay)
        self.repo.postpone_notification(release, self.now + delay, error=str(exc))

    def _told(self, release: SwitchRelease, refusal: str | None) -> int:
        switch_id = release.switch_id
        if refusal is not None:
            log.error("the scheduler refused to mark switch %s released (cycle %s): %s; "
                      "its messages were handed to delivery all the same", switch_id,
                      release.cycle, refusal)
            self.repo.finish_notification(switch_id, REFUSED, self.now, reason=refusal)
            return 0
        self.repo.finish_notification(switch_id, NOTIFIED, self.now)
        log.info("switch %s released: every message was handed to delivery", switch_id)
        return 1

    def _next_look(self, switch_id: str) -> datetime:
        """Soon, or when the switch's next farewell letter is due, whichever is later."""
        soon = self.now + NOTIFY_SOON
        due = self.repo.next_dispatch_in_switch(switch_id)
        return max(soon, due) if due else soon

    def release_late(self, switch_id: str) -> int:
        """Release what reached an already fired switch (a write racing the firing)."""
        release = self.repo.reopen_release(switch_id, self.now)
        return self.release_switch(release.missed()) if release else 0

    # Reading released messages ---------------------------------------------------------

    def released_content(self, message_id: str, recipient_id: str) -> ReleasedContent:
        """A released message as `recipient_id` reads it (delivery's question)."""
        message = self.repo.message(message_id)
        if message is None or message.recipient(recipient_id) is None:
            raise NotFound(f"no message {message_id} for recipient {recipient_id}",
                           code="message_not_found")
        if not message.readable_at(self.now):
            raise Forbidden(f"message {message_id} has not been released",
                            code="message_not_released")
        return self._content(message, recipient_id)

    def read_released(self, token: str, client_ip: str | None) -> ReleasedContent:
        """The released message a read link opens; the same 404 for anything else."""
        if client_ip:
            self.repo.throttle.consume(READS_PER_CLIENT, hashed_key(client_ip), self.now)
        lookup = self.repo.read_token(token_hash(token))
        message = self.repo.message(lookup["message_id"]) if lookup else None
        if lookup is None or message is None or message.state != RELEASED:
            raise _unknown_link()
        minted = message.read_tokens.get(lookup["recipient_id"])
        if minted is None or not hmac.compare_digest(minted.hash, lookup["_id"]):
            raise _unknown_link()  # a lookup left by a crashed release: never valid
        if not message.readable_at(self.now):
            # A farewell letter before its day: its own link may say when, nothing more.
            assert message.release_at is not None, "a released message has its release time"
            opens_at = message.release_at.isoformat().replace("+00:00", "Z")
            raise Conflict("this letter is not due yet", code="not_yet_released",
                           details={"opens_at": opens_at})
        return self._content(message, lookup["recipient_id"])

    def _content(self, message: StoredMessage, recipient_id: str) -> ReleasedContent:
        sealer = Sealer.of(self.keys.get(message.user_id), message)
        stored = message.recipient(recipient_id)
        assert stored is not None, "the caller found this recipient on the message"
        return ReleasedContent(
            message_id=message.id,
            recipient_id=recipient_id,
            recipient_name=sealer.open_recipient(stored).name,
            sender_name=sealer.open_sender(message),
            subject=sealer.open("subject", message.subject),
            body=sealer.open("body", message.body),
            inline=message.inline,
            released_at=message.release_at,
            written_at=message.updated_at,
        )


def _handed_over(counts: dict[str, int]) -> bool:
    """Whether none of a switch's messages is sealed and every released one left."""
    return counts["sealed"] == 0 and counts["waiting"] == 0


def _unknown_link() -> NotFound:
    return NotFound("this link does not open any message", code="unknown_read_link")
