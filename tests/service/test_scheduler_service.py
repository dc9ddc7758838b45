"""The scheduler service on the real RabbitMQ: switches made and armed from accounts' events,
its loop ticking under a frozen clock, reminders and CheckInMissed leaving through the
broker, firing held back while delivery (a stand-in nameko service named `delivery`)
says a reminder has not left, and the HTTP API through the real gateway app."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import eventlet
import pytest
from nameko.rpc import rpc

from gateway.app import create_app
from services.accounts.service import AccountsService
from services.scheduler import census
from services.scheduler.scheduler import switch_id_for
from services.scheduler.service import SchedulerService
from services.scheduler.storage import SWITCHES
from services.scheduler.tokens import link_key, verify
from shared.clock import CLOCK_CONFIG_KEY, FrozenClock, SystemClock
from shared.config import SETTINGS_CONFIG_KEY, load_settings
from shared.events import event_handler, new_event
from shared.events.outbox import is_pending
from shared.rpc.client import RpcClientPool
from shared.storage.provider import Storage, database_of
from tests.helpers import publish as publish_event
from tests.helpers import wait_for as _wait_for

pytestmark = pytest.mark.service

PASSWORD = "correct horse battery staple"
# Several suites share this 2-core machine: deadlines are generous, polls are quick.
PATIENCE = 30.0
SEEN: dict[str, list] = {"ReminderDue": [], "CheckInMissed": [], "CheckedIn": []}
MAIL: dict[str, Any] = {"default": "sent", "statuses": {}, "delay": 0.0, "questions": []}


class Listener:
    """Records what the scheduler announces."""

    name = "listener"
    store = Storage({})

    @event_handler("ReminderDue")
    def on_reminder_due(self, event) -> None:
        SEEN["ReminderDue"].append(event.data)

    @event_handler("CheckInMissed")
    def on_check_in_missed(self, event) -> None:
        SEEN["CheckInMissed"].append(event.data)

    @event_handler("CheckedIn")
    def on_checked_in(self, event) -> None:
        SEEN["CheckedIn"].append(event.data)


class StandInDelivery:
    """Answers `reminder_status` as the test decides (the real one: test_release_delivery)."""

    name = "delivery"

    @rpc
    def reminder_status(self, references: list[str]) -> dict[str, dict]:
        MAIL["questions"].append(list(references))
        eventlet.sleep(MAIL["delay"])
        return {ref: _answer(MAIL["statuses"].get(ref, MAIL["default"])) for ref in references}


def _answer(status: str) -> dict:
    # Settled long before anything here was due: the grace is never started again.
    settled_at = "2000-01-01T00:00:00+00:00" if status in ("sent", "bounced") else None
    return {"status": status, "settled_at": settled_at, "last_error": None}


@pytest.fixture(autouse=True)
def _fresh():
    for seen in SEEN.values():
        seen.clear()
    MAIL.update(default="sent", statuses={}, delay=0.0, questions=[])


@pytest.fixture
def settings(rabbit_config, tmp_path):
    return load_settings({
        "JICM_ENV": "test",
        "AMQP_URI": rabbit_config["AMQP_URI"],
        "JICM_DATA_DIR": str(tmp_path / "var" / "data"),
        "JICM_PASSWORD_HASH": "min",
        "JICM_MIN_INTERVAL": "10",
        "JICM_SCHEDULER_TICK": "0.05",
        "JICM_SCHEDULER_RECHECK": "1",
        "JICM_SERVICES": "accounts,scheduler",
    })


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(SystemClock().now())


@pytest.fixture
def start(container_factory, rabbit_config, settings, clock):
    def start_service(cls, *, frozen: bool = True):
        config = {**rabbit_config, SETTINGS_CONFIG_KEY: settings, "max_workers": 4}
        if frozen:
            config[CLOCK_CONFIG_KEY] = clock
        container = container_factory(cls, config)
        container.start()
        return container

    return start_service


@pytest.fixture
def scheduler(start):
    start(Listener)
    return start(SchedulerService)


@pytest.fixture
def rpc(rabbit_config):
    pool = RpcClientPool(rabbit_config["AMQP_URI"], size=2, timeout=10)
    yield pool
    pool.close()


def wait_for(condition, timeout: float = PATIENCE, what: str = ""):
    return _wait_for(condition, timeout=timeout, what=what)


def publish(amqp_uri: str, event_type: str, data: dict) -> dict:
    """Publish one event as its producer would; returns its envelope."""
    event = new_event(event_type, data, producer="test", now=datetime.now(UTC))
    publish_event(amqp_uri, event)
    return event


def verified_owner(amqp_uri: str, rpc: RpcClientPool, user_id: str | None = None) -> str:
    user_id = user_id or str(uuid.uuid4())
    publish(amqp_uri, "UserRegistered", {"user_id": user_id, "email": "ada@example.org",
                                         "policy_version": "2024-04-29"})
    publish(amqp_uri, "EmailVerified", {"user_id": user_id, "email": "ada@example.org"})
    wait_for(lambda: state_of(rpc, user_id) == "armed", what="the switch to be armed")
    return user_id


def switches(rpc: RpcClientPool, user_id: str) -> list[dict]:
    return rpc.call("scheduler", "list_switches", user_id)["switches"]


def state_of(rpc: RpcClientPool, user_id: str) -> str | None:
    found = switches(rpc, user_id)
    return found[0]["state"] if found else None


def schedule(rpc, user_id, **settings) -> dict:
    return rpc.call("scheduler", "update_switch", user_id, switch_id_for(user_id, 0), settings)


# --- events in, events out ---------------------------------------------------------------------


def test_a_registration_becomes_an_unarmed_switch_that_verification_arms(scheduler, rpc,
                                                                         rabbit_config):
    user_id = str(uuid.uuid4())
    publish(rabbit_config["AMQP_URI"], "UserRegistered",
            {"user_id": user_id, "email": "ada@example.org", "policy_version": "2024-04-29"})
    wait_for(lambda: state_of(rpc, user_id) == "unarmed", what="the default switch")
    publish(rabbit_config["AMQP_URI"], "EmailVerified",
            {"user_id": user_id, "email": "ada@example.org"})
    wait_for(lambda: state_of(rpc, user_id) == "armed", what="the switch to be armed")
    assert len(switches(rpc, user_id)) == 1


def handled(container, event: dict) -> bool:
    """Whether the service finished with this event (its idempotency record says done)."""
    processed = database_of(container).collection("processed_events")
    return processed.find_one({"event_id": event["event_id"], "state": "done"}) is not None


def test_a_registration_arriving_after_the_erasure_brings_no_switch_back(scheduler, rpc,
                                                                         rabbit_config):
    amqp, user_id = rabbit_config["AMQP_URI"], str(uuid.uuid4())
    erasure = publish(amqp, "ErasureRequested", {
        "request_id": str(uuid.uuid4()), "user_id": user_id, "reason": "user",
        "email": "ada@example.org"})
    wait_for(lambda: handled(scheduler, erasure), what="the erasure")
    # As if both had waited in a retry queue behind the erasure.
    late = [publish(amqp, "UserRegistered", {
                "user_id": user_id, "email": "ada@example.org",
                "policy_version": "2024-04-29"}),
            publish(amqp, "EmailVerified", {"user_id": user_id,
                                                  "email": "ada@example.org"})]
    wait_for(lambda: all(handled(scheduler, event) for event in late), what="the late events")
    assert switches(rpc, user_id) == []
    stored = database_of(scheduler).collection(SWITCHES)
    assert stored.find_one({"user_id": user_id}) is None


def test_reminders_and_the_release_leave_through_the_broker(scheduler, start, rpc, clock,
                                                            rabbit_config, settings):
    start(StandInDelivery)
    user_id = verified_owner(rabbit_config["AMQP_URI"], rpc)
    switch = schedule(rpc, user_id, interval_seconds=60, grace_seconds=30,
                      reminders_seconds=[20])
    clock.advance(40)
    [upcoming] = wait_for(lambda: SEEN["ReminderDue"], what="the upcoming reminder")
    assert (upcoming.stage, upcoming.step, upcoming.cycle) == ("upcoming", 0, switch["cycle"])
    assert upcoming.email == "ada@example.org"
    claim = verify(link_key(settings.secret_key_bytes), upcoming.checkin_token)
    assert (claim.switch_id, claim.cycle) == (switch["id"], switch["cycle"])
    clock.advance(20)
    wait_for(lambda: len(SEEN["ReminderDue"]) == 2, what="the overdue notice")
    assert SEEN["ReminderDue"][1].stage == "overdue"
    clock.advance(29)
    wait_for(lambda: MAIL["questions"] == [] and state_of(rpc, user_id) == "overdue")
    clock.advance(1)
    [missed] = wait_for(lambda: SEEN["CheckInMissed"], what="the switch to fire")
    assert (missed.switch_id, missed.cycle) == (switch["id"], switch["cycle"])
    assert missed.fired_at == clock.now()
    # No word of the overdue notice had come: delivery was asked about it.
    assert MAIL["questions"][0] == [f"{switch['id']}:{switch['cycle']}:1"]
    clock.advance(3600)
    wait_for(lambda: rpc.call("scheduler", "liveness")["heartbeat_age_seconds"] == 0)
    assert len(SEEN["CheckInMissed"]) == 1


def run_past_grace(rpc, clock, user_id) -> None:
    schedule(rpc, user_id, interval_seconds=10, grace_seconds=10, reminders_seconds=[])
    clock.advance(10)
    wait_for(lambda: state_of(rpc, user_id) == "overdue", what="the switch to be overdue")
    clock.advance(10)


def ticks_pass(rpc: RpcClientPool, clock: FrozenClock, seconds: float) -> None:
    """Let the loop look at everything again and again for `seconds` of frozen time."""
    for _ in range(int(seconds)):
        clock.advance(1)
        wait_for(lambda: rpc.call("scheduler", "liveness")["heartbeat_age_seconds"] == 0,
                 what="a tick at the new time")


def test_it_does_not_fire_while_delivery_says_a_reminder_has_not_left(scheduler, start, rpc,
                                                                      clock, rabbit_config):
    start(StandInDelivery)
    MAIL["default"] = "pending"
    user_id = verified_owner(rabbit_config["AMQP_URI"], rpc)
    run_past_grace(rpc, clock, user_id)
    ticks_pass(rpc, clock, 5)
    assert len(MAIL["questions"]) >= 3
    assert state_of(rpc, user_id) == "overdue"
    assert rpc.call("scheduler", "liveness")["held_back_switches"] == 1
    assert SEEN["CheckInMissed"] == []
    MAIL["default"] = "sent"
    clock.advance(1)
    wait_for(lambda: SEEN["CheckInMissed"], what="the switch to fire once the mail left")


def test_delivery_s_word_that_the_notice_left_comes_through_the_broker_and_is_enough(
        scheduler, start, rpc, clock, rabbit_config):
    start(StandInDelivery)
    MAIL["default"] = "unknown"  # delivery's log of it is gone: only the event can tell
    user_id = verified_owner(rabbit_config["AMQP_URI"], rpc)
    schedule(rpc, user_id, interval_seconds=10, grace_seconds=10, reminders_seconds=[])
    clock.advance(10)
    wait_for(lambda: state_of(rpc, user_id) == "overdue", what="the switch to be overdue")
    switch = rpc.call("scheduler", "list_switches", user_id)["switches"][0]
    publish(rabbit_config["AMQP_URI"], "ReminderSettled", {
        "user_id": user_id, "switch_id": switch["id"], "cycle": switch["cycle"], "step": 0,
        "outcome": "sent", "settled_at": clock.now().isoformat()})
    stored = database_of(scheduler).collection(SWITCHES)
    wait_for(lambda: "0" in stored.get(switch["id"]).get("settled", {}),
             what="the scheduler to record the notice")
    clock.advance(10)
    wait_for(lambda: SEEN["CheckInMissed"], what="the switch to fire")
    assert MAIL["questions"] == []


def test_it_does_not_fire_while_delivery_is_down(scheduler, start, rpc, clock, rabbit_config):
    user_id = verified_owner(rabbit_config["AMQP_URI"], rpc)
    run_past_grace(rpc, clock, user_id)
    ticks_pass(rpc, clock, 3)
    assert state_of(rpc, user_id) == "overdue"
    start(StandInDelivery)
    clock.advance(1)
    wait_for(lambda: SEEN["CheckInMissed"], what="the switch to fire once delivery is back")


def test_a_silent_delivery_holds_back_the_firing_but_not_the_loop(scheduler, start, rpc, clock,
                                                                 rabbit_config):
    start(StandInDelivery)
    MAIL["delay"] = 30.0
    user_id = verified_owner(rabbit_config["AMQP_URI"], rpc)
    run_past_grace(rpc, clock, user_id)
    wait_for(lambda: MAIL["questions"], what="the loop to ask delivery")
    # The question times out; the loop gives up on it and keeps ticking.
    ticks_pass(rpc, clock, 1)
    assert state_of(rpc, user_id) == "overdue"
    MAIL["delay"] = 0.0
    clock.advance(1)
    wait_for(lambda: SEEN["CheckInMissed"], what="the switch to fire")


def test_a_lapsed_payment_never_stops_a_release(scheduler, start, rpc, clock, rabbit_config):
    start(StandInDelivery)
    user_id = verified_owner(rabbit_config["AMQP_URI"], rpc)
    entitlements = {"switches": 3, "messages_per_switch": 10, "recipients_per_message": 10,
                    "body_bytes": 100_000}
    publish(rabbit_config["AMQP_URI"], "PlanChanged",
            {"user_id": user_id, "plan": "pro", "status": "past_due",
             "entitlements": entitlements})
    plans = database_of(scheduler).collection("entitlements")
    wait_for(lambda: plans.get(user_id), what="the plan to be recorded")
    run_past_grace(rpc, clock, user_id)
    wait_for(lambda: SEEN["CheckInMissed"], what="the switch to fire all the same")


# --- the HTTP API through the real gateway ------------------------------------------------------


@pytest.fixture
def http(scheduler, start, settings):
    start(AccountsService, frozen=False)
    pool = RpcClientPool(settings.amqp_uri, size=4, timeout=10)
    yield create_app(settings, rpc=pool).test_client()
    pool.close()


def signed_up(http, rpc, rabbit_config) -> tuple[str, dict]:
    email = f"u-{uuid.uuid4().hex[:10]}@example.org"
    account = http.post("/api/v1/accounts", json={
        "email": email, "password": PASSWORD, "date_of_birth": "1990-01-01",
        "accept_policy_version": "2024-04-29"}).get_json()
    token = http.post("/api/v1/sessions", json={"email": email, "password": PASSWORD}
                      ).get_json()["token"]
    # accounts announced the registration itself; the verification is the test's to send.
    wait_for(lambda: state_of(rpc, account["id"]) == "unarmed", what="the default switch")
    publish(rabbit_config["AMQP_URI"], "EmailVerified", {"user_id": account["id"],
                                                         "email": email})
    wait_for(lambda: state_of(rpc, account["id"]) == "armed", what="the switch to be armed")
    return account["id"], {"Authorization": f"Bearer {token}"}


def test_the_owner_reads_changes_and_checks_in_their_switch_over_http(http, rpc, rabbit_config,
                                                                     clock):
    user_id, auth = signed_up(http, rpc, rabbit_config)
    [switch] = http.get("/api/v1/switches", headers=auth).get_json()["switches"]
    assert switch["state"] == "armed"
    assert switch["id"] == switch_id_for(user_id, 0)
    assert set(switch) >= {"id", "interval_seconds", "grace_seconds", "reminders_seconds",
                           "state", "deadline", "paused_until"}

    changed = http.put(f"/api/v1/switches/{switch['id']}", headers=auth,
                       json={"interval_seconds": 3600, "reminders_seconds": [600, 60]})
    assert changed.status_code == 200
    assert changed.get_json()["reminders_seconds"] == [600, 60]
    assert changed.get_json()["deadline"] == (clock.now() + timedelta(hours=1)).isoformat(
        ).replace("+00:00", "Z")

    clock.advance(1800)
    checked = http.post("/api/v1/checkins", headers=auth, json={})
    assert checked.status_code == 200
    [moved] = checked.get_json()["switches"]
    assert moved["cycle"] == changed.get_json()["cycle"] + 1
    assert http.get(f"/api/v1/switches/{switch['id']}", headers=auth).get_json() == moved


@pytest.mark.parametrize("body, field, message", [
    ({"interval_seconds": 5}, "interval_seconds", "at least 10"),
    ({"grace_seconds": 0}, "grace_seconds", "greater than or equal to 1"),
    ({"interval_seconds": "3600"}, "interval_seconds", "valid integer"),
    ({"interval_seconds": None}, "interval_seconds", "valid integer"),
    ({"reminders_seconds": [7200]}, "reminders_seconds", "shorter than the interval"),
    ({"paused_until": "2020-01-01T00:00:00Z"}, "paused_until", "future"),
    ({"paused_until": "2031-01-01T00:00:00"}, "paused_until", "timezone"),
    ({"paused_until": 0}, "paused_until", "date and time"),
    ({"interval": 3600}, "interval", "not a known field"),
    ({}, "body", "at least one"),
])
def test_bad_settings_are_a_422_naming_the_field_and_nothing_changes(http, rpc, rabbit_config,
                                                                     body, field, message):
    user_id, auth = signed_up(http, rpc, rabbit_config)
    switch_id = switch_id_for(user_id, 0)
    http.put(f"/api/v1/switches/{switch_id}", headers=auth, json={"interval_seconds": 3600})
    before = http.get(f"/api/v1/switches/{switch_id}", headers=auth).get_json()
    refused = http.put(f"/api/v1/switches/{switch_id}", headers=auth, json=body)
    assert refused.status_code == 422, refused.get_json()
    error = refused.get_json()["error"]
    assert message in error["message"]
    assert error["message"].startswith(field) or error.get("details", {}).get("field") == field
    assert http.get(f"/api/v1/switches/{switch_id}", headers=auth).get_json() == before


def test_another_users_switch_is_a_404_for_every_verb(http, rpc, rabbit_config):
    owner, _ = signed_up(http, rpc, rabbit_config)
    _, intruder = signed_up(http, rpc, rabbit_config)
    switch_id = switch_id_for(owner, 0)
    attempts = [
        http.get(f"/api/v1/switches/{switch_id}", headers=intruder),
        http.put(f"/api/v1/switches/{switch_id}", headers=intruder, json={"grace_seconds": 60}),
        http.post("/api/v1/checkins", headers=intruder, json={"switch_id": switch_id}),
    ]
    assert [a.status_code for a in attempts] == [404, 404, 404]
    assert {a.get_json()["error"]["code"] for a in attempts} == {"switch_not_found"}


def test_a_second_switch_on_the_free_plan_is_a_402_naming_the_limit(http, rpc, rabbit_config):
    _, auth = signed_up(http, rpc, rabbit_config)
    refused = http.post("/api/v1/switches", headers=auth, json={})
    assert refused.status_code == 402
    assert refused.get_json()["error"]["code"] == "plan_limit_reached"
    assert refused.get_json()["error"]["details"] == {"limit": "switches", "allowed": 1,
                                                      "wanted": 2, "plan": "free"}


def test_a_check_in_after_firing_is_a_409_with_the_switchs_state(http, start, rpc,
                                                                 rabbit_config, clock):
    start(StandInDelivery)
    user_id, auth = signed_up(http, rpc, rabbit_config)
    run_past_grace(rpc, clock, user_id)
    wait_for(lambda: SEEN["CheckInMissed"], what="the switch to fire")
    refused = http.post("/api/v1/checkins", headers=auth, json={})
    assert refused.status_code == 409
    error = refused.get_json()["error"]
    assert error["code"] == "switch_fired"
    assert error["details"]["state"] == "fired"


def test_a_get_of_the_link_changes_nothing_and_its_button_checks_in(http, scheduler, rpc,
                                                                     rabbit_config, clock):
    user_id, _ = signed_up(http, rpc, rabbit_config)
    schedule(rpc, user_id, interval_seconds=60, grace_seconds=60, reminders_seconds=[30])
    clock.advance(30)
    [reminder] = wait_for(lambda: SEEN["ReminderDue"], what="the reminder")
    link = f"/c/{reminder.checkin_token}"
    stored = database_of(scheduler).collection("switches")
    wait_for(lambda: not is_pending(stored.get(reminder.switch_id)))
    before = stored.get(reminder.switch_id)
    checked_in_before = len(SEEN["CheckedIn"])

    for _ in range(3):  # a scanner, a link preview, the owner opening the mail
        shown = http.get(link, headers={"User-Agent": "MailScanner/1.0"})
        assert shown.status_code == 200
        page = shown.get_data(as_text=True)
        assert 'method="post"' in page
        assert "ada" not in page and user_id not in page
    assert stored.get(reminder.switch_id) == before
    assert len(SEEN["CheckedIn"]) == checked_in_before

    confirmed = http.post(link, data={"confirm": "yes"},
                          headers={"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"})
    assert confirmed.status_code == 200, confirmed.get_data(as_text=True)
    assert "You are checked in" in confirmed.get_data(as_text=True)
    after = stored.get(reminder.switch_id)
    assert after["cycle"] == before["cycle"] + 1
    assert after["deadline"] == clock.now() + timedelta(seconds=60)
    wait_for(lambda: [e for e in SEEN["CheckedIn"] if e.method == "link"])

    again = http.post(link, data={"confirm": "yes"})
    assert again.status_code == 410
    assert "already used" in again.get_data(as_text=True)
    assert http.get(link).status_code == 410


def _metrics_once_armed(http) -> str | None:
    text = http.get("/metrics").get_data(as_text=True)
    return text if re.search(r'^jicm_switches\{state="armed"\} 1\.0$', text, re.M) else None


def test_metrics_and_readiness_report_the_loop(http, rpc, clock, rabbit_config):
    signed_up(http, rpc, rabbit_config)
    ready = http.get("/readyz")
    assert ready.status_code == 200, ready.get_json()
    assert ready.get_json()["checks"]["scheduler_loop"] == "ok"
    # Switches by state are the background census's: the next one counts the new switch.
    clock.advance(census.CENSUS_EVERY.total_seconds())
    text = wait_for(lambda: _metrics_once_armed(http), timeout=census.CENSUS_CHECK_SECONDS + 10,
                    what="a census counting the armed switch")
    assert re.search(r"^jicm_switches_census_age_seconds \d", text, re.M), text
    assert re.search(r"^jicm_scheduler_heartbeat_age_seconds \d", text, re.M)
    assert re.search(r"^jicm_scheduler_lag_seconds 0\.0$", text, re.M)
    assert "jicm_scheduler_up 1.0" in text
    assert re.search(r"^jicm_scheduler_held_back_switches 0\.0$", text, re.M)


def test_a_held_back_switch_is_named_with_its_reason_in_readiness_and_metrics(
        http, start, rpc, clock, rabbit_config):
    start(StandInDelivery)
    MAIL["default"] = "pending"
    user_id = verified_owner(rabbit_config["AMQP_URI"], rpc)
    run_past_grace(rpc, clock, user_id)
    ticks_pass(rpc, clock, 2)
    ready = http.get("/readyz")
    assert ready.status_code == 200  # held back is not unready: the gateway still serves
    figures = ready.get_json()["scheduler"]
    assert figures["held_back_switches"] == 1
    assert figures["held_back_by_reason"]["notice_waiting"] == 1
    [held] = figures["held_back"]
    assert held["switch_id"] == switches(rpc, user_id)[0]["id"]
    assert held["reason"] == "notice_waiting"
    assert "ada" not in json.dumps(figures)
    text = http.get("/metrics").get_data(as_text=True)
    assert re.search(r"^jicm_scheduler_held_back_switches 1\.0$", text, re.M)
    assert re.search(r'^jicm_scheduler_held_back_switches_by_reason\{reason="notice_waiting"\} '
                     r"1\.0$", text, re.M), text
    assert re.search(r"^jicm_scheduler_held_back_oldest_seconds [1-9]", text, re.M)
