"""Sessions end everywhere at once: two gateway replicas (two gunicorns) of two workers
each, every worker holding the session in its cache, and a log-out, a password change or
a password reset is refused by every worker of both within a second. A request made with
a cached session costs exactly one RPC: the call itself.

Which worker answers a request is the kernel's choice, so the test reads what it needs
from each replica's /metrics: `jicm_gateway_sessions_cached` (one series per worker, by
pid) shows every worker holding the session, then every worker forgetting it; the RPC
counters show how many calls the requests made."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from deploy.local.supervisor import default_specs, http_ok
from tests.e2e.conftest import System, free_port, start_system, system_environment
from tests.e2e.people import PASSWORD, Sender, mail_to, text_of
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

WORKERS = 2
NEW_PASSWORD = "a quiet harbour at dawn 42"
RESET_LINK = re.compile(r"https?://\S+?/reset\?token=([A-Za-z0-9_-]+)")
# Long enough that only a revocation, never the end of an entry's life, empties a cache.
CACHE_SECONDS = "60"


@dataclasses.dataclass
class Gateways:
    system: System
    urls: list[str]


@pytest.fixture(scope="module")
def gateways(tmp_path_factory, vhost) -> Iterator[Gateways]:
    """Accounts, delivery, the sink and two gateway replicas of two workers each."""
    tmp = tmp_path_factory.mktemp("revocation")
    environ = system_environment(tmp, vhost, "accounts,delivery", JICM_TRUSTED_PROXIES="1",
                                 JICM_GATEWAY_WORKERS=str(WORKERS), JICM_DELIVERY_TICK="0.2",
                                 JICM_SESSION_CACHE_SECONDS=CACHE_SECONDS)
    specs = default_specs(environ)
    first = next(spec for spec in specs if spec.name == "gateway")
    port = free_port()
    bind = f"127.0.0.1:{port}"
    second = dataclasses.replace(
        first, name="gateway-2",
        argv=[bind if arg == environ["JICM_GATEWAY_BIND"] else arg for arg in first.argv],
        ready=http_ok("127.0.0.1", port, "/readyz"), ports=(("127.0.0.1", port),))
    system = start_system(tmp, environ, [*specs, second])
    yield Gateways(system, [system.base_url, f"http://{bind}"])
    system.supervisor.stop_all()


def samples(url: str, name: str) -> list:
    text = requests.get(f"{url}/metrics", timeout=10).text
    return [sample for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == name]


def cached_per_worker(url: str) -> dict[str, float]:
    """Each live worker's count of cached sessions, by pid."""
    return {s.labels["pid"]: s.value for s in samples(url, "jicm_gateway_sessions_cached")}


def rpc_count(url: str, method: str) -> float:
    """How many RPCs to accounts.`method` this replica's workers made, whatever the outcome."""
    return sum(s.value for s in samples(url, "jicm_gateway_rpc_duration_seconds_count")
               if s.labels["service"] == "accounts" and s.labels["method"] == method)


def sessions_of(sender: Sender, url: str) -> requests.Response:
    # A fresh connection each time (no keep-alive), so the requests spread over the workers.
    return requests.get(f"{url}/api/v1/sessions", headers=sender.headers, timeout=30)


def cached_by_every_worker(gateways: Gateways, sender: Sender) -> None:
    """Ask through every replica until each of its workers holds the sender's session."""
    def everywhere() -> bool:
        for url in gateways.urls:
            for _ in range(4):
                assert sessions_of(sender, url).status_code == 200
        counts = [cached_per_worker(url) for url in gateways.urls]
        return all(len(c) == WORKERS and all(v >= 1 for v in c.values()) for c in counts)

    wait_for(everywhere, timeout=60, interval=0, what="every worker caching the session")


def forgotten_by_every_worker_within_a_second(gateways: Gateways, since: float) -> None:
    def everywhere() -> bool:
        return all(value == 0 for url in gateways.urls
                   for value in cached_per_worker(url).values())

    wait_for(everywhere, timeout=10, interval=0, what="every worker forgetting the session")
    took = time.monotonic() - since
    assert took <= 1.0, f"the last worker forgot the session {took:.2f} s after it ended"


def refused_everywhere(gateways: Gateways, sender: Sender) -> None:
    for url in gateways.urls:
        for _ in range(4 * WORKERS):
            answer = sessions_of(sender, url)
            assert answer.status_code == 401, answer.text
            assert answer.json()["error"]["code"] == "invalid_token"


def test_a_request_with_a_cached_session_makes_exactly_one_rpc(gateways):
    sender = Sender(gateways.system)
    cached_by_every_worker(gateways, sender)
    for url in gateways.urls:
        resolved, listed = rpc_count(url, "resolve_session"), rpc_count(url, "list_sessions")
        for _ in range(10):
            assert sessions_of(sender, url).status_code == 200
        assert rpc_count(url, "resolve_session") == resolved, "no RPC to resolve the session"
        assert rpc_count(url, "list_sessions") == listed + 10, "one RPC: the call itself"
    sender.call("DELETE", "/api/v1/sessions/current")


def test_a_log_out_is_refused_by_every_worker_of_every_replica_within_a_second(gateways):
    sender = Sender(gateways.system)
    cached_by_every_worker(gateways, sender)
    logged_out = requests.delete(f"{gateways.urls[1]}/api/v1/sessions/current",
                                 headers=sender.headers, timeout=10)
    assert logged_out.status_code == 204
    forgotten_by_every_worker_within_a_second(gateways, time.monotonic())
    refused_everywhere(gateways, sender)


def test_a_password_change_is_refused_by_every_worker_of_every_replica_within_a_second(
        gateways):
    sender = Sender(gateways.system)
    cached_by_every_worker(gateways, sender)
    old = dict(sender.headers)
    changed = requests.post(f"{gateways.urls[0]}/api/v1/me/password", headers=old, timeout=30,
                            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD})
    assert changed.status_code == 200, changed.text
    forgotten_by_every_worker_within_a_second(gateways, time.monotonic())
    sender.headers = old
    refused_everywhere(gateways, sender)


def test_a_password_reset_is_refused_by_every_worker_of_every_replica_within_a_second(
        gateways):
    sender = Sender(gateways.system)
    cached_by_every_worker(gateways, sender)
    asked = requests.post(f"{gateways.urls[0]}/api/v1/password-resets", timeout=10,
                          headers=sender.client, json={"email": sender.email})
    assert asked.status_code == 202
    reset_mail = wait_for(lambda: [m for m in mail_to(gateways.system, sender.email)
                                   if RESET_LINK.search(text_of(m))],
                          timeout=60, what="the reset mail")[-1]
    token = RESET_LINK.search(text_of(reset_mail)).group(1)
    done = requests.post(f"{gateways.urls[1]}/api/v1/password-resets/confirm", timeout=30,
                         json={"token": token, "password": NEW_PASSWORD})
    assert done.status_code == 200, done.text
    forgotten_by_every_worker_within_a_second(gateways, time.monotonic())
    refused_everywhere(gateways, sender)
