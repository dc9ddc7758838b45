"""Property test of the switch: random sequences of check-ins, pauses, settings changes,
clock jumps and loop ticks, driven through the real domain code over a real embedded
store (delivery answers "sent").

A small model follows the owner's last proof of life and predicts the one moment the
switch must fire. The invariants are the design's hard rules:
- never fired while the owner checked in within interval + grace;
- fired exactly once otherwise, at the first tick the model says it must;
- a reminder is emitted at most once per (cycle, step).
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from services.scheduler.switches import FIRED, OVERDUE, PAUSED
from shared.errors import Conflict
from tests.unit.scheduler_world import World

MINUTE, HOUR, DAY = 60, 3600, 86_400

intervals = st.integers(min_value=MINUTE, max_value=3 * DAY)
graces = st.integers(min_value=MINUTE, max_value=2 * DAY)
reminder_sets = st.lists(st.sampled_from([30, MINUTE, HOUR, 6 * HOUR, DAY]), unique=True,
                         max_size=3)
jumps = st.one_of(st.integers(min_value=1, max_value=10 * MINUTE),
                  st.integers(min_value=1, max_value=4 * DAY))


class SwitchMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="switch-machine-"))
        self.world = World(self.dir, min_interval=MINUTE)

    @initialize(interval=intervals, grace=graces, reminders=reminder_sets)
    def owner_signs_up_and_verifies(self, interval, grace, reminders):
        reminders = [r for r in reminders if r < interval]
        self.user_id, self.switch_id = self.world.verified_user(
            interval_seconds=interval, grace_seconds=grace, reminders_seconds=reminders)
        self.interval, self.grace = interval, grace
        self.alive_at: datetime = self.world.now  # the last proof of life
        self.paused_until: datetime | None = None
        self.overdue_at: datetime | None = None
        self.must_have_fired = False

    # The owner ------------------------------------------------------------------------

    @rule()
    def check_in(self):
        try:
            self.world.check_in(self.user_id, self.switch_id)
        except Conflict as refused:
            assert refused.code == ("switch_fired" if self.must_have_fired else "switch_paused")
            return
        assert not self.must_have_fired and self.paused_until is None
        self.alive()

    @rule(interval=intervals, grace=graces)
    def change_settings(self, interval, grace):
        try:
            self.world.update(self.user_id, self.switch_id, interval_seconds=interval,
                              grace_seconds=grace, reminders_seconds=[])
        except Conflict:
            assert self.must_have_fired
            return
        assert not self.must_have_fired
        self.interval, self.grace = interval, grace
        if self.paused_until is not None and self.world.now >= self.paused_until:
            self.paused_until = None  # the pause had run out: this change re-arms at once
        if self.paused_until is None:
            self.alive()

    @rule(length=st.integers(min_value=1, max_value=3 * DAY))
    def pause(self, length):
        until = self.world.now + timedelta(seconds=length)
        try:
            self.world.update(self.user_id, self.switch_id, paused_until=until.isoformat())
        except Conflict:
            assert self.must_have_fired
            return
        self.paused_until = until
        self.overdue_at = None

    @rule()
    def resume(self):
        try:
            self.world.update(self.user_id, self.switch_id, paused_until=None)
        except Conflict:
            assert self.must_have_fired
            return
        self.paused_until = None
        self.alive()

    def alive(self) -> None:
        self.alive_at = self.world.now
        self.overdue_at = None

    # Time and the loop ---------------------------------------------------------------

    @rule(seconds=jumps)
    def time_passes_and_the_loop_runs(self, seconds):
        self.world.advance(seconds)
        self.tick()

    @rule(offset=st.sampled_from([-1, 0, 1]))
    def the_loop_runs_at_the_edge_of_the_next_moment_that_matters(self, offset):
        """A second before, on, or a second after the next deadline, end of grace or end of
        pause: off-by-one mistakes live there."""
        target = self.next_boundary() + timedelta(seconds=offset)
        if target > self.world.now:
            self.world.clock.set(target)
        self.tick()

    @rule(seconds=jumps)
    def the_scheduler_is_down_while_time_passes(self, seconds):
        self.world.advance(seconds)

    def next_boundary(self) -> datetime:
        if self.paused_until is not None:
            return self.paused_until
        if self.overdue_at is not None:
            return self.overdue_at + timedelta(seconds=self.grace)
        return self.alive_at + timedelta(seconds=self.interval)

    def tick(self) -> None:
        now = self.world.now
        self.predict_tick(now)
        self.world.tick()
        fired = self.world.switch(self.switch_id)["state"] == FIRED
        assert fired == self.must_have_fired, (self.world.switch(self.switch_id), now)

    def predict_tick(self, now: datetime) -> None:
        """What the model says this tick does."""
        if self.must_have_fired:
            return
        if self.paused_until is not None:
            if now < self.paused_until:
                return
            self.paused_until = None  # the loop resumes the switch at this tick
            self.alive_at, self.overdue_at = now, None
            return
        if self.overdue_at is None:
            if now >= self.alive_at + timedelta(seconds=self.interval):
                self.overdue_at = now  # grace counts from the overdue notice
            return
        if now >= self.overdue_at + timedelta(seconds=self.grace):
            self.must_have_fired = True

    # The hard rules ------------------------------------------------------------------

    @invariant()
    def never_fired_while_the_owner_checked_in_within_interval_and_grace(self):
        if not hasattr(self, "switch_id"):
            return
        doc = self.world.switch(self.switch_id)
        if doc["state"] == FIRED:
            quiet = doc["fired_at"] - self.alive_at
            assert quiet >= timedelta(seconds=self.interval + self.grace)

    @invariant()
    def fired_exactly_once_or_not_at_all(self):
        if not hasattr(self, "switch_id"):
            return
        missed = self.world.events("CheckInMissed")
        doc = self.world.switch(self.switch_id)
        assert len(missed) == (1 if doc["state"] == FIRED else 0)
        if doc["state"] != FIRED:
            assert doc["state"] == (PAUSED if self.paused_until else doc["state"])
            assert doc["state"] != OVERDUE or self.overdue_at is not None

    @invariant()
    def each_reminder_is_emitted_at_most_once_per_cycle(self):
        keys = [(e["data"]["cycle"], e["data"]["step"]) for e in self.world.events("ReminderDue")]
        assert len(keys) == len(set(keys))

    def teardown(self) -> None:
        self.world.close()
        shutil.rmtree(self.dir, ignore_errors=True)


SwitchMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_the_switch_never_fires_falsely_and_never_fails_to_fire = SwitchMachine.TestCase
