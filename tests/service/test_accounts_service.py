"""The accounts service on the real RabbitMQ: called over RPC as the gateway calls it,
announcing registrations to whoever listens."""

from __future__ import annotations

import time

import pyotp
import pytest

from services.accounts.service import AccountsService
from shared.events import event_handler
from shared.events.outbox import is_pending
from shared.rpc.client import RpcClientPool
from shared.rpc.errors import RemoteError
from shared.storage.provider import Storage, database_of
from tests.helpers import wait_for

pytestmark = pytest.mark.service

REGISTERED: list = []
PASSWORD = "correct horse battery staple"


class RegistrationListener:
    name = "listener"
    store = Storage({})

    @event_handler("UserRegistered")
    def on_user_registered(self, event) -> None:
        REGISTERED.append(event)


@pytest.fixture(autouse=True)
def _clear():
    REGISTERED.clear()


@pytest.fixture
def accounts(container_factory, service_config):
    container = container_factory(AccountsService, service_config)
    container.start()
    return container


@pytest.fixture
def listener(container_factory, service_config):
    container = container_factory(RegistrationListener, service_config)
    container.start()
    return container


@pytest.fixture
def rpc(service_config):
    pool = RpcClientPool(service_config["AMQP_URI"], size=2, timeout=10)
    yield pool
    pool.close()


def sign_up(rpc, email="ada@example.org", born="1990-01-01"):
    return rpc.call(
        "accounts",
        "sign_up",
        {"email": email, "password": PASSWORD, "date_of_birth": born,
         "accept_policy_version": "2024-04-29"},
        {"ip": "203.0.113.5", "user_agent": "pytest"},
        context={"request_id": "req-test-123"},
    )


def test_a_sign_up_is_announced_to_listeners_through_the_outbox(accounts, listener, rpc):
    account = sign_up(rpc)
    [event] = wait_for(lambda: REGISTERED, what="UserRegistered")
    assert event.data.user_id == account["id"]
    assert event.data.email == "ada@example.org"
    assert event.request_id == "req-test-123"
    users = database_of(accounts).collection("users")
    wait_for(lambda: not is_pending(users.get(account["id"])))


def test_a_refused_sign_up_arrives_as_a_typed_error_and_announces_nothing(accounts, listener, rpc):
    with pytest.raises(RemoteError) as refused:
        sign_up(rpc, born="2020-01-01")
    assert refused.value.exc_type == "InvalidInput"
    assert refused.value.exc_args[1] == "age_requirement"
    sign_up(rpc, email="after@example.org")
    wait_for(lambda: REGISTERED)
    assert [event.data.email for event in REGISTERED] == ["after@example.org"]


def test_log_in_authenticate_and_log_out_over_rpc(accounts, rpc):
    account = sign_up(rpc)
    session = rpc.call("accounts", "log_in", {"email": "ada@example.org", "password": PASSWORD},
                       {"ip": "203.0.113.5"})
    assert rpc.call("accounts", "authenticate", session["token"])["id"] == account["id"]
    rpc.call("accounts", "log_out", session["token"])
    with pytest.raises(RemoteError) as refused:
        rpc.call("accounts", "authenticate", session["token"])
    assert refused.value.exc_type == "AuthenticationFailed"


def test_the_owners_own_account_over_rpc(accounts, rpc):
    account = sign_up(rpc)
    client = {"ip": "203.0.113.5", "user_agent": "pytest"}
    session = rpc.call("accounts", "log_in", {"email": "ada@example.org", "password": PASSWORD},
                       client)
    [listed] = rpc.call("accounts", "list_sessions", session["token"])["sessions"]
    assert listed["current"] is True and listed["ip_truncated"] == "203.0.113.0/24"
    zoned = rpc.call("accounts", "update_profile", account["id"], {"time_zone": "Asia/Tokyo"})
    assert zoned["time_zone"] == "Asia/Tokyo"
    with pytest.raises(RemoteError) as refused:
        rpc.call("accounts", "change_password", session["token"],
                 {"current_password": "wrong guess", "new_password": "a new long passphrase"},
                 client)
    assert refused.value.exc_type == "Forbidden"
    renewed = rpc.call("accounts", "change_password", session["token"],
                       {"current_password": PASSWORD, "new_password": "a new long passphrase"},
                       client)
    assert rpc.call("accounts", "authenticate", renewed["token"])["time_zone"] == "Asia/Tokyo"
    assert rpc.call("accounts", "end_sessions", account["id"]) == {"ended": 1}
    with pytest.raises(RemoteError):
        rpc.call("accounts", "authenticate", renewed["token"])


def test_the_service_answers_the_readiness_probe(accounts, rpc):
    assert rpc.call("accounts", "health")["status"] == "ok"


def test_two_factor_sign_in_over_rpc(accounts, rpc):
    """Set up with a first code, then a log-in is a challenge that only a good code turns
    into a session. Codes come from pyotp at the real time; the log-in's code is the next
    step's (accepted, one step of drift) because the confirming one is spent."""
    account = sign_up(rpc)
    client = {"ip": "203.0.113.5", "user_agent": "pytest"}
    setup = rpc.call("accounts", "start_totp", account["id"])
    totp = pyotp.TOTP(setup["secret"])
    confirmed = rpc.call("accounts", "confirm_totp", account["id"], {"code": totp.now()})
    assert len(confirmed["recovery_codes"]) == 10
    answer = rpc.call("accounts", "log_in", {"email": "ada@example.org", "password": PASSWORD},
                      client)
    assert answer["token"] is None and answer["second_step"] == "totp"
    with pytest.raises(RemoteError) as refused:
        rpc.call("accounts", "log_in_second_step",
                 {"challenge": answer["challenge"], "code": totp.at(time.time() + 600)}, client)
    assert refused.value.exc_type == "AuthenticationFailed"
    assert refused.value.exc_args[1] == "wrong_code"
    session = rpc.call("accounts", "log_in_second_step",
                       {"challenge": answer["challenge"], "code": totp.at(time.time() + 30)},
                       client)
    assert rpc.call("accounts", "authenticate", session["token"])["id"] == account["id"]
    assert rpc.call("accounts", "totp_status", account["id"])["enabled"] is True
