"""Trusted contacts through the scheduler service on the real RabbitMQ: the invitation and
the contacts' requests leave as `MailRequested` through the outbox and the broker, a hold
over RPC moves the end of grace and tells the owner, and the switch fires only after it;
a contact who declined is asked nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import eventlet
import pytest
from nameko.rpc import rpc

from services.scheduler.scheduler import switch_id_for
from services.scheduler.service import SchedulerService
from shared.clock import CLOCK_CONFIG_KEY, FrozenClock, SystemClock
from shared.config import SETTINGS_CONFIG_KEY, load_settings
from shared.events import event_handler, new_event
from shared.rpc.client import RpcClientPool
from shared.storage.provider import Storage
from tests.helpers import publish as publish_event
from tests.helpers import wait_for as _wait_for

pytestmark = pytest.mark.service

PATIENCE = 30.0
SEEN: dict[str, list] = {"MailRequested": [], "CheckInMissed": []}
CLIENT = {"ip": "198.51.100.7", "user_agent": "service test"}


class Listener:
    """Records what the scheduler announces."""

    name = "contacts_listener"
    store = Storage({})

    @event_handler("MailRequested")
    def on_mail_requested(self, event) -> None:
        SEEN["MailRequested"].append(event.data)

    @event_handler("CheckInMissed")
    def on_check_in_missed(self, event) -> None:
        SEEN["CheckInMissed"].append(event.data)


class StandInDelivery:
    """Says every overdue notice left long ago, so only grace decides the firing."""

    name = "delivery"

    @rpc
    def reminder_status(self, references: list[str]) -> dict[str, dict]:
        eventlet.sleep(0)
        return {ref: {"status": "sent", "settled_at": "2000-01-01T00:00:00+00:00",
                      "last_error": None} for ref in references}


@pytest.fixture(autouse=True)
def _fresh():
    for seen in SEEN.values():
        seen.clear()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(SystemClock().now())


@pytest.fixture
def scheduler(container_factory, rabbit_config, tmp_path, clock):
    settings = load_settings({
        "JICM_ENV": "test", "AMQP_URI": rabbit_config["AMQP_URI"],
        "JICM_DATA_DIR": str(tmp_path / "var" / "data"), "JICM_MIN_INTERVAL": "10",
        "JICM_SCHEDULER_TICK": "0.05", "JICM_SCHEDULER_RECHECK": "1",
        "JICM_SERVICES": "scheduler", "JICM_PUBLIC_URL": "https://jic.example",
    })
    for cls in (Listener, StandInDelivery, SchedulerService):
        config = {**rabbit_config, SETTINGS_CONFIG_KEY: settings, "max_workers": 4,
                  CLOCK_CONFIG_KEY: clock}
        container = container_factory(cls, config)
        container.start()
    return container


@pytest.fixture
def pool(rabbit_config):
    client = RpcClientPool(rabbit_config["AMQP_URI"], size=2, timeout=10)
    yield client
    client.close()


def wait_for(condition, what: str = ""):
    return _wait_for(condition, timeout=PATIENCE, what=what)


def publish(amqp_uri: str, event_type: str, data: dict) -> None:
    publish_event(amqp_uri, new_event(event_type, data, producer="test", now=datetime.now(UTC)))


def mails_to(to: str, kind: str) -> list:
    return [mail for mail in SEEN["MailRequested"] if mail.to == to and mail.kind == kind]


def token_in(mail) -> str:
    return mail.context["link"].rsplit("/", 1)[1]


def switch_of(pool: RpcClientPool, user_id: str) -> dict:
    return pool.call("scheduler", "get_switch", user_id, switch_id_for(user_id, 0))


def test_a_contacts_hold_through_the_broker_moves_the_release_and_tells_the_owner(
        scheduler, pool, clock, rabbit_config):
    amqp, user_id = rabbit_config["AMQP_URI"], str(uuid.uuid4())
    switch_id = switch_id_for(user_id, 0)
    publish(amqp, "UserRegistered", {"user_id": user_id, "email": "ada@example.org",
                                     "policy_version": "2024-04-29"})
    publish(amqp, "EmailVerified", {"user_id": user_id, "email": "ada@example.org"})
    wait_for(lambda: pool.call("scheduler", "list_switches", user_id)["switches"]
             and switch_of(pool, user_id)["state"] == "armed", what="the switch to be armed")
    for email in ("sam@example.org", "no@example.org"):
        pool.call("scheduler", "add_trusted_contact", user_id, switch_id,
                  {"name": email.split("@")[0], "email": email})
    [sam_invited] = wait_for(lambda: mails_to("sam@example.org", "trusted_contact_invitation"),
                             what="Sam's invitation")
    [no_invited] = wait_for(lambda: mails_to("no@example.org", "trusted_contact_invitation"),
                            what="the other invitation")
    assert sam_invited.context["owner_email"] == "ada@example.org"
    pool.call("scheduler", "decide_invitation", token_in(sam_invited), "accepted", CLIENT)
    pool.call("scheduler", "decide_invitation", token_in(no_invited), "declined", CLIENT)
    statuses = {c["email"]: c["status"] for c in pool.call(
        "scheduler", "list_trusted_contacts", user_id, switch_id)["trusted_contacts"]}
    assert statuses == {"sam@example.org": "accepted", "no@example.org": "declined"}

    pool.call("scheduler", "update_switch", user_id, switch_id, {
        "interval_seconds": 10, "grace_seconds": 10, "reminders_seconds": [],
        "hold_seconds": 20})
    clock.advance(10)
    [asked] = wait_for(lambda: mails_to("sam@example.org", "trusted_contact_request"),
                       what="Sam to be asked")
    overdue = switch_of(pool, user_id)
    assert overdue["state"] == "overdue"

    held = pool.call("scheduler", "hold_release", token_in(asked), CLIENT)

    assert held["status"] == "held"
    [told] = wait_for(lambda: mails_to("ada@example.org", "trusted_contact_hold"),
                      what="the owner to be told")
    assert told.context["contact_name"] == "sam"
    assert switch_of(pool, user_id)["holds_used"] == 1
    clock.advance(15)  # past the old end of grace, short of the new one
    wait_for(lambda: pool.call("scheduler", "liveness")["heartbeat_age_seconds"] == 0,
             what="a tick at the new time")
    assert switch_of(pool, user_id)["state"] == "overdue"
    assert SEEN["CheckInMissed"] == []
    clock.advance(20)
    [missed] = wait_for(lambda: SEEN["CheckInMissed"], what="the switch to fire")
    assert missed.switch_id == switch_id
    assert mails_to("no@example.org", "trusted_contact_request") == []
    assert len(mails_to("no@example.org", "trusted_contact_invitation")) == 1
