"""A test release over the real RabbitMQ, sent to a real SMTP server on loopback: the vault
asks the scheduler about the switch and hands each mail to delivery; every mail reaches
the owner alone, marked [Test], its link opening the message only as a test; the switch,
its messages and the real release's records are untouched, and no recipient gets mail.

The scheduler, the vault and delivery run as nameko containers in this process.
"""

from __future__ import annotations

import re

import pytest

from services.delivery.service import DeliveryService
from services.delivery.storage import DeliveryRepository
from services.scheduler.service import SchedulerService
from services.vault.service import VaultService
from services.vault.storage import VaultRepository
from shared.config import SETTINGS_CONFIG_KEY, load_settings
from shared.rpc.client import RpcClientPool
from shared.rpc.errors import RemoteError
from shared.storage.provider import database_of
from tests.service.vault_helpers import Switchboard
from tests.sink import start_sink

pytestmark = pytest.mark.service

PUBLIC = "https://jic.example"
TEST_LINK = re.compile(re.escape(PUBLIC) + r"/r/test/([A-Za-z0-9_-]+)")
ADA = {"email": "ada@example.org", "email_verified": True}


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
def services(container_factory, config):
    started = {}
    for cls in (SchedulerService, VaultService, DeliveryService):
        container = container_factory(cls, config)
        container.start()
        started[cls.name] = container
    return started


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


def test_a_test_release_reaches_the_owner_alone_and_changes_nothing(services, rpc, sink):
    switch_id = Switchboard(services["scheduler"]).user("ada")
    letter = write(rpc, "The letter", "Dear all, the deeds are with the notary.",
                   [("Grace", "grace@example.org"), ("Alan", "alan@example.org")])
    write(rpc, "A note", "Kurt: the boat is yours.", [("Kurt", "kurt@example.org")],
          inline=True)
    vault = VaultRepository(database_of(services["vault"]))
    switch_before = rpc.call("scheduler", "get_switch", "ada", switch_id)
    messages_before = vault.messages.find({})

    started = rpc.call("vault", "test_release", "ada", switch_id, ADA)
    assert (started["messages"], started["mails"], started["sent_to"]) == (2, 3, ADA["email"])

    mails = sink.wait_for_mail(3, timeout=45)
    assert {mail["X-Sink-Envelope-To"] for mail in mails} == {"ada@example.org"}
    assert all(mail["Subject"].startswith("[Test] A message for you from Ada Lovelace")
               for mail in mails)
    texts = [" ".join(text_of(mail).split()) for mail in mails]
    assert sorted(re.search(r"Hello (\w+),", text)[1] for text in texts) == [
        "Alan", "Grace", "Kurt"]
    inline = next(text for text in texts if "Hello Kurt," in text)
    assert "Kurt: the boat is yours." in inline and "/r/" not in inline

    token = TEST_LINK.search(next(text_of(m) for m in mails if "Hello Grace" in text_of(m)))[1]
    opened = rpc.call("vault", "read_test_release", token, {"ip": "203.0.113.7"})
    assert (opened["message_id"], opened["recipient_name"], opened["test"]) == (
        letter, "Grace", True)
    with pytest.raises(RemoteError) as refused:
        rpc.call("vault", "read_released", token, {"ip": "203.0.113.7"})
    assert refused.value.exc_type == "NotFound"

    # Nothing of the switch, its messages or its real release changed.
    assert rpc.call("scheduler", "get_switch", "ada", switch_id) == switch_before
    assert vault.messages.find({}) == messages_before
    assert vault.releases.find({}) == [] and vault.read_tokens.find({}) == []
    records = DeliveryRepository(database_of(services["delivery"])).deliveries.find({})
    assert {record["kind"] for record in records} == {"test_release"}
    assert rpc.call("delivery", "mail_status", "released_message", [letter]) == {
        letter: "unknown"}


def test_an_unverified_owner_or_another_users_switch_sends_nothing(services, rpc, sink):
    board = Switchboard(services["scheduler"])
    switch_id = board.user("ada")
    eves = board.user("eve")
    write(rpc, "The letter", "Words.", [("Grace", "grace@example.org")])
    with pytest.raises(RemoteError) as unverified:
        rpc.call("vault", "test_release", "ada", switch_id, {**ADA, "email_verified": False})
    assert unverified.value.exc_type == "Forbidden"
    with pytest.raises(RemoteError) as not_hers:
        rpc.call("vault", "test_release", "ada", eves, ADA)
    assert not_hers.value.exc_type == "NotFound"
    assert DeliveryRepository(database_of(services["delivery"])).deliveries.find({}) == []
