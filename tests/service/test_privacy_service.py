"""The privacy service on the real RabbitMQ, beside the real accounts service: a visitor's
cookie choice recorded over RPC joins the account they sign up for (accounts' event
names it), the receipts are listed, and an erasure asked for over RPC is followed with
its progress token once the account is closed."""

from __future__ import annotations

import pytest

from services.accounts.service import AccountsService
from services.privacy.service import PrivacyService
from shared.rpc.client import RpcClientPool
from shared.rpc.errors import RemoteError
from tests.helpers import wait_for

pytestmark = pytest.mark.service

PASSWORD = "correct horse battery staple"
VISITOR = "visitor-token-" + "x" * 24
CLIENT = {"ip": "203.0.113.5", "user_agent": "pytest"}
WEB = {**CLIENT, "via": "web"}  # privacy is also told where a choice was made


@pytest.fixture
def services(container_factory, service_config):
    for service in (AccountsService, PrivacyService):
        container_factory(service, service_config).start()


@pytest.fixture
def rpc(service_config):
    pool = RpcClientPool(service_config["AMQP_URI"], size=2, timeout=10)
    yield pool
    pool.close()


def sign_up(rpc, email: str, client: dict) -> str:
    account = rpc.call("accounts", "sign_up", {
        "email": email, "password": PASSWORD, "date_of_birth": "1990-01-01",
        "accept_policy_version": "2024-04-29"}, client)
    return account["id"]


def test_a_visitors_cookie_choice_joins_the_account_they_sign_up_for(services, rpc):
    chosen = rpc.call("privacy", "choose_visitor_cookies", VISITOR,
                      {"analytics": True, "marketing": False}, WEB)
    assert chosen["cookies"] == {"analytics": True, "marketing": False}
    user_id = sign_up(rpc, "ada@example.org", {**CLIENT, "visitor": VISITOR})

    def receipts() -> list[dict]:
        found = rpc.call("privacy", "list_receipts", user_id)["receipts"]
        return found if len(found) == 2 else []

    cookie, signup = wait_for(receipts, timeout=20, what="both receipts on the account")
    assert cookie["method"] == "web" and cookie["changes"] == [
        {"purpose": "cookies.analytics", "choice": True},
        {"purpose": "cookies.marketing", "choice": False}]
    assert signup["method"] == "signup" and cookie["at"] < signup["at"]
    consent = rpc.call("privacy", "get_consent", user_id, WEB)
    assert consent["cookies"] == {"analytics": True, "marketing": False}


def test_a_visitor_choice_that_is_not_a_choice_is_refused_naming_it(services, rpc):
    with pytest.raises(RemoteError) as refused:
        rpc.call("privacy", "choose_visitor_cookies", VISITOR, {"analytics": "yes"}, WEB)
    assert refused.value.exc_type == "InvalidInput"


def test_an_erasure_is_followed_with_its_token_after_the_account_closed(services, rpc):
    user_id = sign_up(rpc, "bob@example.org", CLIENT)
    wait_for(lambda: rpc.call("privacy", "list_receipts", user_id)["receipts"], timeout=20,
             what="the sign-up to reach privacy")
    created = rpc.call("privacy", "create_request", user_id, "bob@example.org",
                       {"type": "erasure", "password": PASSWORD}, WEB)
    token = created["progress_token"]
    assert token
    with pytest.raises(RemoteError) as closed:
        rpc.call("accounts", "log_in", {"email": "bob@example.org", "password": PASSWORD},
                 CLIENT)
    assert closed.value.exc_type == "AuthenticationFailed"
    progress = rpc.call("privacy", "erasure_progress", created["id"], token, WEB)
    assert progress["id"] == created["id"] and progress["type"] == "erasure"
    assert set(progress["services"]) >= {"accounts", "privacy"}
    with pytest.raises(RemoteError) as wrong:
        rpc.call("privacy", "erasure_progress", created["id"], "w" * 43, WEB)
    assert wrong.value.exc_type == "NotFound"
