"""The injectable clock: every service asks it for "now", never `datetime.now()`.

Time inside the system is always timezone-aware UTC, truncated to milliseconds
because that is what MongoDB stores; truncating everywhere keeps a value read back
from either storage backend equal to the value written.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

CLOCK_CONFIG_KEY = "JICM_CLOCK"


def to_utc_ms(moment: datetime) -> datetime:
    """Return `moment` as aware UTC with millisecond precision."""
    if moment.tzinfo is None:
        raise ValueError("naive datetimes are not allowed: give a timezone")
    moment = moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


class SystemClock:
    """The real wall clock."""

    def now(self) -> datetime:
        return to_utc_ms(datetime.now(UTC))


class FrozenClock:
    """A clock that only moves when told to: for tests of time-driven behaviour."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = to_utc_ms(start or datetime(2030, 1, 1, tzinfo=UTC))
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float = 0, **delta: float) -> datetime:
        with self._lock:
            self._now = to_utc_ms(self._now + timedelta(seconds=seconds, **delta))
            return self._now

    def set(self, moment: datetime) -> None:
        with self._lock:
            self._now = to_utc_ms(moment)
