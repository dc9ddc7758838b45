"""Fixed-window rate limits kept in a service's own database.

Counters live in the database, not in process memory, so every replica of a service
(and every gunicorn worker behind the gateway) counts against the same limit. One
counter document per (scope, key, window), incremented with an atomic upsert and
expired by a TTL index once its window has passed.

Keys should never be raw personal data: callers pass a hash of an email address,
never the address, so the counters of unknown addresses reveal nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.errors import RateLimited
from shared.storage import Collection, Index

THROTTLE_INDEXES = [Index.on("expires_at", expire_after_seconds=0)]


@dataclass(frozen=True)
class Limit:
    """At most `count` hits per `window_seconds` for one key of one scope."""

    scope: str
    count: int
    window_seconds: int

    def in_words(self) -> str:
        """The limit as a person reads it: "at most 3 an hour"."""
        windows = {60: "a minute", 3600: "an hour", 86_400: "a day"}
        per = windows.get(self.window_seconds) or f"every {self.window_seconds // 60} minutes"
        return f"at most {self.count} {per}"


def hashed_key(value: str) -> str:
    """A stable, non-reversible key for personal data such as an email address."""
    return hashlib.sha256(value.encode()).hexdigest()


class Throttle:
    """Counts hits per key and window, and refuses hits over the limit."""

    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    def hit(self, limit: Limit, key: str, now: datetime) -> int:
        """Count one hit; returns the count so far in this window."""
        start, end = _window(now, limit.window_seconds)
        doc = self.collection.update_one(
            {"_id": f"{limit.scope}:{key}:{int(start.timestamp())}"},
            {"$inc": {"count": 1}, "$setOnInsert": {"expires_at": end}},
            upsert=True,
        )
        return int(doc["count"])

    def count(self, limit: Limit, key: str, now: datetime) -> int:
        """Hits so far in the current window, without counting one more."""
        start, _ = _window(now, limit.window_seconds)
        doc = self.collection.get(f"{limit.scope}:{key}:{int(start.timestamp())}")
        return int(doc["count"]) if doc else 0

    def check(self, limit: Limit, key: str, now: datetime) -> None:
        """Raise RateLimited if the key has used up its window (without counting a hit)."""
        if self.count(limit, key, now) >= limit.count:
            raise _refusal(limit, now)

    def consume(self, limit: Limit, key: str, now: datetime) -> None:
        """Count a hit and raise RateLimited if it goes over the limit."""
        if self.hit(limit, key, now) > limit.count:
            raise _refusal(limit, now)


def _window(now: datetime, seconds: int) -> tuple[datetime, datetime]:
    epoch = int(now.timestamp())
    start = datetime.fromtimestamp(epoch - epoch % seconds, tz=now.tzinfo)
    return start, start + timedelta(seconds=seconds)


def _refusal(limit: Limit, now: datetime) -> RateLimited:
    _, end = _window(now, limit.window_seconds)
    retry_after = max(1, int((end - now).total_seconds()))
    return RateLimited(
        "too many attempts; try again later",
        details={"retry_after_seconds": retry_after},
    )
