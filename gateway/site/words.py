"""A switch told in words: its state, what happens next, what its settings mean."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from gateway.site.timefmt import duration, parse_time, plural, relative, when


def state_words(switch: dict[str, Any], tz: ZoneInfo, now: datetime) -> str:
    """"armed: next check-in due Tuesday 14 January, 09:00 Europe/Paris, in 12 days"."""
    state = switch["state"]
    deadline = parse_time(switch.get("deadline"))

    def at(moment: datetime | None) -> str:
        return f"{when(moment, tz, now)}, {relative(moment, now)}" if moment else "unknown"

    if state == "armed":
        return f"Armed: next check-in due {at(deadline)}."
    if state == "overdue":
        return (f"Overdue: the check-in was due {at(deadline)}. Your messages go out "
                f"{at(parse_time(switch.get('grace_ends_at')))} unless you check in.")
    if state == "paused":
        return f"Paused until {at(parse_time(switch.get('paused_until')))}."
    if state == "unarmed":
        return ("Not armed yet: verify your email address. Until you do, no reminder is "
                "sent and nothing can be released.")
    if state == "fired":
        return (f"Fired {at(parse_time(switch.get('fired_at')))}: your messages are being "
                "delivered, and a check-in cannot undo that.")
    return (f"Released {at(parse_time(switch.get('fired_at')))}: every message on this "
            "switch was handed over for delivery.")


def consequence(interval_seconds: int, grace_seconds: int) -> str:
    """What a schedule means for the people the messages are for."""
    return (f"If you stop checking in, your messages go out "
            f"{duration(interval_seconds + grace_seconds)} after your last check-in: "
            f"{duration(interval_seconds)} until the check-in is due, then "
            f"{duration(grace_seconds)} of grace.")


def reminder_words(reminders_seconds: list[int]) -> str:
    if not reminders_seconds:
        return "No reminder before the deadline; only the overdue notice."
    offsets = [duration(offset) for offset in sorted(reminders_seconds, reverse=True)]
    listed = offsets[0] if len(offsets) == 1 else ", ".join(offsets[:-1]) + " and " + offsets[-1]
    return f"We remind you {listed} before each deadline."


def next_steps(switch: dict[str, Any], messages: int, recipients: int, tz: ZoneInfo,
               now: datetime) -> list[str]:
    """What happens next, in order, as sentences."""
    state = switch["state"]
    interval, grace = switch["interval_seconds"], switch["grace_seconds"]
    held = (f"{plural(messages, 'message')} for {plural(recipients, 'recipient')}"
            if messages else "no message yet")
    if state == "unarmed":
        return [f"Once your address is verified, the switch arms: you check in every "
                f"{duration(interval)}.", f"It holds {held}."]
    if state == "paused":
        return ["While paused, the clock stops: no reminder, no release.",
                f"When the pause ends, you have {duration(interval)} to check in. It holds "
                f"{held}."]
    if state in ("fired", "released"):
        return [f"It held {held}; recipients receive them by email."]
    deadline = parse_time(switch["deadline"])
    release = parse_time(switch.get("grace_ends_at")) or deadline + timedelta(seconds=grace)
    steps = []
    upcoming = [deadline - timedelta(seconds=offset) for offset in
                sorted(switch["reminders_seconds"], reverse=True)
                if deadline - timedelta(seconds=offset) > now]
    if upcoming and state == "armed":
        steps.append(f"Next reminder: {when(upcoming[0], tz, now)}.")
    if state == "armed":
        steps.append(f"If you have not checked in by {when(deadline, tz, now)}, we send an "
                     f"overdue notice and wait {duration(grace)} more.")
    steps.append(f"If you still have not checked in by {when(release, tz, now)}, the switch "
                 f"fires and {held} go out." if messages else
                 f"If you still have not checked in by {when(release, tz, now)}, the switch "
                 "fires (it holds no message yet, so nothing would be sent).")
    steps.append("A check-in at any time before then starts a new cycle of "
                 f"{duration(interval)}.")
    return steps
