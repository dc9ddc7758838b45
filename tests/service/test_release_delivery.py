"""A release handed from the vault to delivery over the real RabbitMQ, sent to a real SMTP
server on loopback: one mail per (message, recipient), the link leading to the right
text, the inline text fetched from the vault only when the mail is built, and a vault
that is down at that moment only delaying the mail.

The scheduler, the vault and delivery run as nameko containers in this process; the test
plays the scheduler's loop by publishing CheckInMissed itself.
"""

from __future__ import annotations

import re

import pytest

from services.delivery.service import DeliveryService
from services.delivery.storage import DeliveryRepository
from services.scheduler.service import SchedulerService
from services.vault.service import VaultService
from shared.clock import SystemClock
from shared.config import SETTINGS_CONFIG_KEY, load_settings
from shared.events import new_event
from shared.rpc.client import RpcClientPool
from shared.storage.provider import database_of
from tests.helpers import wait_for
from tests.service.vault_helpers import EventTap, Switchboard, check_in_missed, publish
from tests.sink import start_sink

pytestmark = pytest.mark.service

PUBLIC = "https://jic.example"
LINK = re.compile(re.escape(PUBLIC) + r"/r/([A-Za-z0-9_-]+)")
GRACE, ALAN, KURT = (("Grace", "grace@example.org"), ("Alan", "alan@example.org"),
                     ("Kurt", "kurt@example.org"))


@pytest.fixture
def sink(tmp_path):
    sink = start_sink(tmp_path / "sink")
    yield sink
    sink.stop()


@pytest.fixture
def config(rabbit_config, tmp_path, sink):
    settings = load_settings({
        "JICM_ENV": "test", "AMQP_URI": rabbit_config["AMQP_URI"],
        "JICM_DATA_DIR": str(tmp_path / "data"), "JICM_PUBLIC_URL": PUBLIC,
        "SMTP_PORT": str(sink.port), "SMTP_TIMEOUT": "2", "JICM_DELIVERY_LEASE": "8",
        "JICM_DELIVERY_TICK": "0.2", "JICM_DELIVERY_RETRY_BASE": "0.5",
        "JICM_DELIVERY_RETRY_CAP": "1",
    })
    return {**rabbit_config, SETTINGS_CONFIG_KEY: settings, "max_workers": 4}


@pytest.fixture
def start(container_factory, config):
    def start_service(cls):
        container = container_factory(cls, config)
        container.start()
        return container

    return start_service


@pytest.fixture
def ada(start) -> str:
    return Switchboard(start(SchedulerService)).user("ada")


@pytest.fixture
def rpc(config):
    pool = RpcClientPool(config["AMQP_URI"], size=2, timeout=15)
    yield pool
    pool.close()


def write(rpc, subject: str, body: str, recipients, inline: bool = False) -> str:
    draft = {"subject": subject, "body": body, "inline": inline, "sender_name": "Ada Lovelace",
             "recipients": [{"name": name, "email": email} for name, email in recipients]}
    return rpc.call("vault", "create_message", "ada", "ada@example.org", draft)["id"]


def text_of(mail) -> str:
    return mail.get_body(("plain",)).get_content()


def test_each_recipient_gets_one_mail_leading_to_the_right_text(start, ada, rpc, sink, config):
    start(VaultService)
    delivery = start(DeliveryService)
    letter = write(rpc, "The letter", "Dear all, the deeds are with the notary.", [GRACE, ALAN])
    note = write(rpc, "A note", "Kurt: the boat is yours.", [KURT], inline=True)
    missed = check_in_missed("ada", ada)
    publish(config["AMQP_URI"], missed)

    mails = sink.wait_for_mail(3, timeout=45)
    by_address = {mail["X-Sink-Envelope-To"]: mail for mail in mails}
    assert sorted(by_address) == ["alan@example.org", "grace@example.org", "kurt@example.org"]
    for address in ("grace@example.org", "alan@example.org"):
        token = LINK.search(text_of(by_address[address])).group(1)
        read = rpc.call("vault", "read_released", token, {"ip": "203.0.113.7"})
        assert (read["message_id"], read["body"]) == (letter,
                                                      "Dear all, the deeds are with the notary.")
        assert read["recipient_name"] == by_address[address]["To"].split(" <")[0]
    inline = text_of(by_address["kurt@example.org"])
    assert "Kurt: the boat is yours." in inline and "/r/" not in inline
    assert "Ada Lovelace (ada@example.org)" in by_address["kurt@example.org"]["Subject"]
    records = DeliveryRepository(database_of(delivery))
    assert {(r["reference"], r["recipient"]) for r in records.deliveries.find({})} == {
        (letter, "grace@example.org"), (letter, "alan@example.org"), (note, "kurt@example.org")}

    # CheckInMissed again, and every MessageReleased again: nothing more reaches anyone.
    tap = EventTap(config["AMQP_URI"], "MessageReleased")
    try:
        publish(config["AMQP_URI"], missed)
        publish(config["AMQP_URI"], check_in_missed("ada", ada))
        processed = database_of(delivery).collection("processed_events")
        done = processed.count({"state": "done"})
        for event in released_again(rpc, ada, letter, note):
            publish(config["AMQP_URI"], event)
        wait_for(lambda: processed.count({"state": "done"}) >= done + 2, timeout=45,
                 what="delivery to handle the repeated releases")
    finally:
        tap.close()
    assert len(sink.mail()) == 3
    assert records.deliveries.count({}) == 3


def released_again(rpc, switch_id: str, *message_ids: str) -> list[dict]:
    """MessageReleased of each message as a vault restarted mid-release would publish it
    again (same content, new event ids, so that no consumer can skip them by id)."""
    events = []
    for message_id in message_ids:
        message = rpc.call("vault", "get_message", "ada", message_id)
        events.append(new_event("MessageReleased", {
            "user_id": "ada", "switch_id": switch_id, "message_id": message_id,
            "sender_name": "Ada Lovelace (ada@example.org)",
            "recipients": [{"recipient_id": r["id"], "name": r["name"], "email": r["email"],
                            "read_token": "not-the-real-token-" + "x" * 30}
                           for r in message["recipients"]],
            "inline": message["inline"]}, producer="vault", now=SystemClock().now()))
    return events


def test_an_inline_mail_waits_for_a_vault_that_is_down_and_then_arrives_once(
    start, container_factory, ada, rpc, sink, config
):
    vault = start(VaultService)
    write(rpc, "A note", "Kurt: the boat is yours.", [KURT], inline=True)
    tap = EventTap(config["AMQP_URI"], "MessageReleased")
    try:
        publish(config["AMQP_URI"], check_in_missed("ada", ada))
        wait_for(tap.drain, timeout=45, what="the vault to hand the message over")
    finally:
        tap.close()
    vault.stop()  # its RPC queue stays: delivery's question waits there, and expires

    delivery = start(DeliveryService)
    records = DeliveryRepository(database_of(delivery))
    retrying = wait_for(lambda: records.deliveries.find_one({"state": "retrying"}), timeout=45,
                        what="the mail to wait for the vault")
    assert "vault" in retrying["last_error"]
    assert sink.mail() == []

    start(VaultService)
    [mail] = sink.wait_for_mail(1, timeout=45)
    assert "Kurt: the boat is yours." in text_of(mail)
    wait_for(lambda: records.deliveries.find_one({})["state"] == "sent", timeout=10)
    assert len(sink.mail()) == 1
