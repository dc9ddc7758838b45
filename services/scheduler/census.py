"""How many switches are in each state, for /metrics: counted in the background, in slices.

Counting every switch at the time of a scrape would read a whole index (a million entries at
a million switches) while the scheduler's event loop waits. Instead a census walks the
switches by slices of their ids (`SLICES` ranges of the first two hex digits of the uuid),
one indexed count per state and slice, handing the event loop a turn between slices; when
it is complete it is stored, with the moments it started and ended, and /metrics and
/readyz report the last complete census and its age. A census cut short (a restart, an
error) is simply never stored: the last complete one stays, and grows older.

Counts are not kept up to date as switches change: a counter beside the switch could not
be changed in the same write, and would drift for good after one crash between the two.
A switch that changes state while its slice is being counted may be missed or counted
twice in that census; the next one, a minute later, counts it again.

With several scheduler instances, one that finds a census younger than `CENSUS_EVERY`
does not start another; two starting at once both finish, and the later start is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.scheduler.storage import SchedulerRepository
from services.scheduler.switches import STATES

CENSUS_EVERY = timedelta(seconds=60)
# How often each instance looks whether a census is due (one read of one document).
CENSUS_CHECK_SECONDS = 5.0
# Lower bounds of the id ranges counted one at a time: "00" to "ff" (switch ids are uuids;
# the first range also takes anything sorting below "01", the last anything above "ff").
SLICES: tuple[str, ...] = tuple(f"{n:02x}" for n in range(256))


@dataclass(frozen=True)
class Census:
    """Switches by state, counted between `started_at` and `counted_at` by `by`."""

    counts: dict[str, int]
    started_at: datetime
    counted_at: datetime
    by: str

    def view(self, now: datetime) -> dict[str, Any]:
        """As /readyz shows it: when it was taken and how old its oldest figure may be."""
        return {"started_at": self.started_at.isoformat(),
                "counted_at": self.counted_at.isoformat(),
                "age_seconds": (now - self.started_at).total_seconds(), "by": self.by}


def id_ranges() -> list[tuple[str | None, str | None]]:
    """The (lowest, below) id bounds of each slice; None is open-ended."""
    lows: list[str | None] = [None, *SLICES[1:]]
    highs: list[str | None] = [*SLICES[1:], None]
    return list(zip(lows, highs, strict=True))


def due(repo: SchedulerRepository, now: datetime) -> bool:
    """Whether a census should be taken now (none yet, or the last is `CENSUS_EVERY` old)."""
    last = repo.census()
    return last is None or now - last["started_at"] >= CENSUS_EVERY


def take(repo: SchedulerRepository, clock: Callable[[], datetime], by: str, *,
         pause: Callable[[], None] = lambda: None) -> Census:
    """Count every slice, `pause` between slices, and store the census once complete."""
    started_at = clock()
    counts = dict.fromkeys(STATES, 0)
    for low, high in id_ranges():
        for state in STATES:
            counts[state] += repo.count_slice(state, low, high)
        pause()
    census = Census(counts, started_at, clock(), by)
    repo.record_census(census.counts, census.started_at, census.counted_at, census.by)
    return census


def last(repo: SchedulerRepository) -> Census | None:
    """The last complete census, if any was ever taken."""
    doc = repo.census()
    if doc is None:
        return None
    return Census(doc["counts"], doc["started_at"], doc["counted_at"], doc["by"])
