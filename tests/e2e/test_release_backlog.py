"""Our own outage is not the owners' silence, at scale, against `make run`'s processes: a
hundred switches with five reminders each reach the end of grace together while delivery
is stopped. None fires while its overdue notice waits, and /readyz says why. Once
delivery is back, every notice leaves, each owner gets the whole grace again from that
moment, and then every switch fires: every owner received one overdue notice, and every
recipient exactly one mail.

Owners and messages are made through the services' own entry points (the events accounts
publishes, the scheduler's and the vault's RPCs), which is what signing up and writing
through the gateway come down to, without a hundred password hashes.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests

from deploy.local.supervisor import DEFAULT_SERVICES
from shared.events import new_event
from shared.rpc.client import RpcClientPool
from tests.e2e.conftest import System, free_port, start_system, system_environment
from tests.e2e.switch_system import SECONDS_LONG
from tests.helpers import wait_for
from tests.service.vault_helpers import publish

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

SWITCHES = 100
INTERVAL, GRACE = 40, 15
REMINDERS = [35, 28, 21, 14, 7]
PATIENCE = 180.0


@pytest.fixture
def system(tmp_path, vhost) -> Iterator[System]:
    environ = system_environment(tmp_path, vhost, DEFAULT_SERVICES,
                                 JICM_STRIPE_STANDIN_PORT=str(free_port()), **SECONDS_LONG)
    started = start_system(tmp_path, environ)
    yield started
    started.supervisor.stop_all()


@pytest.fixture
def rpc(system) -> Iterator[RpcClientPool]:
    pool = RpcClientPool(system.environ["AMQP_URI"], size=4, timeout=30)
    yield pool
    pool.close()


def owner(n: int) -> tuple[str, str]:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"backlog-owner-{n}")), f"owner{n}@example.org"


def recipient(n: int) -> str:
    return f"recipient{n}@example.org"


def seed(system: System, rpc: RpcClientPool) -> list[str]:
    """A hundred verified owners, each with an armed switch and one message for one person."""
    amqp = system.environ["AMQP_URI"]
    now = datetime.now(UTC)
    for n in range(SWITCHES):
        user_id, email = owner(n)
        publish(amqp, new_event("UserRegistered", {"user_id": user_id, "email": email,
                                                   "policy_version": "2024-04-29"},
                                producer="accounts", now=now))
        publish(amqp, new_event("EmailVerified", {"user_id": user_id, "email": email},
                                producer="accounts", now=now))
    switch_ids = []
    for n in range(SWITCHES):
        user_id, _ = owner(n)
        [switch] = wait_for(lambda u=user_id: _armed(rpc, u), timeout=PATIENCE,
                            what="every switch to be armed")
        switch_ids.append(switch["id"])
    for n in range(SWITCHES):
        user_id, email = owner(n)
        rpc.call("vault", "create_message", user_id, email, {
            "subject": f"For you, from {n}", "body": f"The last word of owner {n}.",
            "recipients": [{"name": f"Recipient {n}", "email": recipient(n)}]})
    # The schedule last, so that every deadline lies within a few seconds of the others.
    for n, switch_id in enumerate(switch_ids):
        rpc.call("scheduler", "update_switch", owner(n)[0], switch_id, {
            "interval_seconds": INTERVAL, "grace_seconds": GRACE,
            "reminders_seconds": REMINDERS})
    return switch_ids


def _armed(rpc: RpcClientPool, user_id: str) -> list[dict]:
    found = rpc.call("scheduler", "list_switches", user_id)["switches"]
    return found if found and found[0]["state"] == "armed" else []


def switches(rpc: RpcClientPool) -> list[dict]:
    return [rpc.call("scheduler", "list_switches", owner(n)[0])["switches"][0]
            for n in range(SWITCHES)]


def states(rpc: RpcClientPool) -> Counter:
    return Counter(switch["state"] for switch in switches(rpc))


def mail_count(system: System) -> Counter:
    return Counter(mail["X-Sink-Envelope-To"].strip() for mail in system.mail())


def test_a_backlog_of_switches_waits_for_delivery_and_then_every_one_fires_exactly_once(
        system, rpc):
    seed(system, rpc)
    system.supervisor.stop("delivery")
    assert states(rpc) == {"armed": SWITCHES}, "every deadline must still lie ahead"

    # Every grace period ends while delivery is down: none fires, and /readyz says why.
    last_grace_end = max(datetime.fromisoformat(s["deadline"]) for s in switches(rpc)) \
        + timedelta(seconds=GRACE)

    def all_held() -> bool:
        figures = requests.get(system.url("/readyz"), timeout=10).json().get("scheduler", {})
        return (datetime.now(UTC) > last_grace_end
                and figures.get("held_back_by_reason", {}).get("delivery_unavailable")
                == SWITCHES)

    wait_for(all_held, timeout=PATIENCE, interval=0.5, what="every switch to be held back")
    assert states(rpc) == {"overdue": SWITCHES}
    assert not any(address.startswith("recipient") for address in mail_count(system))

    back_at = datetime.now(UTC)
    system.supervisor.start("delivery")
    system.supervisor.wait_ready("delivery")
    wait_for(lambda: states(rpc) == {"released": SWITCHES}, timeout=PATIENCE, interval=1,
             what="every switch to fire and be released")

    for switch in switches(rpc):
        # Grace began again once the notice had left, after delivery came back.
        grace_ends_at = datetime.fromisoformat(switch["grace_ends_at"])
        assert grace_ends_at >= back_at + timedelta(seconds=GRACE)
        assert datetime.fromisoformat(switch["fired_at"]) >= grace_ends_at
    wait_for(lambda: sum(n for address, n in mail_count(system).items()
                         if address.startswith("recipient")) >= SWITCHES,
             timeout=PATIENCE, interval=0.5, what="every release mail")
    counts = mail_count(system)
    assert {recipient(n): counts[recipient(n)] for n in range(SWITCHES)} == \
        {recipient(n): 1 for n in range(SWITCHES)}
    notices = Counter(mail["X-Sink-Envelope-To"].strip() for mail in system.mail()
                      if "You missed your check-in" in str(mail["Subject"]))
    assert notices == Counter({owner(n)[1]: 1 for n in range(SWITCHES)})
