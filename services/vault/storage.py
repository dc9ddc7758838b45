"""The vault's collections, their indexes, and the repository its domain code uses.

- `messages`: one document per message. Subject, body, sender name and address, and each
  recipient's name and address are ciphertexts (see `crypto.py`); ids, the switch,
  the state, flags and times are plain, because the release and the listing query them.
- `data_keys`: one wrapped data key per user (`_id` = user id), with its KEK id.
- `read_tokens`: the lookup of a released message's read links, by SHA-256 of the token.
- `entitlements`: the newest plan limits billing announced per user (`PlanChanged`).
- `throttle`: rate-limit counters (reading released messages, per client).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.storage import Database, Index
from shared.throttle import THROTTLE_INDEXES, Throttle

MESSAGES = "messages"
DATA_KEYS = "data_keys"
READ_TOKENS = "read_tokens"
ENTITLEMENTS = "entitlements"
THROTTLE = "throttle"

SEALED = "sealed"
RELEASED = "released"

INDEXES: dict[str, list[Index]] = {
    MESSAGES: [
        Index.on("user_id", "created_at"),  # the author's list
        Index.on("switch_id", "state"),  # the release, and counting a switch's messages
        Index.on("dispatch_due_at"),  # the dispatcher's due releases
    ],
    DATA_KEYS: [Index.on("kek_id")],  # the rotation's progress
    READ_TOKENS: [Index.on("message_id"), Index.on("user_id")],
    ENTITLEMENTS: [],
    THROTTLE: THROTTLE_INDEXES,
}

# A user holds a few messages per switch; this only bounds a runaway answer.
LIST_LIMIT = 1000


class VaultRepository:
    """Messages, keys, read tokens and entitlements over the vault's own database."""

    def __init__(self, db: Database) -> None:
        self.messages = db.collection(MESSAGES)
        self.data_keys = db.collection(DATA_KEYS)
        self.read_tokens = db.collection(READ_TOKENS)
        self.entitlements = db.collection(ENTITLEMENTS)
        self.throttle = Throttle(db.collection(THROTTLE))

    # Messages of an author ----------------------------------------------------------

    def add_message(self, doc: dict[str, Any]) -> None:
        self.messages.insert(doc)

    def message(self, message_id: str) -> dict[str, Any] | None:
        return self.messages.get(message_id)

    def message_of(self, user_id: str, message_id: str) -> dict[str, Any] | None:
        """The message if it belongs to `user_id`; another user's message is None, like none."""
        doc = self.messages.get(message_id)
        return doc if doc is not None and doc["user_id"] == user_id else None

    def messages_of(self, user_id: str) -> list[dict[str, Any]]:
        return self.messages.find({"user_id": user_id}, sort=[("created_at", 1)],
                                  limit=LIST_LIMIT)

    def count_in_switch(self, switch_id: str) -> int:
        return self.messages.count({"switch_id": switch_id})

    def replace_sealed(self, doc: dict[str, Any], changes: dict[str, Any]) -> dict | None:
        """Compare-and-set an edit: only a sealed message still at the revision that was read."""
        return self.messages.update_one(
            {"_id": doc["_id"], "user_id": doc["user_id"], "state": SEALED, "rev": doc["rev"]},
            {"$set": changes, "$inc": {"rev": 1}},
        )

    def delete_sealed(self, user_id: str, message_id: str) -> bool:
        deleted = self.messages.delete_one(
            {"_id": message_id, "user_id": user_id, "state": SEALED}
        )
        if deleted:
            # Lookups left by a release that crashed before it could mark the message.
            self.read_tokens.delete_many({"message_id": message_id})
        return deleted

    # The release --------------------------------------------------------------------

    def sealed_in_switch(self, user_id: str, switch_id: str, limit: int) -> list[dict]:
        return self.messages.find(
            {"switch_id": switch_id, "state": SEALED, "user_id": user_id}, limit=limit
        )

    def mark_released(self, doc: dict[str, Any], release: dict[str, Any]) -> dict | None:
        """Compare-and-set sealed -> released, at the revision whose recipients got tokens."""
        return self.messages.update_one(
            {"_id": doc["_id"], "user_id": doc["user_id"], "switch_id": doc["switch_id"],
             "state": SEALED, "rev": doc["rev"]},
            {"$set": {"state": RELEASED, **release}},
        )

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

    def due_dispatches(self, now: datetime, limit: int) -> list[dict[str, Any]]:
        return self.messages.find({"dispatch_due_at": {"$lte": now}},
                                  sort=[("dispatch_due_at", 1)], limit=limit)

    def claim_dispatch(self, doc: dict[str, Any], lease_until: datetime) -> dict | None:
        """Compare-and-set on the due time: of several dispatchers, one gets the message."""
        return self.messages.update_one(
            {"_id": doc["_id"], "state": RELEASED, "dispatch_due_at": doc["dispatch_due_at"]},
            {"$set": {"dispatch_due_at": lease_until}},
        )

    def finish_dispatch(self, doc: dict[str, Any], now: datetime) -> dict | None:
        return self.messages.update_one(
            {"_id": doc["_id"], "dispatch_due_at": doc["dispatch_due_at"]},
            {"$unset": {"dispatch_due_at": ""}, "$set": {"dispatched_at": now}},
        )

    def postpone_dispatch(self, doc: dict[str, Any], until: datetime) -> None:
        self.messages.update_one(
            {"_id": doc["_id"], "dispatch_due_at": doc["dispatch_due_at"]},
            {"$set": {"dispatch_due_at": until}},
        )

    def switch_counts(self, switch_id: str) -> dict[str, int]:
        return {
            "sealed": self.messages.count({"switch_id": switch_id, "state": SEALED}),
            "released": self.messages.count({"switch_id": switch_id, "state": RELEASED}),
            "waiting": self.messages.count(
                {"switch_id": switch_id, "state": RELEASED, "dispatched_at": {"$exists": False}}
            ),
        }

    # Erasure -------------------------------------------------------------------------

    def delete_everything_of(self, user_id: str) -> dict[str, int]:
        """Every document of the user except the data key (which goes first, elsewhere)."""
        return {
            "messages": self.messages.delete_many({"user_id": user_id}),
            "read_tokens": self.read_tokens.delete_many({"user_id": user_id}),
            "entitlements": int(self.entitlements.delete_one({"_id": user_id})),
        }
