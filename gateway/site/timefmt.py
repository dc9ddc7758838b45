"""Times and durations as a person reads them: in their own time zone, always named, and
durations in days and hours (never seconds). UTC everywhere else."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

MINUTE, HOUR, DAY = 60, 3600, 86_400


def zone(name: str | None) -> ZoneInfo:
    """The sender's zone, or UTC until they have one."""
    try:
        return ZoneInfo(name or "UTC")
    except (ValueError, KeyError):
        return ZoneInfo("UTC")


def parse_time(value: str | datetime | None) -> datetime | None:
    """An ISO-8601 string from a service (or a datetime) as an aware UTC datetime."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def when(moment: datetime, tz: ZoneInfo, now: datetime) -> str:
    """"Tuesday 14 January, 09:00 Europe/Paris" (with the year when it is not this one)."""
    local = moment.astimezone(tz)
    year = "" if local.year == now.astimezone(tz).year else f" {local.year}"
    return f"{local:%A} {local.day} {local:%B}{year}, {local:%H:%M} {tz.key}"


def relative(moment: datetime, now: datetime) -> str:
    """"in 12 days", "in 3 hours", "5 minutes ago", "now"."""
    seconds = (moment - now).total_seconds()
    if abs(seconds) < MINUTE:
        return "now"
    words = _rough(abs(seconds))
    return f"in {words}" if seconds > 0 else f"{words} ago"


def _rough(seconds: float) -> str:
    for unit, name in ((DAY, "day"), (HOUR, "hour"), (MINUTE, "minute")):
        if seconds >= unit:
            return plural(round(seconds / unit), name)
    return plural(round(seconds), "second")


def duration(seconds: int) -> str:
    """"30 days", "7 days and 12 hours", "1 hour"; minutes only for what is shorter."""
    days, rest = divmod(int(seconds), DAY)
    hours, rest = divmod(rest, HOUR)
    parts = [plural(n, name) for n, name in ((days, "day"), (hours, "hour")) if n]
    if not parts:
        return plural(max(1, round(rest / MINUTE)), "minute")
    return " and ".join(parts)


def in_years(days: int) -> str:
    """"10 years" for a whole number of years, otherwise "400 days"."""
    return plural(days // 365, "year") if days % 365 == 0 else plural(days, "day")


def days_and_hours(seconds: int) -> tuple[int, int]:
    """A duration split for a form's two fields (what is under an hour is rounded up)."""
    days, rest = divmod(int(seconds), DAY)
    return days, -(-rest // HOUR)


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
