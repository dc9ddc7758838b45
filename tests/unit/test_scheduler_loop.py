"""The loop over a real embedded store: reminders once per cycle, firing exactly once and
never early, never while a reminder is still waiting to leave, atomic claims with leases,
the check-in/fire race, catching up after downtime, and the loop's liveness."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest

from services.delivery.schemas import MAX_STATUS_REFERENCES
from services.scheduler.loop import (
    DeliveryUnavailable,
    DueSwitches,
    liveness,
    notice_reference,
    reminder_reference,
)
from services.scheduler.scheduler import switch_id_for
from services.scheduler.storage import SchedulerRepository
from services.scheduler.switches import ARMED, FIRED, OVERDUE
from services.scheduler.tokens import verify
from shared.errors import Conflict, InvalidInput
from shared.storage import open_database
from tests.unit.scheduler_world import CLIENT, World

MINUTE, HOUR, DAY = 60, 3600, 86_400


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.close()


def steps(world: World, switch_id: str) -> list[tuple[int, int, str]]:
    return [(e["data"]["cycle"], e["data"]["step"], e["data"]["stage"])
            for e in world.events("ReminderDue", switch_id)]


def missed(world: World, switch_id: str | None = None) -> list[dict]:
    return world.events("CheckInMissed", switch_id)


def run_until(world: World, moment, every: float = 30) -> None:
    """Tick every `every` seconds of frozen time up to `moment`, as the loop would."""
    while world.now < moment:
        world.advance(min(every, (moment - world.now).total_seconds()))
        world.tick()


# --- reminders ------------------------------------------------------------------------------


def test_each_reminder_goes_out_once_at_its_moment_with_a_link_for_its_cycle(world):
    _user_id, switch_id = world.verified_user(interval_seconds=DAY,
                                             reminders_seconds=[6 * HOUR, HOUR])
    deadline = world.switch(switch_id)["deadline"]
    cycle = world.switch(switch_id)["cycle"]
    run_until(world, deadline - timedelta(hours=6) - timedelta(seconds=1))
    assert steps(world, switch_id) == []
    run_until(world, deadline - timedelta(seconds=1))
    assert steps(world, switch_id) == [(cycle, 0, "upcoming"), (cycle, 1, "upcoming")]
    run_until(world, deadline + timedelta(hours=1))
    assert steps(world, switch_id) == [(cycle, 0, "upcoming"), (cycle, 1, "upcoming"),
                                       (cycle, 2, "overdue")]
    for event in world.events("ReminderDue", switch_id):
        claim = verify(world.key, event["data"]["checkin_token"])
        assert (claim.switch_id, claim.cycle) == (switch_id, cycle)
        assert event["data"]["deadline"].startswith(deadline.isoformat()[:19])


def test_a_new_cycle_sends_its_own_reminders_and_none_of_the_old_cycles(world):
    user_id, switch_id = world.verified_user(interval_seconds=DAY, reminders_seconds=[HOUR])
    first = world.switch(switch_id)["cycle"]
    run_until(world, world.switch(switch_id)["deadline"] - timedelta(minutes=30), every=600)
    world.check_in(user_id)
    second = world.switch(switch_id)["cycle"]
    run_until(world, world.switch(switch_id)["deadline"] - timedelta(minutes=30), every=600)
    assert steps(world, switch_id) == [(first, 0, "upcoming"), (second, 0, "upcoming")]


# --- firing ----------------------------------------------------------------------------------


def test_a_switch_left_alone_fires_after_interval_plus_grace_and_not_before(world):
    _user_id, switch_id = world.verified_user(interval_seconds=10 * MINUTE,
                                             grace_seconds=5 * MINUTE)
    start = world.now
    run_until(world, start + timedelta(minutes=15) - timedelta(seconds=1), every=1)
    assert world.switch(switch_id)["state"] == OVERDUE
    assert missed(world) == []
    world.advance(1)
    world.tick()
    doc = world.switch(switch_id)
    assert doc["state"] == FIRED
    assert doc["fired_at"] == start + timedelta(minutes=15)
    [event] = missed(world, switch_id)
    assert event["data"]["cycle"] == doc["cycle"]
    run_until(world, world.now + timedelta(days=30), every=DAY)
    assert len(missed(world, switch_id)) == 1


def test_a_switch_checked_in_on_time_never_fires(world):
    user_id, switch_id = world.verified_user(interval_seconds=10 * MINUTE,
                                             grace_seconds=2 * MINUTE)
    for _ in range(20):
        # Check in late each time: well into the grace period, one second before its end.
        run_until(world, world.switch(switch_id)["deadline"] + timedelta(minutes=2)
                  - timedelta(seconds=1), every=7)
        world.check_in(user_id)
    assert missed(world) == []
    assert world.switch(switch_id)["state"] == ARMED


@pytest.mark.parametrize("status, reason", [("pending", "notice_waiting"),
                                            ("unknown", "notice_unknown"),
                                            ("failed", "notice_failed"),
                                            (None, "delivery_unavailable")])
def test_it_does_not_fire_while_the_overdue_notice_is_still_waiting_to_leave(world, status,
                                                                              reason):
    _user_id, switch_id = world.verified_user(interval_seconds=10 * MINUTE,
                                             grace_seconds=5 * MINUTE, reminders_seconds=[MINUTE])
    doc = world.switch(switch_id)
    notice = reminder_reference(switch_id, doc["cycle"], 1)
    if status is None:
        world.mail_error = DeliveryUnavailable("delivery did not answer")
    else:
        world.mail[notice] = status
    run_until(world, doc["deadline"] + timedelta(seconds=doc["grace_seconds"] + 3600), every=60)
    assert world.switch(switch_id)["state"] == OVERDUE
    assert missed(world) == []
    assert [notice] in world.mail_questions
    figures = liveness(world.repo, world.now)
    assert figures["held_back_switches"] == 1
    assert figures["held_back_by_reason"][reason] == 1
    [held] = figures["held_back"]
    assert (held["switch_id"], held["reason"]) == (switch_id, reason)
    # Delivery recovers and the notice leaves: the switch fires at the next look.
    world.mail_error = None
    world.mail[notice] = "sent"
    world.advance(15)
    world.tick()
    assert world.switch(switch_id)["state"] == FIRED
    assert len(missed(world, switch_id)) == 1
    assert liveness(world.repo, world.now)["held_back_switches"] == 0


def test_a_notice_that_bounced_for_good_does_not_hold_back_the_release(world):
    _, switch_id = world.verified_user(interval_seconds=10 * MINUTE, grace_seconds=5 * MINUTE)
    world.mail_default = "bounced"
    doc = world.switch(switch_id)
    run_until(world, doc["deadline"] + timedelta(seconds=doc["grace_seconds"]), every=60)
    assert world.switch(switch_id)["state"] == FIRED


def test_a_notice_delivery_gave_up_on_is_not_a_bounce_and_holds_the_release(world):
    _, switch_id = world.verified_user(interval_seconds=10 * MINUTE, grace_seconds=5 * MINUTE)
    world.mail_default = "failed"  # our relay was down until delivery stopped trying
    doc = world.switch(switch_id)
    run_until(world, doc["deadline"] + timedelta(days=30), every=600)
    assert world.switch(switch_id)["state"] == OVERDUE
    assert missed(world) == []


def test_a_notice_delivery_gave_up_on_is_asked_for_again_backing_off(world):
    _, switch_id = world.verified_user(interval_seconds=10 * MINUTE, grace_seconds=5 * MINUTE)
    world.mail_default = "failed"
    doc = world.switch(switch_id)
    run_until(world, doc["deadline"] + timedelta(seconds=doc["grace_seconds"]), every=60)
    run_until(world, world.now + timedelta(hours=3), every=15)
    notices = [e for e in world.events("ReminderDue", switch_id) if e["data"]["stage"] == "overdue"]
    # Asked for again at once, then 1, 2, 4, 8, 16, 32 and 60 minutes after each other:
    # at 0, 1, 3, 7, 15, 31, 63 and 123 minutes in these three hours.
    assert len(notices) == 1 + 8
    assert {e["data"]["cycle"] for e in notices} == {doc["cycle"]}
    assert liveness(world.repo, world.now)["held_back"][0]["nudges"] == 8


def test_a_notice_delivery_never_had_is_asked_for_again(world):
    _, switch_id = world.verified_user(interval_seconds=10 * MINUTE, grace_seconds=5 * MINUTE)
    doc = world.switch(switch_id)
    world.mail_default = "unknown"  # its ReminderDue ended in a dead-letter queue
    run_until(world, doc["deadline"] + timedelta(seconds=doc["grace_seconds"] + 60), every=15)
    # The notice, asked for again when grace ended, and a minute later.
    assert len([e for e in world.events("ReminderDue", switch_id)
                if e["data"]["stage"] == "overdue"]) == 3
    assert world.switch(switch_id)["state"] == OVERDUE


def test_a_notice_delivery_confirmed_then_forgot_does_not_hold_the_release(world):
    # A long grace: delivery's retention reduces its mail log to counts before grace ends.
    _, switch_id = world.verified_user(interval_seconds=30 * DAY, grace_seconds=60 * DAY,
                                       reminders_seconds=[3 * DAY, DAY])
    doc = world.switch(switch_id)
    run_until(world, doc["deadline"], every=HOUR)
    for step in range(3):
        world.settle(switch_id, step, "sent", at=doc["deadline"])
    world.forget_mail()
    run_until(world, doc["deadline"] + timedelta(days=60, hours=1), every=HOUR)
    assert world.switch(switch_id)["state"] == FIRED
    assert len(missed(world, switch_id)) == 1


def test_a_switch_whose_notice_was_confirmed_is_fired_without_asking_delivery(world):
    _, switch_id = world.verified_user(interval_seconds=10 * MINUTE, grace_seconds=5 * MINUTE)
    doc = world.switch(switch_id)
    run_until(world, doc["deadline"], every=60)
    world.settle(switch_id, len(doc["reminders_seconds"]), "sent", at=world.now)
    world.mail_error = DeliveryUnavailable("delivery is down")
    run_until(world, doc["deadline"] + timedelta(seconds=doc["grace_seconds"]), every=60)
    assert world.switch(switch_id)["state"] == FIRED
    assert world.mail_questions == []


def test_a_notice_that_left_late_gives_the_owner_the_whole_grace_from_then(world):
    _user_id, switch_id = world.verified_user(interval_seconds=10 * MINUTE,
                                              grace_seconds=5 * MINUTE, reminders_seconds=[MINUTE])
    doc = world.switch(switch_id)
    world.mail_error = DeliveryUnavailable("delivery is down")
    grace_end = doc["deadline"] + timedelta(minutes=5)
    run_until(world, grace_end + timedelta(minutes=20), every=15)
    assert world.switch(switch_id)["state"] == OVERDUE
    # Delivery is back: the notice leaves now, and the owner has the whole grace again.
    world.mail_error = None
    left_at = world.now
    world.settle(switch_id, 1, "sent", at=left_at)
    assert world.switch(switch_id)["grace_ends_at"] == left_at + timedelta(minutes=5)
    run_until(world, left_at + timedelta(minutes=5) - timedelta(seconds=1), every=15)
    assert world.switch(switch_id)["state"] == OVERDUE
    # ... and the notice's one-click link still works all that time.
    [notice] = [e for e in world.events("ReminderDue", switch_id)
                if e["data"]["stage"] == "overdue"]
    world.scheduler().inspect_link(notice["data"]["checkin_token"], CLIENT)
    run_until(world, left_at + timedelta(minutes=5), every=1)
    assert world.switch(switch_id)["state"] == FIRED


def test_a_late_notice_found_by_asking_delivery_also_restarts_grace(world):
    _, switch_id = world.verified_user(interval_seconds=10 * MINUTE, grace_seconds=5 * MINUTE,
                                       reminders_seconds=[MINUTE])
    doc = world.switch(switch_id)
    notice = reminder_reference(switch_id, doc["cycle"], 1)
    world.mail[notice] = "pending"
    run_until(world, doc["deadline"] + timedelta(minutes=30), every=15)
    # Its ReminderSettled was lost on the way; delivery's answer says when it left.
    world.mail[notice] = "sent"
    world.mail_settled_at[notice] = world.now - timedelta(minutes=1)
    world.advance(15)
    world.tick()
    doc = world.switch(switch_id)
    assert doc["state"] == OVERDUE
    assert doc["grace_ends_at"] == world.mail_settled_at[notice] + timedelta(minutes=5)
    run_until(world, doc["grace_ends_at"], every=15)
    assert world.switch(switch_id)["state"] == FIRED


def test_any_batch_with_any_number_of_reminders_fires_and_no_question_is_too_long(world):
    ids = [world.verified_user(interval_seconds=DAY, grace_seconds=HOUR,
                               reminders_seconds=[5 * HOUR, 4 * HOUR, 3 * HOUR, 2 * HOUR, HOUR])[1]
           for _ in range(120)]
    run_until(world, world.now + timedelta(days=1, hours=2), every=HOUR)
    settings = {"batch": 1000}
    world.tick(**settings)
    assert all(len(question) <= MAX_STATUS_REFERENCES for question in world.mail_questions)
    assert [world.switch(i)["state"] for i in ids] == [FIRED] * len(ids)


def test_a_question_delivery_refuses_holds_back_only_the_switch_it_concerned(world):
    ids = [world.verified_user(interval_seconds=10 * MINUTE, grace_seconds=5 * MINUTE)[1]
           for _ in range(4)]
    poisoned = notice_reference(world.switch(ids[2]))
    answer = world.mail_status

    def refusing(references):
        if poisoned in references:
            raise InvalidInput("references: a reference delivery cannot read")
        return answer(references)

    world.mail_status = refusing
    run_until(world, world.now + timedelta(minutes=16), every=30)
    assert [world.switch(i)["state"] for i in ids] == [FIRED, FIRED, OVERDUE, FIRED]


def test_delivery_is_asked_once_per_tick_for_every_switch_ready_to_fire(world):
    ids = [world.verified_user(interval_seconds=10 * MINUTE)[1] for _ in range(5)]
    world.advance(10 * MINUTE)
    world.tick()
    world.mail_questions.clear()
    world.advance(7 * DAY)
    world.tick()
    assert len(world.mail_questions) == 1
    assert {ref.split(":")[0] for ref in world.mail_questions[0]} == set(ids)
    assert all(world.switch(i)["state"] == FIRED for i in ids)


# --- the race ---------------------------------------------------------------------------------


def overdue_and_claimed(world: World) -> tuple[str, str, dict]:
    user_id, switch_id = world.verified_user(interval_seconds=10 * MINUTE)
    world.advance(10 * MINUTE)
    world.tick()
    world.clock.set(world.switch(switch_id)["grace_ends_at"])
    [claimed] = world.repo.claim_due(world.now, "racer", 10, timedelta(seconds=30))
    return user_id, switch_id, claimed


def test_a_check_in_that_lands_first_wins_and_no_check_in_missed_is_written(world):
    user_id, switch_id, claimed = overdue_and_claimed(world)
    world.check_in(user_id, switch_id)
    assert world.repo.fire(claimed, {"event_id": "x", "type": "CheckInMissed"},
                           world.now) is None
    assert world.switch(switch_id)["state"] == ARMED
    assert missed(world) == []


def test_a_firing_that_lands_first_wins_and_the_late_check_in_is_told(world):
    user_id, switch_id, claimed = overdue_and_claimed(world)
    world.repo.release(claimed, world.now)  # give the claim back; the loop takes it again
    world.tick()
    with pytest.raises(Conflict) as refused:
        world.check_in(user_id, switch_id)
    assert refused.value.details["state"] == FIRED
    assert len(missed(world, switch_id)) == 1


def test_a_check_in_and_the_firing_at_the_same_instant_never_both_win(world, tmp_path):
    # The loop runs on its own connection to the file, as another process would.
    loop_db = open_database("scheduler", mongo_uri=None, data_dir=tmp_path)
    loop_repo = SchedulerRepository(loop_db)
    outcomes = set()
    for _ in range(12):
        user_id, switch_id = world.verified_user(interval_seconds=10 * MINUTE)
        world.advance(10 * MINUTE)
        world.tick()
        world.clock.set(world.switch(switch_id)["grace_ends_at"])
        both_ready = threading.Barrier(2)

        def asked_delivery(references, barrier=both_ready):
            barrier.wait()  # the loop has decided to fire; the owner clicks now
            return {ref: "sent" for ref in references}

        loop = DueSwitches(loop_repo, world.now, world.loop_settings("racer"), asked_delivery)
        firing = threading.Thread(target=loop.tick)
        firing.start()
        both_ready.wait()
        try:
            world.check_in(user_id, switch_id)
            checked_in = True
        except Conflict:
            checked_in = False
        firing.join()
        fired = world.switch(switch_id)["state"] == FIRED
        assert checked_in != fired
        assert len(missed(world, switch_id)) == (1 if fired else 0)
        outcomes.add(fired)
        world.advance(DAY)
    loop_db.close()
    assert outcomes  # at least one race ran to the end


# --- claims, leases, instances -----------------------------------------------------------------


def many_overdue(world: World, n: int) -> list[str]:
    ids = [world.verified_user(interval_seconds=10 * MINUTE)[1] for _ in range(n)]
    world.advance(10 * MINUTE)
    world.tick(batch=1000)
    world.advance(7 * DAY)
    return ids


def test_two_instances_never_claim_the_same_switch(world, tmp_path):
    ids = many_overdue(world, 30)
    other_db = open_database("scheduler", mongo_uri=None, data_dir=tmp_path)
    other = SchedulerRepository(other_db)
    lease = timedelta(seconds=30)
    a = world.repo.claim_due(world.now, "a", 12, lease)
    b = other.claim_due(world.now, "b", 12, lease)
    c = world.repo.claim_due(world.now, "c", 12, lease)
    claimed = [d["_id"] for d in a + b + c]
    assert len(claimed) == len(set(claimed)) == 30
    assert set(claimed) == set(ids)
    other_db.close()


def test_an_instance_that_read_a_switch_just_before_another_claimed_it_cannot_claim_it(
    world, tmp_path, monkeypatch
):
    many_overdue(world, 3)
    other_db = open_database("scheduler", mongo_uri=None, data_dir=tmp_path)
    other = SchedulerRepository(other_db)
    # Both instances read the same due switches at the same moment...
    stale = other.switches.find({"due_at": {"$lte": world.now}})
    monkeypatch.setattr(other.switches, "find", lambda *args, **kwargs: stale)
    # ...one claims them first; the other's compare-and-set then finds nothing to take.
    assert len(world.repo.claim_due(world.now, "a", 10, timedelta(seconds=30))) == 3
    assert other.claim_due(world.now, "b", 10, timedelta(seconds=30)) == []
    other_db.close()


def test_a_dead_instances_claims_are_taken_over_when_its_lease_ends(world):
    ids = many_overdue(world, 6)
    dead = world.repo.claim_due(world.now, "dead", 4, timedelta(seconds=30))
    world.tick(instance="alive")
    assert sum(world.switch(i)["state"] == FIRED for i in ids) == 2
    world.advance(29)
    world.tick(instance="alive")
    assert sum(world.switch(i)["state"] == FIRED for i in ids) == 2
    world.advance(1)
    world.tick(instance="alive")
    assert all(world.switch(i)["state"] == FIRED for i in ids)
    # The dead instance wakes up and tries to finish its work: its claims are void.
    for doc in dead:
        assert world.repo.fire(doc, {"event_id": "late", "type": "CheckInMissed"},
                               world.now) is None
    assert {i: len(missed(world, i)) for i in ids} == {i: 1 for i in ids}


def test_a_check_in_fences_out_a_claim_in_progress(world):
    user_id, switch_id = world.verified_user(interval_seconds=DAY, reminders_seconds=[HOUR])
    world.clock.set(world.switch(switch_id)["deadline"] - timedelta(minutes=30))
    [claimed] = world.repo.claim_due(world.now, "slow", 10, timedelta(seconds=30))
    moved = world.check_in(user_id).switches[0]
    assert world.repo.release(claimed, world.now) is None
    doc = world.switch(switch_id)
    assert doc["due_at"] == moved.deadline - timedelta(hours=1)
    assert "claim" not in doc


def test_the_loop_finds_due_switches_through_the_index_not_a_scan(world):
    plan = world.repo.switches.query_plan({"due_at": {"$lte": world.now}},
                                          sort=[("due_at", 1)])
    assert any("USING INDEX ix_switches_" in step for step in plan), plan


def test_the_lag_and_the_held_back_figures_come_from_indexes_in_order(world):
    plans = {
        "lag": world.repo.switches.query_plan({"due_at": {"$lte": world.now}},
                                              sort=[("due_at", 1)]),
        "held": world.repo.switches.query_plan({"held.since": {"$gte": world.now}},
                                               sort=[("held.since", 1)]),
        "by reason": world.repo.switches.query_plan({"held.reason": "notice_failed"}),
    }
    for name, plan in plans.items():
        assert any("USING INDEX ix_switches_" in step for step in plan), (name, plan)
        assert not any("TEMP B-TREE" in step or step.startswith("SCAN") for step in plan), plan


def test_a_tick_looks_only_at_due_switches(world):
    for _ in range(200):
        world.verified_user(interval_seconds=DAY)
    _, late = world.verified_user(interval_seconds=HOUR, reminders_seconds=[])
    world.advance(HOUR)
    report = world.tick()
    assert report.claimed == 1
    assert report.order == [late]


# --- a backlog: batch after batch in one tick ---------------------------------------------------


def due_together(world: World, n: int) -> list[str]:
    """`n` switches whose deadline is the same second, none of them handled yet."""
    ids = [world.verified_user(interval_seconds=HOUR, reminders_seconds=[])[1]
           for _ in range(n)]
    world.advance(HOUR)
    return ids


def notices_by_switch(world: World, event_type: str = "ReminderDue") -> dict[str, list[str]]:
    """Every event of this type written so far, as {switch_id: [stage or type, ...]}."""
    found: dict[str, list[str]] = {}
    for event in world.events(event_type):
        found.setdefault(event["data"]["switch_id"], []).append(
            event["data"].get("stage", event_type))
    return found


def test_a_thousand_deadlines_in_the_same_second_are_all_handled_in_one_tick(world):
    ids = due_together(world, 1000)
    report = world.tick(batch=100)
    assert (report.claimed, report.overdue, report.errors) == (1000, 1000, 0)
    assert notices_by_switch(world) == {i: ["overdue"] for i in ids}
    world.advance(7 * DAY)  # past every grace
    report = world.tick(batch=100)
    assert (report.claimed, report.fired) == (1000, 1000)
    assert notices_by_switch(world, "CheckInMissed") == {i: ["CheckInMissed"] for i in ids}
    assert world.tick(batch=100).claimed == 0


def test_a_long_tick_gives_the_event_loop_a_turn_and_reads_the_clock_between_batches(world):
    due_together(world, 250)
    turns, claims = [], []
    original_claim = world.repo.claim_due

    def claim_due(now, *args):
        claims.append(now)
        return original_claim(now, *args)

    def pause():
        turns.append(world.now)
        world.advance(1)

    world.repo.claim_due = claim_due
    DueSwitches(world.repo, world.now, world.loop_settings(batch=100), world.mail_status,
                clock=world.clock.now, pause=pause).tick()
    # Three batches (100, 100, 50) and a turn for the event loop between each two; each
    # batch is claimed at the clock's time, so its leases are whole.
    assert len(turns) == 2
    assert claims == [turns[0], turns[0] + timedelta(seconds=1),
                      turns[0] + timedelta(seconds=2)]


def test_a_tick_stops_at_its_limit_and_the_next_one_goes_on(world, monkeypatch):
    monkeypatch.setattr("services.scheduler.loop.TICK_LIMIT", 250)
    ids = due_together(world, 300)
    assert world.tick(batch=100).claimed == 250
    assert world.tick(batch=100).claimed == 50
    assert notices_by_switch(world) == {i: ["overdue"] for i in ids}


def test_two_instances_working_off_one_backlog_handle_each_switch_exactly_once(world,
                                                                              tmp_path):
    ids = due_together(world, 400)
    other_db = open_database("scheduler", mongo_uri=None, data_dir=tmp_path)
    other = DueSwitches(SchedulerRepository(other_db), world.now,
                        world.loop_settings("b", batch=70), world.mail_status)
    reports = []

    def the_other_instance_ticks_too():
        reports.append(other.tick() if not reports else None)

    mine = DueSwitches(world.repo, world.now, world.loop_settings("a", batch=100),
                       world.mail_status, pause=the_other_instance_ticks_too).tick()
    other_db.close()
    assert mine.claimed + reports[0].claimed == 400
    assert set(mine.order).isdisjoint(reports[0].order)
    assert notices_by_switch(world) == {i: ["overdue"] for i in ids}


# --- downtime ---------------------------------------------------------------------------------


def test_after_a_long_downtime_it_catches_up_in_deadline_order_and_skips_stale_reminders(world):
    reminders = [3 * DAY, DAY, HOUR]
    # Deadlines on days 10, 12, 11 and 21 (created on different days).
    _, a = world.verified_user(interval_seconds=10 * DAY, reminders_seconds=reminders)
    world.advance(DAY)
    _, b = world.verified_user(interval_seconds=11 * DAY, reminders_seconds=reminders)
    _, c = world.verified_user(interval_seconds=10 * DAY, reminders_seconds=reminders)
    _, d = world.verified_user(interval_seconds=20 * DAY, reminders_seconds=reminders)
    world.tick()
    # The scheduler is down from day 1 to day 20 and a half.
    world.advance(19.5 * DAY)
    report = world.tick(batch=2)
    report.order += world.tick(batch=2).order
    assert report.order == [a, c, b, d]
    for overdue in (a, b, c):
        # Only the overdue notice: the upcoming reminders no longer make sense.
        assert [s for _, s, _ in steps(world, overdue)] == [3]
        doc = world.switch(overdue)
        assert doc["grace_ends_at"] == world.now + timedelta(seconds=doc["grace_seconds"])
    # Day 21's switch: its three-day and one-day reminders both passed; only the latter goes.
    assert [s for _, s, _ in steps(world, d)] == [1]
    assert missed(world) == []


def test_after_downtime_switches_already_past_grace_fire_in_deadline_order(world):
    _, a = world.verified_user(interval_seconds=DAY, grace_seconds=DAY)
    world.advance(HOUR)
    _, b = world.verified_user(interval_seconds=DAY, grace_seconds=DAY)
    world.advance(DAY)
    world.tick()
    assert world.switch(a)["state"] == world.switch(b)["state"] == OVERDUE
    world.advance(10 * DAY)
    world.tick()
    assert [e["data"]["switch_id"] for e in missed(world)] == [a, b]


# --- liveness ---------------------------------------------------------------------------------


def test_the_loop_records_a_heartbeat_and_its_lag_is_the_oldest_due_switch(world):
    assert liveness(world.repo, world.now)["heartbeat_age_seconds"] is None
    _, _switch_id = world.verified_user(interval_seconds=HOUR, reminders_seconds=[])
    world.tick(instance="i-1")
    world.advance(HOUR + 42)
    figures = liveness(world.repo, world.now)
    assert figures["heartbeat_age_seconds"] == HOUR + 42
    assert figures["instance"] == "i-1"
    assert figures["lag_seconds"] == 42
    assert figures["due_switches"] == 1
    assert figures["held_back_switches"] == 0
    world.tick(instance="i-2")
    figures = liveness(world.repo, world.now)
    assert (figures["heartbeat_age_seconds"], figures["lag_seconds"]) == (0, 0)


def test_a_switch_that_fails_to_be_handled_is_retried_after_its_lease(world, monkeypatch):
    _, switch_id = world.verified_user(interval_seconds=HOUR, reminders_seconds=[])
    world.advance(HOUR)
    original = world.repo.become_overdue

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(world.repo, "become_overdue", broken)
    assert world.tick().errors == 1
    monkeypatch.setattr(world.repo, "become_overdue", original)
    world.advance(29)
    world.tick()
    assert world.switch(switch_id)["state"] == ARMED
    world.advance(1)
    world.tick()
    assert world.switch(switch_id)["state"] == OVERDUE


def test_ids_are_stable_per_user_and_slot():
    user = str(uuid.uuid4())
    assert switch_id_for(user, 0) == switch_id_for(user, 0) != switch_id_for(user, 1)
    assert uuid.UUID(switch_id_for(user, 0))
