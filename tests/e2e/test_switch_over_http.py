"""The switch end to end, through `make run`'s processes with seconds-long settings:
gunicorn serving the gateway, accounts, delivery and the scheduler under nameko, RabbitMQ
between them, the dev SMTP sink, real clocks. Owners verify their address through the
mailed link, and a switch fires only once delivery says its overdue notice left.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
import requests

from tests.e2e.conftest import start_system, system_environment
from tests.e2e.people import Sender
from tests.e2e.switch_system import SECONDS_LONG, when
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def switch_system(tmp_path_factory, vhost):
    tmp = tmp_path_factory.mktemp("switches")
    environ = system_environment(tmp, vhost, "accounts,delivery,scheduler", **SECONDS_LONG)
    system = start_system(tmp, environ)
    yield system
    system.supervisor.stop_all()


def test_a_switch_checked_in_on_time_never_fires(switch_system):
    owner = Sender(switch_system, verified=True)
    owner.configure(interval_seconds=3, grace_seconds=3, reminders_seconds=[])
    def overdue() -> dict | None:
        switch = owner.switch()
        return switch if switch["state"] == "overdue" else None

    for _ in range(3):
        # The owner is late every time: they check in only once the switch is overdue.
        late = wait_for(overdue, timeout=20, interval=0.1, what="the switch to be overdue")
        checked_in = owner.check_in()
        assert checked_in.status_code == 200, checked_in.text
        [moved] = checked_in.json()["switches"]
        assert moved["state"] == "armed"
        assert moved["cycle"] == late["cycle"] + 1
        assert when(moved["deadline"]) > when(late["deadline"])
    fired = switch_system.query(
        "scheduler", "SELECT count(*) FROM switches WHERE json_extract(doc, '$.fired_at') "
        "IS NOT NULL AND json_extract(doc, '$.user_id') = ?", (owner.id,))
    assert fired == [(0,)]
    assert owner.switch()["state"] == "armed"


def test_a_switch_left_alone_fires_after_interval_plus_grace_and_not_before(switch_system):
    owner = Sender(switch_system, verified=True)
    configured_at = time.monotonic()
    switch = owner.configure(interval_seconds=3, grace_seconds=3, reminders_seconds=[1])
    seen = [owner.switch()["state"]]

    def fired():
        state = owner.switch()["state"]
        if state != seen[-1]:
            seen.append(state)
        return state == "fired"

    wait_for(fired, timeout=40, interval=0.1, what="the switch to fire")
    waited = time.monotonic() - configured_at
    assert seen == ["armed", "overdue", "fired"]
    done = owner.switch()
    assert when(done["fired_at"]) >= when(switch["deadline"]) + timedelta(seconds=3)
    assert waited >= 6 - 0.5  # interval plus grace, give or take the two clocks' reading
    refused = owner.check_in()
    assert refused.status_code == 409
    assert refused.json()["error"]["details"]["state"] == "fired"


def test_readiness_and_metrics_show_the_loop_alive(switch_system):
    ready = requests.get(switch_system.url("/readyz"), timeout=10).json()
    assert ready["checks"]["scheduler_loop"] == "ok"
    assert ready["scheduler"]["heartbeat_age_seconds"] < 5
    metrics = requests.get(switch_system.url("/metrics"), timeout=10).text
    assert re.search(r"^jicm_scheduler_heartbeat_age_seconds \d", metrics, re.M)
    # Switches by state appear once the scheduler's first census (at its start) is stored.
    metrics = wait_for(lambda: _with_census(requests.get(switch_system.url("/metrics"),
                                                         timeout=10).text),
                       what="the first census of switches by state")
    assert re.search(r'^jicm_switches\{state="armed"\} \d', metrics, re.M)


def _with_census(metrics: str) -> str | None:
    return metrics if "jicm_switches_census_age_seconds" in metrics else None


def test_a_dead_scheduler_shows_in_readiness_then_catches_up(switch_system):
    owner = Sender(switch_system, verified=True)
    owner.configure(interval_seconds=2, grace_seconds=2, reminders_seconds=[])
    switch_system.supervisor.kill("scheduler")
    try:
        stale = wait_for(lambda: (r := requests.get(switch_system.url("/readyz"), timeout=10))
                         .status_code == 503 and r.json(), timeout=30,
                         what="/readyz to notice the scheduler is gone")
        assert stale["checks"]["scheduler"] != "ok"
    finally:
        switch_system.supervisor.start("scheduler")
    wait_for(lambda: owner.switch()["state"] == "fired", timeout=40, interval=0.2,
             what="the restarted scheduler to catch up and fire")
