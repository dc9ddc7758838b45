"""Accounts and delivery together on the real RabbitMQ: sign-up mails a verification link
through the outbox, the link verifies the address and `EmailVerified` is announced."""

from __future__ import annotations

import re

import pytest

from services.accounts.service import AccountsService
from services.delivery.service import DeliveryService
from shared.config import SETTINGS_CONFIG_KEY, load_settings
from shared.events import event_handler
from shared.events import topology as topo
from shared.rpc.client import RpcClientPool
from shared.rpc.errors import RemoteError
from shared.storage.provider import Storage
from tests.helpers import wait_for
from tests.sink import start_sink

pytestmark = pytest.mark.service

VERIFIED: list = []
PASSWORD = "correct horse battery staple"


class Arming:
    """Stands where the scheduler will listen for EmailVerified."""

    name = "arming"
    store = Storage({})

    @event_handler("EmailVerified")
    def on_email_verified(self, event) -> None:
        VERIFIED.append(event)


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    VERIFIED.clear()
    monkeypatch.setitem(topo.CONSUMERS, "arming", ("EmailVerified",))


@pytest.fixture
def sink(tmp_path):
    s = start_sink(tmp_path / "sink")
    yield s
    s.stop()


@pytest.fixture
def system(container_factory, rabbit_config, tmp_path, sink):
    settings = load_settings({
        "JICM_ENV": "test", "AMQP_URI": rabbit_config["AMQP_URI"],
        "JICM_DATA_DIR": str(tmp_path / "data"), "JICM_PASSWORD_HASH": "min",
        "JICM_PUBLIC_URL": "https://jic.example", "SMTP_PORT": str(sink.port),
        "JICM_DELIVERY_TICK": "0.2",
    })
    config = {**rabbit_config, SETTINGS_CONFIG_KEY: settings, "max_workers": 4}
    for service in (AccountsService, DeliveryService, Arming):
        container_factory(service, config).start()


@pytest.fixture
def rpc(rabbit_config):
    pool = RpcClientPool(rabbit_config["AMQP_URI"], size=2, timeout=10)
    yield pool
    pool.close()


def token_in(mail) -> str:
    return re.search(r"token=([A-Za-z0-9_-]+)", mail.get_body(("plain",)).get_content())[1]


def test_sign_up_mails_a_link_that_verifies_the_address_once_and_announces_it(system, sink,
                                                                               rpc):
    account = rpc.call("accounts", "sign_up",
                       {"email": "ada@example.org", "password": PASSWORD,
                        "date_of_birth": "1990-01-01", "accept_policy_version": "2024-04-29"},
                       {"ip": "203.0.113.5"})
    [mail] = sink.wait_for_mail(1)
    assert mail["To"] == "ada@example.org"
    assert mail["Subject"] == "Confirm your email address for Just in Case"
    token = token_in(mail)
    assert rpc.call("accounts", "verify_email", {"token": token})["email_verified"] is True
    [event] = wait_for(lambda: VERIFIED, what="EmailVerified")
    assert event.data.user_id == account["id"]
    assert event.data.email == "ada@example.org"
    with pytest.raises(RemoteError) as used:
        rpc.call("accounts", "verify_email", {"token": token})
    assert used.value.exc_type == "Gone"
    assert used.value.exc_args[1] == "token_used"


def test_a_reset_mail_sets_a_new_password(system, sink, rpc):
    rpc.call("accounts", "sign_up",
             {"email": "ada@example.org", "password": PASSWORD, "date_of_birth": "1990-01-01",
              "accept_policy_version": "2024-04-29"}, {})
    sink.wait_for_mail(1)
    rpc.call("accounts", "request_password_reset", {"email": "ada@example.org"}, {})
    reset_mail = sink.wait_for_mail(2)[-1]
    assert reset_mail["Subject"] == "Reset your Just in Case password"
    rpc.call("accounts", "reset_password",
             {"token": token_in(reset_mail), "password": "a quiet harbour at dawn 42"})
    assert rpc.call("accounts", "log_in",
                    {"email": "ada@example.org", "password": "a quiet harbour at dawn 42"}, {})
