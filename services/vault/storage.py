"""The vault's collections, their indexes, and the repository its domain code uses.

- `messages`: one document per message. Subject, body, sender name and address, and each
  recipient's name and address are ciphertexts (see `crypto.py`); ids, the switch,
  the state, flags and times are plain, because the release and the listing query them.
- `data_keys`: one wrapped data key per user (`_id` = user id), with its KEK id.
- `read_tokens`: the lookup of a released message's read links, by SHA-256 of the token.
- `releases`: one document per fired switch (`_id` = switch id): the CheckInMissed facts,
  and whether the scheduler has been told the switch is released (`notify_due_at` while
  it has not: the notifier's to-do list, which survives any crash).
- `entitlements`: the vault's copy of each user's plan (`shared.entitlements`, fed by
  billing's `PlanChanged`).
- `throttle`: rate-limit counters (reading released messages, per client; test releases).
- `test_releases`, `test_read_tokens`: test releases to their owner and the lookups of
  their 24-hour links (`test_release.py`), apart from everything the real release uses.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from services.vault.metrics import MESSAGES_RELEASED, RELEASES_COMPLETED
from services.vault.records import RELEASED, SEALED, StoredMessage, SwitchRelease
from shared.entitlements import ENTITLEMENTS, ENTITLEMENTS_INDEXES, EntitlementsCache
from shared.storage import Database, Index
from shared.throttle import THROTTLE_INDEXES, Throttle

MESSAGES = "messages"
DATA_KEYS = "data_keys"
READ_TOKENS = "read_tokens"
RELEASES = "releases"
THROTTLE = "throttle"
TEST_RELEASES = "test_releases"
TEST_READ_TOKENS = "test_read_tokens"


# States of a switch's release (the `releases` collection).
RELEASING = "releasing"  # messages being handed to delivery, or the scheduler not yet told
NOTIFIED = "released"  # the scheduler moved the switch to `released`
REFUSED = "refused"  # the scheduler says this switch did not fire: an operator looks

INDEXES: dict[str, list[Index]] = {
    MESSAGES: [
        Index.on("user_id", "created_at"),  # the author's list
        Index.on("switch_id", "state"),  # the release, and counting a switch's messages
        Index.on("dispatch_due_at"),  # the dispatcher's due releases
    ],
    DATA_KEYS: [Index.on("kek_id")],  # the rotation's progress
    READ_TOKENS: [Index.on("message_id"), Index.on("user_id")],
    RELEASES: [Index.on("notify_due_at"), Index.on("user_id"), Index.on("state")],
    **ENTITLEMENTS_INDEXES,
    THROTTLE: THROTTLE_INDEXES,
    TEST_RELEASES: [Index.on("user_id", "created_at")],
    # A test link's lookup goes once its link has expired.
    TEST_READ_TOKENS: [Index.on("user_id"), Index.on("expires_at", expire_after_seconds=0)],
}

# A user holds a few messages per switch; this only bounds a runaway answer.
LIST_LIMIT = 1000


class VaultRepository:
    """Messages, keys, read tokens and entitlements over the vault's own database."""

    def __init__(self, db: Database) -> None:
        self.messages = db.collection(MESSAGES)
        self.data_keys = db.collection(DATA_KEYS)
        self.read_tokens = db.collection(READ_TOKENS)
        self.releases = db.collection(RELEASES)
        self.entitlements = EntitlementsCache(db.collection(ENTITLEMENTS))
        self.throttle = Throttle(db.collection(THROTTLE))
        self.test_releases = db.collection(TEST_RELEASES)
        self.test_read_tokens = db.collection(TEST_READ_TOKENS)

    def grouped_writes(self) -> AbstractContextManager[None]:
        """The vault's writes of a block, durable together (`Collection.group_writes`)."""
        return self.messages.group_writes()

    # Messages of an author ----------------------------------------------------------

    def add_message(self, doc: dict[str, Any]) -> None:
        self.messages.insert(doc)

    def message(self, message_id: str) -> StoredMessage | None:
        return _message(self.messages.get(message_id))

    def message_of(self, user_id: str, message_id: str) -> StoredMessage | None:
        """The message if it belongs to `user_id`; another user's message is None, like none."""
        message = self.message(message_id)
        return message if message is not None and message.user_id == user_id else None

    def messages_of(self, user_id: str) -> list[StoredMessage]:
        return [StoredMessage.from_doc(doc) for doc in self.messages.find(
            {"user_id": user_id}, sort=[("created_at", 1)], limit=LIST_LIMIT)]

    def count_in_switch(self, switch_id: str) -> int:
        return self.messages.count({"switch_id": switch_id})

    def replace_sealed(self, message: StoredMessage,
                       changes: dict[str, Any]) -> StoredMessage | None:
        """Compare-and-set an edit: only a sealed message still at the revision that was read."""
        return _message(self.messages.update_one(
            {"_id": message.id, "user_id": message.user_id, "state": SEALED, "rev": message.rev},
            {"$set": changes, "$inc": {"rev": 1}},
        ))

    def delete_sealed(self, user_id: str, message_id: str) -> bool:
        deleted = self.messages.delete_one(
            {"_id": message_id, "user_id": user_id, "state": SEALED}
        )
        if deleted:
            # Lookups left by a release that crashed before it could mark the message.
            self.read_tokens.delete_many({"message_id": message_id})
        return deleted

    # The release --------------------------------------------------------------------

    def sealed_in_switch(self, user_id: str, switch_id: str,
                         limit: int) -> list[StoredMessage]:
        return [StoredMessage.from_doc(doc) for doc in self.messages.find(
            {"switch_id": switch_id, "state": SEALED, "user_id": user_id}, limit=limit)]

    def mark_released(self, message: StoredMessage,
                      release: dict[str, Any]) -> StoredMessage | None:
        """Compare-and-set sealed -> released, at the revision whose recipients got tokens."""
        released = _message(self.messages.update_one(
            {"_id": message.id, "user_id": message.user_id, "switch_id": message.switch_id,
             "state": SEALED, "rev": message.rev},
            {"$set": {"state": RELEASED, **release}},
        ))
        if released is not None:
            MESSAGES_RELEASED.inc()
        return released

    def add_read_tokens(self, docs: list[dict[str, Any]]) -> None:
        for doc in docs:
            self.read_tokens.insert(doc)

    def drop_read_tokens(self, token_hashes: list[str]) -> None:
        for token_hash in token_hashes:
            self.read_tokens.delete_one({"_id": token_hash})

    def drop_stale_read_tokens(self, message_id: str, keep: list[str]) -> None:
        """Lookups of earlier, interrupted attempts to release this message."""
        self.read_tokens.delete_many({"message_id": message_id, "_id": {"$nin": keep}})

    def read_token(self, token_hash: str) -> dict[str, Any] | None:
        return self.read_tokens.get(token_hash)

    def due_dispatches(self, now: datetime, limit: int) -> list[StoredMessage]:
        return [StoredMessage.from_doc(doc) for doc in self.messages.find(
            {"dispatch_due_at": {"$lte": now}}, sort=[("dispatch_due_at", 1)], limit=limit)]

    def claim_dispatch(self, message: StoredMessage,
                       lease_until: datetime) -> StoredMessage | None:
        """Compare-and-set on the due time: of several dispatchers, one gets the message."""
        return _message(self.messages.update_one(
            {"_id": message.id, "state": RELEASED, "dispatch_due_at": message.dispatch_due_at},
            {"$set": {"dispatch_due_at": lease_until}},
        ))

    def finish_dispatch(self, message: StoredMessage, now: datetime) -> None:
        self.messages.update_one(
            {"_id": message.id, "dispatch_due_at": message.dispatch_due_at},
            {"$unset": {"dispatch_due_at": ""}, "$set": {"dispatched_at": now}},
        )

    def postpone_dispatch(self, message: StoredMessage, until: datetime) -> None:
        self.messages.update_one(
            {"_id": message.id, "dispatch_due_at": message.dispatch_due_at},
            {"$set": {"dispatch_due_at": until}},
        )

    def next_dispatch_in_switch(self, switch_id: str) -> datetime | None:
        """When the switch's next released message is due to be handed over (if any)."""
        doc = self.messages.find_one(
            {"switch_id": switch_id, "state": RELEASED, "dispatch_due_at": {"$exists": True}},
            sort=[("dispatch_due_at", 1)],
        )
        return doc["dispatch_due_at"] if doc else None

    def switch_counts(self, switch_id: str) -> dict[str, int]:
        """The switch's messages still sealed, released, and released but not handed over.

        One query over the switch's messages (a plan holds them to a few dozen), counted
        here, rather than one count per figure.
        """
        counts = {"sealed": 0, "released": 0, "waiting": 0}
        for doc in self.messages.find({"switch_id": switch_id}, limit=LIST_LIMIT):
            if doc["state"] == SEALED:
                counts["sealed"] += 1
            elif doc["state"] == RELEASED:
                counts["released"] += 1
                counts["waiting"] += "dispatched_at" not in doc
        return counts

    # Releases of fired switches, and telling the scheduler ------------------------------

    def record_release(self, release: dict[str, Any]) -> None:
        """Remember a fired switch once (a redelivered CheckInMissed changes nothing)."""
        self.releases.update_one({"_id": release["_id"]}, {"$setOnInsert": release},
                                 upsert=True)

    def release_of(self, switch_id: str) -> SwitchRelease | None:
        return _release(self.releases.get(switch_id))

    def due_notifications(self, now: datetime, limit: int) -> list[SwitchRelease]:
        return [SwitchRelease.from_doc(doc) for doc in self.releases.find(
            {"notify_due_at": {"$lte": now}}, sort=[("notify_due_at", 1)], limit=limit)]

    def claim_notification(self, release: SwitchRelease,
                           lease_until: datetime) -> SwitchRelease | None:
        """Compare-and-set on the due time: of several vault processes, one tells."""
        return _release(self.releases.update_one(
            {"_id": release.switch_id, "state": RELEASING,
             "notify_due_at": release.notify_due_at},
            {"$set": {"notify_due_at": lease_until}},
        ))

    def postpone_notification(self, release: SwitchRelease, until: datetime,
                              error: str | None = None) -> None:
        """Look again at `until` (unless a poke moved the time meanwhile)."""
        changes: dict[str, Any] = {"$set": {"notify_due_at": until}}
        if error is not None:
            changes["$set"]["last_error"] = error
            changes["$inc"] = {"attempts": 1}
        self.releases.update_one(
            {"_id": release.switch_id, "notify_due_at": release.notify_due_at}, changes)

    def poke_notification(self, switch_id: str, now: datetime) -> None:
        """Something changed in the switch's release: look at it now."""
        self.releases.update_one({"_id": switch_id, "state": RELEASING},
                                 {"$set": {"notify_due_at": now}})

    def finish_notification(self, switch_id: str, state: str, now: datetime,
                            reason: str | None = None) -> None:
        """The scheduler answered for good: released, or refused (with the reason)."""
        fields: dict[str, Any] = {"state": state, "notified_at": now}
        if reason is not None:
            fields["last_error"] = reason
        finished = self.releases.update_one({"_id": switch_id, "state": RELEASING},
                                            {"$set": fields, "$unset": {"notify_due_at": ""}})
        if finished is not None:
            RELEASES_COMPLETED.labels(state).inc()

    def reopen_release(self, switch_id: str, now: datetime) -> SwitchRelease | None:
        """A message reached a switch whose release was finished: release and tell again."""
        return _release(self.releases.update_one(
            {"_id": switch_id}, {"$set": {"state": RELEASING, "notify_due_at": now}}))

    def releases_in(self, state: str, limit: int) -> list[SwitchRelease]:
        return [SwitchRelease.from_doc(doc) for doc in self.releases.find(
            {"state": state}, sort=[("fired_at", 1)], limit=limit)]

    # Erasure -------------------------------------------------------------------------

    def delete_everything_of(self, user_id: str) -> dict[str, int]:
        """Every document of the user except the data key (which goes first, elsewhere)."""
        return {
            "messages": self.messages.delete_many({"user_id": user_id}),
            "read_tokens": self.read_tokens.delete_many({"user_id": user_id}),
            "releases": self.releases.delete_many({"user_id": user_id}),
            "entitlements": int(self.entitlements.collection.delete_one({"_id": user_id})),
            "test_releases": self.test_releases.delete_many({"user_id": user_id}),
            "test_read_tokens": self.test_read_tokens.delete_many({"user_id": user_id}),
        }


def _message(doc: dict[str, Any] | None) -> StoredMessage | None:
    return None if doc is None else StoredMessage.from_doc(doc)


def _release(doc: dict[str, Any] | None) -> SwitchRelease | None:
    return None if doc is None else SwitchRelease.from_doc(doc)
