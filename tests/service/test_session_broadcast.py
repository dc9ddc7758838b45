"""Session revocation on the real RabbitMQ: accounts' log-out reaches every gateway
worker's listener (each with a queue of its own, not competing for one), and a listener
that loses the broker stops using its cache until it is back, starting empty."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import requests
from kombu import Connection

from gateway.sessions import CONNECTION_NAME, RevocationListener, SessionCache
from services.accounts.service import AccountsService
from services.accounts.sessions import session_id
from shared.events.broadcast import BROADCAST_EXCHANGE_NAME
from shared.rpc.client import RpcClientPool
from tests.helpers import erase_part, wait_for

pytestmark = pytest.mark.service

PASSWORD = "correct horse battery staple"
MANAGEMENT = "http://127.0.0.1:15672/api"
AUTH = ("guest", "guest")


@pytest.fixture
def accounts(container_factory, service_config):
    container = container_factory(AccountsService, service_config)
    container.start()
    return container


@pytest.fixture
def rpc(service_config):
    pool = RpcClientPool(service_config["AMQP_URI"], size=2, timeout=10)
    yield pool
    pool.close()


@pytest.fixture
def workers(service_config):
    """Two gateway workers' caches, each with its listener, listening."""
    started = []
    for _ in range(2):
        cache = SessionCache(60, 100)
        listener = RevocationListener(service_config["AMQP_URI"], cache)
        listener.start()
        started.append((cache, listener))
    wait_for(lambda: all(cache.in_use for cache, _ in started), what="both listeners bound")
    yield [cache for cache, _ in started]
    for _, listener in started:
        listener.stop()


def signed_in(rpc) -> tuple[dict, str]:
    account = rpc.call("accounts", "sign_up",
                       {"email": "ada@example.org", "password": PASSWORD,
                        "date_of_birth": "1990-01-01", "accept_policy_version": "2024-04-29"},
                       {"ip": "203.0.113.5"})
    session = rpc.call("accounts", "log_in", {"email": "ada@example.org", "password": PASSWORD},
                       {"ip": "203.0.113.5"})
    return account, session["token"]


def cache_resolved(cache: SessionCache, rpc, token: str) -> None:
    resolved = rpc.call("accounts", "resolve_session", token)
    assert cache.put(session_id(token), resolved["profile"],
                     datetime.fromisoformat(resolved["expires_at"]), cache.generation())


def test_a_log_out_reaches_every_workers_listener(accounts, rpc, workers):
    account, token = signed_in(rpc)
    for cache in workers:
        cache_resolved(cache, rpc, token)
        assert cache.get(session_id(token))["id"] == account["id"]
    rpc.call("accounts", "log_out", token)
    wait_for(lambda: all(cache.get(session_id(token)) is None for cache in workers),
             timeout=1, what="every worker forgetting the ended session")


def test_a_password_change_reaches_every_workers_listener(accounts, rpc, workers):
    _, token = signed_in(rpc)
    for cache in workers:
        cache_resolved(cache, rpc, token)
    rpc.call("accounts", "change_password", token,
             {"current_password": PASSWORD, "new_password": "a quiet harbour at dawn 42"},
             {"ip": "203.0.113.5"})
    wait_for(lambda: all(len(cache) == 0 for cache in workers), timeout=1,
             what="every worker forgetting every session of the user")


def connections_named(name: str) -> list[dict]:
    listed = requests.get(f"{MANAGEMENT}/connections", auth=AUTH, timeout=10).json()
    return [c for c in listed if c.get("client_properties", {}).get("connection_name") == name]


def test_a_listener_that_loses_the_broker_stops_using_its_cache_and_comes_back_empty(
        service_config):
    cache = SessionCache(60, 100)
    listener = RevocationListener(service_config["AMQP_URI"], cache)
    listener.start()
    try:
        wait_for(lambda: cache.in_use, what="the listener bound")
        vhost = service_config["AMQP_URI"].rsplit("/", 1)[-1]
        cache.put("s1", {"id": "user-1"}, datetime.now(UTC) + timedelta(hours=1),
                  cache.generation())
        (connection,) = wait_for(lambda: [c for c in connections_named(CONNECTION_NAME)
                                          if c["vhost"] == vhost], what="its connection")
        requests.delete(f"{MANAGEMENT}/connections/{connection['name']}", auth=AUTH,
                        timeout=10).raise_for_status()
        wait_for(lambda: not cache.in_use, what="the cache off once the broker is lost")
        assert cache.get("s1") is None
        wait_for(lambda: cache.in_use, timeout=15, what="the listener back")
        assert len(cache) == 0
    finally:
        listener.stop()


def test_an_erasure_whose_closing_failed_still_reaches_every_workers_listener(
        accounts, rpc, workers):
    account, token = signed_in(rpc)
    for cache in workers:
        cache_resolved(cache, rpc, token)
    # privacy's saga, without the close_account call that normally comes first
    erase_part(accounts, account["id"])
    wait_for(lambda: all(len(cache) == 0 for cache in workers), timeout=1,
             what="every worker forgetting the erased user")


def test_a_broadcast_a_listener_cannot_read_empties_its_whole_cache(service_config, workers):
    for cache in workers:
        cache.put("s1", {"id": "user-1"}, datetime.now(UTC) + timedelta(hours=1),
                  cache.generation())
    with Connection(service_config["AMQP_URI"]) as conn:
        conn.Producer().publish({"type": "AccountChanged", "data": {"who": "?"}},
                                exchange=BROADCAST_EXCHANGE_NAME, routing_key="AccountChanged",
                                serializer="json")
    wait_for(lambda: all(len(cache) == 0 for cache in workers), timeout=1,
             what="every worker emptying its cache")
    assert all(cache.in_use for cache in workers), "and listening still"
