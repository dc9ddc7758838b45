"""The census of switches by state behind /metrics and /readyz: every switch counted once,
in slices, stored only when complete, reported with its age, and never replaced by an
older one."""

from __future__ import annotations

import uuid

import pytest

from services.scheduler import census
from services.scheduler.loop import liveness
from services.scheduler.switches import STATES
from tests.unit.scheduler_world import World

HOUR, DAY = 3600, 86_400


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.close()


def some_switches_in_each_state(world: World) -> None:
    for _ in range(3):
        world.registered_user()  # unarmed: the address is not verified yet
    for _ in range(4):
        world.verified_user(interval_seconds=DAY)
    for _ in range(2):
        world.verified_user(interval_seconds=HOUR, reminders_seconds=[])
    world.advance(HOUR)
    world.tick()  # the two one-hour switches are overdue now


def test_the_census_counts_every_switch_once_by_state(world):
    some_switches_in_each_state(world)
    taken = census.take(world.repo, world.clock.now, "i-1")
    assert taken.counts == world.repo.count_by_state()
    assert taken.counts == {"unarmed": 3, "armed": 4, "overdue": 2, "fired": 0,
                            "released": 0, "paused": 0}


def test_every_id_falls_in_exactly_one_slice():
    ids = [str(uuid.uuid4()) for _ in range(500)] + ["", "0", "00", "ff", "fg", "zz", "__x"]
    ranges = census.id_ranges()
    for switch_id in ids:
        holding = [(low, high) for low, high in ranges
                   if (low is None or switch_id >= low) and (high is None or switch_id < high)]
        assert len(holding) == 1, switch_id


def test_readyz_and_metrics_report_the_last_complete_census_and_its_age(world):
    some_switches_in_each_state(world)
    figures = liveness(world.repo, world.now)
    assert (figures["switches"], figures["switches_census"]) == ({}, None)
    census.take(world.repo, world.clock.now, "i-1")
    world.advance(30)
    world.verified_user(interval_seconds=DAY)  # not counted until the next census
    figures = liveness(world.repo, world.now)
    assert figures["switches"]["armed"] == 4
    assert figures["switches_census"]["age_seconds"] == 30
    assert figures["switches_census"]["by"] == "i-1"


def test_the_figures_never_count_all_switches_at_the_time_of_asking(world, monkeypatch):
    some_switches_in_each_state(world)
    census.take(world.repo, world.clock.now, "i-1")

    def counted(*args, **kwargs):
        raise AssertionError("liveness counted switches by state")

    monkeypatch.setattr(world.repo, "count_by_state", counted)
    monkeypatch.setattr(world.repo, "count_slice", counted)
    assert liveness(world.repo, world.now)["switches"]["overdue"] == 2


def test_a_census_cut_short_leaves_the_last_complete_one_in_place(world):
    some_switches_in_each_state(world)
    census.take(world.repo, world.clock.now, "i-1")
    world.advance(census.CENSUS_EVERY.total_seconds())
    world.verified_user(interval_seconds=DAY)
    slices = []

    def stopped_halfway():
        slices.append(1)
        if len(slices) == len(census.SLICES) // 2:
            raise RuntimeError("the process is stopping")

    with pytest.raises(RuntimeError):
        census.take(world.repo, world.clock.now, "i-2", pause=stopped_halfway)
    last = census.last(world.repo)
    assert (last.by, last.counts["armed"]) == ("i-1", 4)
    assert census.due(world.repo, world.now)


def test_a_census_that_started_earlier_but_ended_later_does_not_replace_a_newer_one(world):
    some_switches_in_each_state(world)
    started = world.now
    world.advance(5)
    census.take(world.repo, world.clock.now, "newer")
    world.repo.record_census(dict.fromkeys(STATES, 0), started, world.now, "older")
    assert census.last(world.repo).by == "newer"


def test_a_census_is_due_when_none_was_taken_and_a_minute_after_the_last_started(world):
    assert census.due(world.repo, world.now)
    census.take(world.repo, world.clock.now, "i-1")
    world.advance(census.CENSUS_EVERY.total_seconds() - 1)
    assert not census.due(world.repo, world.now)
    world.advance(1)
    assert census.due(world.repo, world.now)
    census.take(world.repo, world.clock.now, "i-2")
    assert census.last(world.repo).started_at == world.now


def test_each_count_of_the_census_is_answered_from_the_index(world):
    plan = world.repo.switches.query_plan({"state": "armed", "_id": {"$gte": "10", "$lt": "11"}})
    assert any("USING INDEX ix_switches_" in step and "id>" in step for step in plan), plan
