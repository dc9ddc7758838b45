"""The switch's rules as pure functions: which reminder is due, when it becomes overdue,
when it fires, what a pause does, and which settings are refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.scheduler.switches import (
    ARMED,
    BOUNCED,
    FIRED,
    OVERDUE,
    PAUSED,
    RELEASED,
    SENT,
    UNARMED,
    AwaitNotice,
    BecomeOverdue,
    Fire,
    Remind,
    Resume,
    Schedule,
    Settlement,
    Switch,
    Wait,
    default_schedule,
    fresh_cycle,
    next_action,
    validated_pause,
    validated_schedule,
)
from shared.errors import InvalidInput

NOW = datetime(2030, 1, 1, tzinfo=UTC)
HOUR, DAY = 3600, 86_400
SCHEDULE = Schedule(interval_seconds=10 * DAY, grace_seconds=2 * DAY,
                    reminders_seconds=(3 * DAY, DAY, HOUR))


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def armed(deadline: datetime | None = None, next_step: int = 0,
          schedule: Schedule = SCHEDULE) -> Switch:
    return Switch(id="s", user_id="u", state=ARMED, cycle=1, schedule=schedule,
                  deadline=deadline or at(10 * DAY), next_step=next_step)


def test_default_reminders_keep_only_offsets_shorter_than_the_interval():
    assert default_schedule(60).reminders_seconds == (3 * DAY, DAY, HOUR)
    assert default_schedule(2 * DAY).interval_seconds == 30 * DAY
    short = validated_schedule({"interval_seconds": 2 * DAY}, default_schedule(60),
                               min_interval=60)
    assert short.reminders_seconds == (DAY, HOUR)


def test_the_default_schedule_never_undercuts_the_configured_minimum():
    schedule = default_schedule(45 * DAY)
    assert schedule.interval_seconds == 45 * DAY
    assert schedule.grace_seconds == 45 * DAY


def test_a_new_cycle_puts_the_deadline_one_interval_ahead_with_every_reminder_still_to_come():
    cycle = fresh_cycle(SCHEDULE, NOW)
    assert cycle["deadline"] == at(10 * DAY)
    assert cycle["due_at"] == at(7 * DAY)  # the first reminder, three days before
    assert cycle["next_step"] == 0
    assert cycle["reminders"] == []


def test_an_armed_switch_waits_for_its_next_reminder():
    assert next_action(armed(), at(DAY)) == Wait(at(7 * DAY))
    assert next_action(armed(next_step=2), at(8 * DAY)) == Wait(at(10 * DAY - HOUR))
    assert next_action(armed(next_step=3), at(10 * DAY - 1)) == Wait(at(10 * DAY))


def test_the_reminder_that_is_due_is_sent_and_the_next_one_is_scheduled():
    assert next_action(armed(), at(7 * DAY)) == Remind(step=0, due_at=at(9 * DAY))
    assert next_action(armed(next_step=1), at(9 * DAY)) == Remind(step=1,
                                                                  due_at=at(10 * DAY - HOUR))
    assert next_action(armed(next_step=2), at(10 * DAY - HOUR)) == Remind(step=2,
                                                                         due_at=at(10 * DAY))


def test_after_downtime_only_the_latest_reminder_that_passed_is_sent():
    # Down from day 6 to just after the one-day reminder: the three-day one is stale.
    assert next_action(armed(), at(9 * DAY + 60)) == Remind(step=1, due_at=at(10 * DAY - HOUR))


def test_a_passed_deadline_sends_the_overdue_notice_and_skips_every_upcoming_reminder():
    action = next_action(armed(next_step=1), at(10 * DAY))
    assert action == BecomeOverdue(step=3, grace_ends_at=at(12 * DAY))


def test_grace_counts_from_the_overdue_notice_when_we_were_down_at_the_deadline():
    # We were down for a week past the deadline: the owner was never told, so the whole
    # grace period starts now rather than having already run out.
    action = next_action(armed(), at(17 * DAY))
    assert action == BecomeOverdue(step=3, grace_ends_at=at(19 * DAY))


def test_an_overdue_switch_fires_when_grace_ends_and_not_a_moment_before():
    switch = Switch(id="s", user_id="u", state=OVERDUE, cycle=1, schedule=SCHEDULE,
                    deadline=at(10 * DAY), grace_ends_at=at(12 * DAY), next_step=4,
                    settled={3: Settlement(SENT, at(10 * DAY))})
    assert next_action(switch, at(12 * DAY) - timedelta(milliseconds=1)) == Wait(at(12 * DAY))
    assert next_action(switch, at(12 * DAY)) == Fire()


def test_grace_over_without_word_of_the_overdue_notice_means_asking_not_firing():
    switch = Switch(id="s", user_id="u", state=OVERDUE, cycle=1, schedule=SCHEDULE,
                    deadline=at(10 * DAY), grace_ends_at=at(12 * DAY), next_step=4,
                    settled={0: Settlement(SENT, at(7 * DAY)), 2: Settlement(SENT, at(9 * DAY))})
    assert next_action(switch, at(30 * DAY)) == AwaitNotice()


def test_a_notice_accepted_late_gives_the_whole_grace_from_its_acceptance():
    switch = Switch(id="s", user_id="u", state=OVERDUE, cycle=1, schedule=SCHEDULE,
                    deadline=at(10 * DAY), grace_ends_at=at(12 * DAY), next_step=4)
    assert switch.grace_after(3, Settlement(SENT, at(15 * DAY))) == at(17 * DAY)
    # In time, or bounced, or an upcoming reminder: grace stays as it was.
    assert switch.grace_after(3, Settlement(SENT, at(10 * DAY))) is None
    assert switch.grace_after(3, Settlement(BOUNCED, at(15 * DAY))) is None
    assert switch.grace_after(2, Settlement(SENT, at(15 * DAY))) is None


def test_a_pause_holds_until_it_ends_then_the_switch_resumes():
    paused = Switch(id="s", user_id="u", state=PAUSED, cycle=2, schedule=SCHEDULE,
                    paused_until=at(DAY))
    assert next_action(paused, at(DAY - 1)) == Wait(at(DAY))
    assert next_action(paused, at(DAY)) == Resume()


@pytest.mark.parametrize("state", [UNARMED, FIRED, RELEASED])
def test_unarmed_fired_and_released_switches_need_no_attention(state):
    switch = Switch(id="s", user_id="u", state=state, cycle=0, schedule=SCHEDULE)
    assert next_action(switch, at(1000 * DAY)) == Wait(None)


def test_a_switch_without_reminders_goes_straight_to_the_overdue_notice():
    bare = Schedule(interval_seconds=DAY, grace_seconds=DAY, reminders_seconds=())
    switch = armed(deadline=at(DAY), schedule=bare)
    assert next_action(switch, at(1)) == Wait(at(DAY))
    assert next_action(switch, at(DAY)) == BecomeOverdue(step=0, grace_ends_at=at(2 * DAY))


# --- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["interval_seconds", "grace_seconds"])
def test_a_duration_below_the_minimum_is_refused_naming_the_field_and_the_minimum(field):
    with pytest.raises(InvalidInput) as refused:
        validated_schedule({field: 59}, SCHEDULE, min_interval=60)
    assert refused.value.details == {"field": field, "minimum": 60}
    assert str(refused.value).startswith(field)
    assert "60" in str(refused.value)


@pytest.mark.parametrize(
    "reminders, problem",
    [
        ([10 * DAY], "shorter than the interval"),
        ([0], "at least 1"),
        ([HOUR, HOUR], "twice"),
        ([True], "whole number"),
        (list(range(1, 12)), "at most 10"),
        ("3600", "list"),
    ],
)
def test_bad_reminders_are_refused_saying_why(reminders, problem):
    with pytest.raises(InvalidInput) as refused:
        validated_schedule({"reminders_seconds": reminders}, SCHEDULE, min_interval=60)
    assert refused.value.details["field"] == "reminders_seconds"
    assert problem in str(refused.value)


def test_reminders_are_kept_farthest_first_whatever_order_they_come_in():
    schedule = validated_schedule({"reminders_seconds": [HOUR, 3 * DAY, DAY]}, SCHEDULE,
                                  min_interval=60)
    assert schedule.reminders_seconds == (3 * DAY, DAY, HOUR)


def test_an_interval_longer_than_a_year_is_refused():
    with pytest.raises(InvalidInput) as refused:
        validated_schedule({"interval_seconds": 400 * DAY}, SCHEDULE, min_interval=60)
    assert refused.value.details["field"] == "interval_seconds"


@pytest.mark.parametrize("until, problem", [(NOW, "future"), (at(-1), "future"),
                                            (at(91 * DAY), "90 days")])
def test_a_pause_must_end_in_the_next_90_days(until, problem):
    with pytest.raises(InvalidInput) as refused:
        validated_pause(until, NOW)
    assert refused.value.details["field"] == "paused_until"
    assert problem in str(refused.value)


def test_a_pause_is_kept_in_utc_and_null_clears_it():
    paris = timezone(timedelta(hours=1))
    assert validated_pause(datetime(2030, 1, 2, 1, 0, tzinfo=paris), NOW) == at(DAY)
    assert validated_pause(None, NOW) is None
