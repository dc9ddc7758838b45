"""Two scheduler processes on one SQLite file, and one of them SIGKILLed in the middle of a
claim: every due switch is still handled exactly once.

Forty switches are overdue with their grace over, their overdue notices not yet sent.
Delivery is down at first (its queue is there, nobody answers): before firing, each
instance asks it whether the notices left and holds its batch of claims until the
question times out. One instance is killed while it holds some. Then delivery comes
back, sends the notices through the SMTP sink, and the switches fire. The dead
instance's claims must not be lost (the other instance takes them over once the lease
ends) and must not be doubled: counted on the broker, every switch fires with exactly
one CheckInMissed.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import uuid
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import pytest
from kombu import Connection, Queue

from deploy.local.supervisor import ProcessSpec, Supervisor, default_specs
from services.scheduler.loop import DueSwitches, LoopSettings
from services.scheduler.scheduler import Scheduler, switch_id_for
from services.scheduler.schemas import SwitchUpdate
from services.scheduler.storage import INDEXES, SchedulerRepository
from services.scheduler.tokens import link_key
from shared.clock import SystemClock
from shared.config import load_settings
from shared.events.outbox import is_pending
from shared.events.topology import EVENTS_EXCHANGE, declare_topology
from shared.rpc.client import RpcClientPool
from shared.rpc.errors import RpcError
from shared.storage.provider import open_service_database
from tests.e2e.conftest import system_environment
from tests.helpers import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

SWITCHES = 40
# Longer than the scheduler's 5 s wait for delivery's answer: a live instance keeps its
# claims while it waits.
LEASE_SECONDS = 8


def overdue_switches(environ: dict[str, str], count: int) -> list[str]:
    """Switches whose grace ended minutes ago, written by the real domain code."""
    settings = load_settings(environ)
    db = open_service_database("scheduler", INDEXES, settings)
    repo = SchedulerRepository(db)
    past = SystemClock().now() - timedelta(minutes=10)
    key = link_key(settings.secret_key_bytes)
    ids = []
    for _ in range(count):
        user_id = str(uuid.uuid4())
        owner = Scheduler(repo, past, min_interval=1, link_key=key)
        owner.on_user_registered(user_id, "owner@example.org")
        owner.on_email_verified(user_id, "owner@example.org")
        owner.update(user_id, switch_id_for(user_id, 0), SwitchUpdate(
            interval_seconds=10, grace_seconds=10, reminders_seconds=[]))
        ids.append(switch_id_for(user_id, 0))
    loop = LoopSettings(instance="setup", batch=1000, lease=timedelta(seconds=30),
                        recheck=timedelta(seconds=1), link_key=key)
    DueSwitches(repo, past + timedelta(seconds=10), loop, lambda refs: {}).tick()
    assert repo.count_by_state()["overdue"] == count
    db.close()
    return ids


def documents(db_path: Path) -> dict[str, dict]:
    """The scheduler's switches as stored (dates stay tagged ISO strings), read as an
    operator would."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        return {switch_id: json.loads(doc)
                for switch_id, doc in db.execute("SELECT id, doc FROM switches")}


def claims_of(db_path: Path, pid: int) -> dict[str, str]:
    """The switches the instance running as `pid` holds: id -> end of its lease."""
    return {switch_id: doc["claim"]["until"]["$date"]
            for switch_id, doc in documents(db_path).items()
            if "claim" in doc and doc["claim"]["by"].split(":")[1] == str(pid)}


def test_a_scheduler_killed_in_the_middle_of_a_claim_loses_nothing_and_doubles_nothing(
    tmp_path, vhost
):
    environ = system_environment(
        tmp_path, vhost, "delivery", JICM_MIN_INTERVAL="1", JICM_SCHEDULER_TICK="0.2",
        JICM_SCHEDULER_BATCH="4", JICM_SCHEDULER_LEASE=str(LEASE_SECONDS),
        JICM_SCHEDULER_RECHECK="1", JICM_DELIVERY_TICK="0.2",
    )
    ids = overdue_switches(environ, SWITCHES)
    db_path = Path(environ["JICM_DATA_DIR"]) / "scheduler.sqlite3"

    # Every CheckInMissed published is copied here, duplicates included.
    declare_topology(vhost)
    fired_queue = Queue(f"test.fired.{uuid.uuid4().hex[:8]}", exchange=EVENTS_EXCHANGE,
                        routing_key="CheckInMissed", durable=True)
    with Connection(vhost) as conn:
        fired_queue(conn.channel()).declare()

    python = sys.executable
    made_run = {spec.name: spec for spec in default_specs(environ)}
    specs = [
        made_run["smtp"], made_run["delivery"],
        ProcessSpec("scheduler-a", [python, "-m", "shared.runner", "scheduler"]),
        ProcessSpec("scheduler-b", [python, "-m", "shared.runner", "scheduler"]),
    ]
    supervisor = Supervisor(specs, env=environ, log_dir=tmp_path / "logs")
    try:
        # Delivery goes down: its RPC queue stays, so questions wait there unanswered.
        supervisor.start("delivery")
        wait_for(lambda: answers(environ["AMQP_URI"], "delivery"), timeout=60,
                 what="delivery to answer")
        supervisor.stop("delivery")
        for name in ("scheduler-a", "scheduler-b"):
            supervisor.start(name)
        victim = supervisor.pid("scheduler-a")
        wait_for(lambda: claims_of(db_path, victim), timeout=60, interval=0.01,
                 what="scheduler-a to hold claims")
        supervisor.kill("scheduler-a")
        orphaned = claims_of(db_path, victim)
        assert orphaned, "scheduler-a was killed while holding no claim"
        for name in ("smtp", "delivery"):  # delivery is back: the notices leave
            supervisor.start(name)

        wait_for(lambda: all(doc["state"] == "fired" for doc in documents(db_path).values()),
                 timeout=120, interval=0.2, what="every switch to fire")
        # Every publish is done once no outbox holds anything (a dead relay's half-finished
        # work is taken over when its lease ends, and published again).
        wait_for(lambda: all(not is_pending(doc) for doc in documents(db_path).values()),
                 timeout=90, interval=0.2, what="every outbox to be relayed")
        published = drain(vhost, fired_queue)
        final = documents(db_path)
    finally:
        supervisor.stop_all()

    # The orphans were left alone until their lease ran out, then taken over.
    for switch_id, lease_end in orphaned.items():
        assert final[switch_id]["fired_at"]["$date"] >= lease_end

    event_ids: dict[str, set[str]] = defaultdict(set)
    for event in published:
        event_ids[event["data"]["switch_id"]].add(event["event_id"])
    assert set(event_ids) == set(ids)
    assert {switch_id: len(found) for switch_id, found in event_ids.items()} == {
        switch_id: 1 for switch_id in ids}


def answers(amqp_uri: str, service: str) -> bool:
    """Whether `service` answers an RPC now."""
    rpc = RpcClientPool(amqp_uri, size=1, timeout=5)
    try:
        rpc.call(service, "health", timeout=2)
    except RpcError:
        return False
    finally:
        rpc.close()
    return True


def drain(amqp_uri: str, queue: Queue) -> list[dict]:
    """Every message waiting in `queue`."""
    messages: list[dict] = []
    with Connection(amqp_uri) as conn:
        bound = queue(conn.channel())
        while (message := bound.get(no_ack=True)) is not None:
            messages.append(json.loads(message.body))
    return messages
