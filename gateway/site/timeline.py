"""The picture of a switch's cycle: where the last check-in, the reminders, the deadline,
the end of grace and "now" fall on one line, drawn by the template as an inline SVG.

Only the geometry is here (fractions of the line's length); what each point means is
the scheduler's: reminders fall `reminders_seconds` before the deadline, release comes
`grace_seconds` after it (or at `grace_ends_at` once overdue).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gateway.site.timefmt import parse_time

WIDTH = 400  # the SVG's own units; it scales to the page
MARGIN = 16


@dataclass(frozen=True)
class Point:
    kind: str  # checkin, reminder, deadline, release, now
    label: str
    at: datetime
    x: float


@dataclass(frozen=True)
class Timeline:
    start: datetime
    deadline: datetime
    release: datetime
    points: tuple[Point, ...]
    now_x: float

    @property
    def deadline_x(self) -> float:
        return _x(self.start, self.release, self.deadline)

    @property
    def end_x(self) -> float:
        return WIDTH - MARGIN

    @property
    def events(self) -> tuple[Point, ...]:
        """The points other than "now", in time order: the picture's words."""
        return tuple(point for point in self.points if point.kind != "now")


def timeline(switch: dict[str, Any], now: datetime) -> Timeline | None:
    """The current cycle of an armed or overdue switch (others have no running clock)."""
    if switch["state"] not in ("armed", "overdue") or not switch.get("deadline"):
        return None
    deadline = parse_time(switch["deadline"])
    start = deadline - timedelta(seconds=switch["interval_seconds"])
    last = parse_time(switch.get("last_checkin_at"))
    release = parse_time(switch.get("grace_ends_at")) or (
        deadline + timedelta(seconds=switch["grace_seconds"]))
    points = [Point("checkin", "Last check-in" if last else "Armed", start,
                    _x(start, release, start))]
    for offset in sorted(switch["reminders_seconds"], reverse=True):
        at = deadline - timedelta(seconds=offset)
        if at > start:
            points.append(Point("reminder", "Reminder", at, _x(start, release, at)))
    points.append(Point("deadline", "Check-in due", deadline, _x(start, release, deadline)))
    points.append(Point("release", "Messages released", release, _x(start, release, release)))
    now_x = _x(start, release, min(max(now, start), release))
    points.append(Point("now", "Now", now, now_x))
    return Timeline(start, deadline, release, tuple(points), now_x)


def _x(start: datetime, end: datetime, at: datetime) -> float:
    span = (end - start).total_seconds() or 1.0
    fraction = (at - start).total_seconds() / span
    return round(MARGIN + fraction * (WIDTH - 2 * MARGIN), 1)
