"""The owner's side of the switch over a real embedded store: switches created and armed,
check-ins, settings, pauses, plans, the one-click link and the vault's release hook."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from services.scheduler.scheduler import CHECKINS_PER_USER, switch_id_for
from services.scheduler.schemas import ReleasedSwitch
from services.scheduler.switches import ARMED, FIRED, OVERDUE, PAUSED, RELEASED, UNARMED
from services.scheduler.tokens import LINK_MARGIN, issue
from shared.errors import Conflict, Gone, InvalidInput, NotFound, PaymentRequired, RateLimited
from tests.unit.scheduler_world import CLIENT, World

MINUTE = 60


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.close()


def fire(world: World, user_id: str, switch_id: str) -> None:
    """Leave the switch alone until it fires."""
    doc = world.switch(switch_id)
    world.clock.set(doc["deadline"])
    world.tick()
    world.clock.set(world.switch(switch_id)["grace_ends_at"])
    world.tick()
    assert world.switch(switch_id)["state"] == FIRED


def last_link(world: World, switch_id: str) -> str:
    return world.events("ReminderDue", switch_id)[-1]["data"]["checkin_token"]


# --- created, armed ------------------------------------------------------------------------


def test_a_registration_creates_one_unarmed_default_switch_even_if_redelivered(world):
    user_id = world.registered_user()
    world.scheduler().on_user_registered(user_id, "again@example.org")
    [switch] = world.scheduler().list(user_id).switches
    assert switch.id == switch_id_for(user_id, 0)
    assert switch.state == UNARMED
    assert switch.deadline is None


def test_an_unverified_owner_never_gets_a_reminder_however_long_we_wait(world):
    user_id = world.registered_user()
    for _ in range(5):
        world.advance(400 * 86_400)
        world.tick()
    assert world.events() == []
    assert world.scheduler().list(user_id).switches[0].state == UNARMED


def test_verifying_the_address_arms_the_default_switch(world):
    user_id, switch_id = world.verified_user()
    switch = world.scheduler().get(user_id, switch_id)
    assert switch.state == ARMED
    assert switch.deadline == world.now + timedelta(seconds=switch.interval_seconds)
    assert world.switch(switch_id)["email"] == f"{user_id[:8]}@example.org"


def test_a_verification_that_overtakes_the_registration_arms_a_switch_all_the_same(world):
    user_id = str(uuid.uuid4())
    world.scheduler().on_email_verified(user_id, "early@example.org")
    world.scheduler().on_user_registered(user_id, "early@example.org")
    world.scheduler().on_email_verified(user_id, "early@example.org")
    [switch] = world.scheduler().list(user_id).switches
    assert switch.state == ARMED
    assert switch.cycle == 1


def test_reminders_go_to_the_verified_address(world):
    user_id = world.registered_user()
    world.scheduler().on_email_verified(user_id, "verified@example.org")
    world.advance(30 * 86_400)
    world.tick()
    assert {e["data"]["email"] for e in world.events("ReminderDue")} == {"verified@example.org"}


# --- checking in ----------------------------------------------------------------------------


def test_a_check_in_moves_the_deadline_starts_a_cycle_and_announces_it(world):
    user_id, switch_id = world.verified_user(interval_seconds=10 * MINUTE)
    world.advance(5 * MINUTE)
    result = world.check_in(user_id)
    [moved] = result.switches
    assert moved.id == switch_id
    assert moved.deadline == world.now + timedelta(minutes=10)
    assert moved.cycle == 3  # armed (1), settings (2), check-in (3)
    assert moved.last_checkin_at == world.now
    [event] = world.events("CheckedIn")[-1:]
    assert event["data"]["cycle"] == 3
    assert event["data"]["method"] == "api"


def test_a_check_in_while_overdue_returns_the_switch_to_armed(world):
    user_id, switch_id = world.verified_user(interval_seconds=10 * MINUTE)
    world.advance(10 * MINUTE)
    world.tick()
    assert world.switch(switch_id)["state"] == OVERDUE
    [moved] = world.check_in(user_id, switch_id).switches
    assert moved.state == ARMED
    assert moved.grace_ends_at is None
    assert moved.deadline == world.now + timedelta(minutes=10)


def test_a_check_in_that_raced_the_overdue_notice_reads_again_and_lands(world, monkeypatch):
    user_id, switch_id = world.verified_user(interval_seconds=10 * MINUTE)
    world.advance(10 * MINUTE)
    stale = world.switch(switch_id)  # the owner's request read the switch still armed...
    world.tick()  # ...then the loop made it overdue
    reads = []
    real_read = world.repo.switch

    def read(i):
        reads.append(i)
        return real_read(i)

    monkeypatch.setattr(world.repo, "switches_of", lambda owner: [stale])
    monkeypatch.setattr(world.repo, "switch", read)
    [moved] = world.check_in(user_id).switches
    assert len(reads) == 1  # the write on the stale read missed; a new read saw it overdue
    assert moved.state == ARMED
    assert moved.cycle == stale["cycle"] + 1
    assert world.events("CheckInMissed") == []


def test_checking_in_everything_skips_a_busy_switch_and_checks_in_the_others(world,
                                                                            monkeypatch):
    user_id, first = world.verified_user()
    world.plan(user_id, switches=3)
    busy = world.create(user_id).id
    last = world.create(user_id).id
    real_write = world.repo.start_cycle

    def write(switch, fields, **kwargs):
        # The busy switch changes under every attempt (the loop keeps winning the race).
        return None if switch.id == busy else real_write(switch, fields, **kwargs)

    monkeypatch.setattr(world.repo, "start_cycle", write)
    answer = world.check_in(user_id)
    assert {s.id for s in answer.switches} == {first, last}
    [skipped] = answer.skipped
    assert (skipped.id, skipped.state, skipped.reason) == (busy, ARMED, "busy")


def test_a_check_in_after_firing_is_a_409_naming_the_state(world):
    user_id, switch_id = world.verified_user(interval_seconds=10 * MINUTE)
    fire(world, user_id, switch_id)
    for target in (switch_id, None):
        with pytest.raises(Conflict) as refused:
            world.check_in(user_id, target)
        assert refused.value.code == "switch_fired"
    assert refused.value.details["state"] == FIRED
    assert world.switch(switch_id)["state"] == FIRED


def test_a_check_in_before_verification_is_a_409_saying_what_to_do(world):
    user_id = world.registered_user()
    with pytest.raises(Conflict) as refused:
        world.check_in(user_id)
    assert refused.value.code == "email_not_verified"
    assert "verify" in refused.value.message


def test_another_users_switch_does_not_exist_for_you(world):
    _owner, switch_id = world.verified_user()
    intruder, _ = world.verified_user()
    before = world.switch(switch_id)
    for attempt in (
        lambda: world.scheduler().get(intruder, switch_id),
        lambda: world.check_in(intruder, switch_id),
        lambda: world.update(intruder, switch_id, interval_seconds=86_400),
    ):
        with pytest.raises(NotFound):
            attempt()
    assert world.switch(switch_id) == before


def test_checking_in_everything_moves_running_switches_and_skips_paused_ones(world):
    world.plan("u", switches=3)
    user_id, first = world.verified_user("u")
    second = world.create(user_id).id
    world.update(user_id, second, paused_until=(world.now + timedelta(days=3)).isoformat())
    result = world.check_in(user_id)
    assert [s.id for s in result.switches] == [first]
    assert [(s.id, s.state) for s in result.skipped] == [(second, PAUSED)]


def test_checking_in_is_rate_limited_per_user_but_generously(world):
    user_id, _ = world.verified_user()
    for _ in range(CHECKINS_PER_USER.count):
        world.check_in(user_id)
    with pytest.raises(RateLimited):
        world.check_in(user_id)


def test_a_check_in_over_the_limit_moves_nothing(world):
    user_id, switch_id = world.verified_user()
    for _ in range(CHECKINS_PER_USER.count):
        world.check_in(user_id, switch_id)
    cycle = world.switch(switch_id)["cycle"]
    announced = len(world.events("CheckedIn", switch_id))
    with pytest.raises(RateLimited):
        world.check_in(user_id, switch_id)
    assert world.switch(switch_id)["cycle"] == cycle
    assert len(world.events("CheckedIn", switch_id)) == announced


def refused_until_the_limit(world: World, user_id: str, switch_id: str,
                            refusal: type[Exception]) -> None:
    """Check in until the per-user limit, each try refused with `refusal`; the next one
    is refused for the limit."""
    for _ in range(CHECKINS_PER_USER.count):
        with pytest.raises(refusal):
            world.check_in(user_id, switch_id)
    with pytest.raises(RateLimited):
        world.check_in(user_id, switch_id)


def test_check_ins_refused_for_another_users_switch_still_count_against_the_limit(world):
    prober, _ = world.verified_user("prober")
    _, someone_elses = world.verified_user("owner")
    refused_until_the_limit(world, prober, someone_elses, NotFound)


def test_check_ins_of_a_fired_switch_still_count_against_the_limit(world):
    user_id, switch_id = world.verified_user()
    fire(world, user_id, switch_id)
    refused_until_the_limit(world, user_id, switch_id, Conflict)


# --- settings ---------------------------------------------------------------------------


def test_changing_the_settings_of_a_running_switch_is_proof_of_life(world):
    user_id, switch_id = world.verified_user()
    world.advance(29 * 86_400)
    updated = world.update(user_id, switch_id, grace_seconds=3 * 86_400)
    assert updated.deadline == world.now + timedelta(days=30)
    assert updated.grace_seconds == 3 * 86_400
    assert world.events("CheckedIn", switch_id)[-1]["data"]["deadline"].startswith(
        updated.deadline.isoformat()[:19])


def test_a_settings_change_never_makes_a_switch_overdue_or_fire(world):
    user_id, switch_id = world.verified_user(interval_seconds=10 * MINUTE)
    world.advance(10 * MINUTE)
    world.tick()
    world.advance(world.switch(switch_id)["grace_seconds"] - 1)
    assert world.switch(switch_id)["state"] == OVERDUE
    # One second before firing, the owner shortens everything to the minimum.
    world.update(user_id, switch_id, interval_seconds=MINUTE, grace_seconds=MINUTE)
    world.tick()
    assert world.switch(switch_id)["state"] == ARMED
    assert world.events("CheckInMissed") == []


def test_an_unarmed_switch_can_be_configured_and_keeps_its_settings_when_armed(world):
    user_id = world.registered_user()
    switch_id = switch_id_for(user_id, 0)
    world.update(user_id, switch_id, interval_seconds=2 * 86_400, reminders_seconds=[3600])
    assert world.switch(switch_id)["state"] == UNARMED
    world.scheduler().on_email_verified(user_id, "a@example.org")
    switch = world.scheduler().get(user_id, switch_id)
    assert (switch.state, switch.interval_seconds, switch.reminders_seconds) == (
        ARMED, 2 * 86_400, [3600])
    assert switch.deadline == world.now + timedelta(days=2)


def test_settings_below_the_configured_minimum_are_refused_and_nothing_changes(world):
    user_id, switch_id = world.verified_user()
    before = world.switch(switch_id)
    with pytest.raises(InvalidInput) as refused:
        world.update(user_id, switch_id, interval_seconds=59)
    assert refused.value.details == {"field": "interval_seconds", "minimum": 60}
    assert world.switch(switch_id) == before


def test_a_fired_switch_can_no_longer_be_configured(world):
    user_id, switch_id = world.verified_user(interval_seconds=10 * MINUTE)
    fire(world, user_id, switch_id)
    with pytest.raises(Conflict):
        world.update(user_id, switch_id, paused_until=(world.now + timedelta(days=1)).isoformat())


# --- pauses -----------------------------------------------------------------------------


def test_a_pause_stops_the_clock_and_its_end_rearms_with_a_fresh_deadline(world):
    user_id, switch_id = world.verified_user(interval_seconds=10 * MINUTE)
    until = world.now + timedelta(days=20)
    paused = world.update(user_id, switch_id, paused_until=until.isoformat())
    assert (paused.state, paused.deadline, paused.paused_until) == (PAUSED, None, until)
    world.clock.set(until - timedelta(seconds=1))
    world.tick()
    assert world.events("ReminderDue") == []
    world.clock.set(until)
    world.tick()
    switch = world.scheduler().get(user_id, switch_id)
    assert (switch.state, switch.paused_until) == (ARMED, None)
    assert switch.deadline == until + timedelta(minutes=10)


def test_clearing_a_pause_rearms_at_once(world):
    user_id, switch_id = world.verified_user(interval_seconds=10 * MINUTE)
    world.update(user_id, switch_id, paused_until=(world.now + timedelta(days=2)).isoformat())
    world.advance(3600)
    resumed = world.update(user_id, switch_id, paused_until=None)
    assert resumed.state == ARMED
    assert resumed.deadline == world.now + timedelta(minutes=10)


def test_pausing_an_overdue_switch_keeps_it_from_firing(world):
    user_id, switch_id = world.verified_user(interval_seconds=10 * MINUTE)
    world.advance(10 * MINUTE)
    world.tick()
    world.update(user_id, switch_id, paused_until=(world.now + timedelta(days=10)).isoformat())
    world.advance(world.switch(switch_id)["grace_seconds"] + 1)
    world.tick()
    assert world.switch(switch_id)["state"] == PAUSED
    assert world.events("CheckInMissed") == []


# --- plans ------------------------------------------------------------------------------


def test_the_free_plan_allows_one_switch_and_a_second_is_a_402_naming_the_limit(world):
    user_id, _ = world.verified_user()
    with pytest.raises(PaymentRequired) as refused:
        world.create(user_id)
    assert refused.value.code == "plan_limit_reached"
    assert refused.value.details == {"limit": "switches", "allowed": 1, "wanted": 2,
                                     "plan": "free"}
    assert len(world.scheduler().list(user_id).switches) == 1


def test_bad_settings_for_a_new_switch_are_refused_before_the_plan_is_considered(world):
    user_id, _ = world.verified_user()
    with pytest.raises(InvalidInput) as refused:
        world.create(user_id, grace_seconds=1)
    assert refused.value.details["field"] == "grace_seconds"


def test_a_paid_plan_allows_more_switches_armed_at_once_for_a_verified_owner(world):
    user_id, _ = world.verified_user()
    world.plan(user_id, switches=3)
    created = [world.create(user_id, interval_seconds=86_400) for _ in range(2)]
    assert [s.state for s in created] == [ARMED, ARMED]
    assert created[0].deadline == world.now + timedelta(days=1)
    with pytest.raises(PaymentRequired):
        world.create(user_id)


def test_an_older_plan_event_never_overwrites_a_newer_one(world):
    user_id, _ = world.verified_user()
    world.plan(user_id, revision=2, switches=3)
    world.plan(user_id, revision=1, plan="free", switches=1)
    assert world.repo.entitlements.get(user_id).allowed("switches") == 3
    assert [world.create(user_id).state for _ in range(2)] == [ARMED, ARMED]


def test_a_lapsed_payment_blocks_new_switches_but_never_stops_a_release(world):
    user_id, switch_id = world.verified_user(interval_seconds=10 * MINUTE)
    world.plan(user_id, revision=1, switches=3)
    second = world.create(user_id, interval_seconds=10 * MINUTE).id
    world.advance(1)
    # Stripe is still retrying the payment: billing keeps the plan meanwhile.
    world.plan(user_id, revision=2, status="past_due", switches=3)
    world.advance(1)
    world.plan(user_id, revision=3, plan="free", status="canceled", switches=1)
    with pytest.raises(PaymentRequired):
        world.create(user_id)
    fire(world, user_id, switch_id)
    world.tick()
    assert world.switch(second)["state"] == FIRED
    fired = {e["data"]["switch_id"] for e in world.events("CheckInMissed")}
    assert fired == {switch_id, second}


# --- the one-click link -----------------------------------------------------------------------


def reminded(world: World, minutes: int = 10):
    user_id, switch_id = world.verified_user(interval_seconds=minutes * MINUTE,
                                             reminders_seconds=[MINUTE])
    world.advance((minutes - 1) * MINUTE)
    world.tick()
    return user_id, switch_id, last_link(world, switch_id)


def test_a_link_checks_in_the_switch_it_was_sent_for(world):
    _user_id, switch_id, token = reminded(world)
    cycle = world.switch(switch_id)["cycle"]
    answer = world.scheduler().check_in_by_link(token, CLIENT)
    assert answer.status == "checked_in"
    switch = world.switch(switch_id)
    assert switch["cycle"] == cycle + 1
    assert answer.deadline == switch["deadline"] == world.now + timedelta(minutes=10)
    assert world.events("CheckedIn", switch_id)[-1]["data"]["method"] == "link"


def test_a_link_works_once(world):
    _, _, token = reminded(world)
    world.scheduler().check_in_by_link(token, CLIENT)
    with pytest.raises(Gone) as refused:
        world.scheduler().check_in_by_link(token, CLIENT)
    assert refused.value.code == "link_used"


def test_a_link_is_stale_once_the_owner_checked_in_another_way(world):
    user_id, _, token = reminded(world)
    world.check_in(user_id)
    with pytest.raises(Gone):
        world.scheduler().inspect_link(token, CLIENT)


def test_a_link_expires_a_day_after_its_grace_period(world):
    user_id, switch_id, token = reminded(world)
    doc = world.switch(switch_id)
    world.update(user_id, switch_id, paused_until=(world.now + timedelta(days=1)).isoformat())
    expiry = doc["deadline"] + timedelta(seconds=doc["grace_seconds"]) + LINK_MARGIN
    world.clock.set(expiry)
    with pytest.raises(Gone) as refused:
        world.scheduler().inspect_link(token, CLIENT)
    assert refused.value.code == "link_expired"


def test_an_expired_link_cannot_check_in_even_in_its_own_cycle(world):
    _user_id, switch_id = world.verified_user(interval_seconds=10 * MINUTE)
    doc = world.switch(switch_id)
    token = issue(world.key, switch_id, doc["cycle"], world.now - timedelta(seconds=1))
    with pytest.raises(Gone):
        world.scheduler().check_in_by_link(token, CLIENT)
    assert world.switch(switch_id)["cycle"] == doc["cycle"]


@pytest.mark.parametrize("token", ["nonsense", "A" * 82])
def test_a_forged_link_is_not_found(world, token):
    with pytest.raises(NotFound) as refused:
        world.scheduler().check_in_by_link(token, CLIENT)
    assert refused.value.code == "invalid_link"


def test_a_link_for_another_switch_id_is_not_found(world):
    token = issue(world.key, str(uuid.uuid4()), 1, world.now + timedelta(days=1))
    with pytest.raises(NotFound):
        world.scheduler().inspect_link(token, CLIENT)


def test_a_link_after_firing_is_a_409_saying_so(world):
    _user_id, switch_id, token = reminded(world)
    world.clock.set(world.switch(switch_id)["deadline"])
    world.tick()
    world.clock.set(world.switch(switch_id)["grace_ends_at"])
    world.tick()
    with pytest.raises(Conflict) as refused:
        world.scheduler().check_in_by_link(token, CLIENT)
    assert refused.value.code == "switch_fired"


def test_looking_at_a_link_changes_nothing(world):
    _, switch_id, token = reminded(world)
    before = world.repo.switches.get(switch_id)
    for _ in range(3):
        assert world.scheduler().inspect_link(token, CLIENT).status == "valid"
    assert world.repo.switches.get(switch_id) == before


# --- the vault's hook ---------------------------------------------------------------------


def test_mark_released_moves_a_fired_switch_to_released_and_is_idempotent(world):
    user_id, switch_id = world.verified_user(interval_seconds=10 * MINUTE)
    fire(world, user_id, switch_id)
    cycle = world.switch(switch_id)["cycle"]
    first = world.scheduler().mark_released(switch_id, cycle)
    again = world.scheduler().mark_released(switch_id, cycle)
    assert first == again == {"switch_id": switch_id, "cycle": cycle, "state": RELEASED}
    with pytest.raises(Conflict):
        world.check_in(user_id, switch_id)


def test_mark_released_refuses_a_switch_that_did_not_fire(world):
    _, switch_id = world.verified_user()
    with pytest.raises(Conflict) as refused:
        world.scheduler().mark_released(switch_id, world.switch(switch_id)["cycle"])
    assert refused.value.details["state"] == ARMED
    with pytest.raises(NotFound):
        world.scheduler().mark_released(str(uuid.uuid4()), 1)


def test_the_vault_marks_many_switches_at_once_and_learns_which_were_refused(world):
    fired_user, fired_id = world.verified_user(interval_seconds=10 * MINUTE)
    fire(world, fired_user, fired_id)
    _, armed_id = world.verified_user()
    unknown_id = str(uuid.uuid4())
    releases = [ReleasedSwitch(switch_id=fired_id, cycle=world.switch(fired_id)["cycle"]),
                ReleasedSwitch(switch_id=armed_id, cycle=world.switch(armed_id)["cycle"]),
                ReleasedSwitch(switch_id=unknown_id, cycle=1)]
    answers = world.scheduler().mark_all_released(releases)
    assert answers[fired_id] is None
    assert world.switch(fired_id)["state"] == RELEASED
    assert answers[armed_id].startswith("not_fired:")
    assert world.switch(armed_id)["state"] == ARMED, "a switch that did not fire stays as it was"
    assert answers[unknown_id].startswith("switch_not_found:")
    assert world.scheduler().mark_all_released(releases[:1]) == {fired_id: None}, "idempotent"


# --- the vault's questions ------------------------------------------------------------------


def test_the_default_switch_id_is_known_before_the_switch_is_stored(world):
    user_id = str(uuid.uuid4())
    expected = world.scheduler().default_switch_id(user_id)
    world.registered_user(user_id)
    assert [s.id for s in world.scheduler().list(user_id).switches] == [expected]


def test_an_owner_may_write_to_a_running_or_unarmed_switch(world):
    unarmed = world.registered_user()
    verified, switch_id = world.verified_user()
    assert world.scheduler().owns_switch(unarmed, switch_id_for(unarmed, 0))
    assert world.scheduler().owns_switch(verified, switch_id)
    world.update(verified, switch_id, paused_until=(world.now + timedelta(days=3)).isoformat())
    assert world.scheduler().owns_switch(verified, switch_id)


def test_nobody_may_write_to_another_users_switch_or_one_that_does_not_exist(world):
    owner, switch_id = world.verified_user()
    intruder, _ = world.verified_user()
    assert not world.scheduler().owns_switch(intruder, switch_id)
    assert not world.scheduler().owns_switch(owner, str(uuid.uuid4()))
    assert not world.scheduler().owns_switch(owner, switch_id_for(owner, 1))


def test_a_switch_that_fired_or_was_released_takes_no_more_messages(world):
    user_id, switch_id = world.verified_user(interval_seconds=10 * MINUTE)
    fire(world, user_id, switch_id)
    assert world.switch(switch_id)["state"] == FIRED
    assert not world.scheduler().owns_switch(user_id, switch_id)
    world.scheduler().mark_released(switch_id, world.switch(switch_id)["cycle"])
    assert not world.scheduler().owns_switch(user_id, switch_id)
