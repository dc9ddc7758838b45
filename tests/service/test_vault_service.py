"""The vault on the real RabbitMQ: written to over RPC as the gateway does, releasing on
CheckInMissed exactly once through crashes and redeliveries, rotating its KEK while
messages are being written, and keeping nothing readable at rest. The real scheduler
answers the vault's questions about switches; the tests make their users' switches in
its store with its own domain code (`Switchboard`)."""

from __future__ import annotations

import base64
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import eventlet
import pytest
from nameko.testing.utils import get_extension

from services.scheduler.service import SchedulerService
from services.vault.dependencies import ReleaseDispatcher
from services.vault.keys import DataKeyCache, DataKeys, keyring_from_settings
from services.vault.messages import Messages
from services.vault.release import Release, release_event_id
from services.vault.schemas import NewMessage
from services.vault.service import VaultService
from services.vault.storage import INDEXES, VaultRepository
from shared.clock import SystemClock
from shared.config import SETTINGS_CONFIG_KEY, load_settings
from shared.errors import rebuild
from shared.events import event_handler, new_event
from shared.events.schemas import CheckInMissed
from shared.plans import free_limits
from shared.rpc.client import RpcClientPool
from shared.rpc.errors import RemoteError
from shared.storage.provider import Storage, database_of, open_service_database
from tests.helpers import dead_letters, erase_part, wait_for
from tests.service.vault_helpers import (
    EventTap,
    Switchboard,
    check_in_missed,
    publish,
    stored_bytes,
)

pytestmark = pytest.mark.service

REPO = Path(__file__).resolve().parents[2]
# Several suites share this 2-core machine: deadlines are generous, polls are quick.
PATIENCE = 45.0
HEARD: list = []


class ReleaseListener:
    """A consumer of MessageReleased like delivery will be: it deduplicates by event id."""

    name = "release_listener"
    store = Storage({})

    @event_handler("MessageReleased")
    def on_message_released(self, event) -> None:
        HEARD.append(event.data.message_id)


@pytest.fixture(autouse=True)
def _clear():
    HEARD.clear()


@pytest.fixture
def scheduler(container_factory, service_config):
    container = container_factory(SchedulerService, service_config)
    container.start()
    return container


@pytest.fixture
def switches(scheduler) -> Switchboard:
    return Switchboard(scheduler)


@pytest.fixture
def ada(switches) -> str:
    """Ada's default switch (she is the usual author)."""
    return switches.user("ada")


@pytest.fixture
def vault(container_factory, service_config, scheduler):
    container = container_factory(VaultService, service_config)
    container.start()
    return container


@pytest.fixture
def rpc(service_config):
    pool = RpcClientPool(service_config["AMQP_URI"], size=4, timeout=15)
    yield pool
    pool.close()


@pytest.fixture
def tap(service_config):
    tap = EventTap(service_config["AMQP_URI"], "MessageReleased")
    yield tap
    tap.close()


def time_now():
    return SystemClock().now()


def draft(subject="For the family", body="The code of the safe is 4921.",
          recipients=(("Grace Hopper", "grace@example.org"),), **more) -> dict:
    return {"subject": subject, "body": body,
            "recipients": [{"name": n, "email": e} for n, e in recipients], **more}


def write(rpc, user_id="ada", **fields) -> str:
    return rpc.call("vault", "create_message", user_id, f"{user_id}@example.org",
                    draft(**fields))["id"]


def released_of(tap: EventTap, count: int) -> list[dict]:
    return wait_for(lambda: (events := tap.drain()) and len(events) >= count and events,
                    timeout=PATIENCE, what=f"{count} MessageReleased")


def settle(vault_container) -> None:
    """Run the dispatcher once more by hand: whatever was due has now left."""
    get_extension(vault_container, ReleaseDispatcher).dispatch_now()


# Nothing readable at rest ---------------------------------------------------------------

SECRETS = {
    "subject": "Unter dem Apfelbaum 🍎",
    "body": "The key is taped under the third drawer; PIN 80417.",
    "names": ("Wilhelmina Quartermaine", "Bartholomew Oyelaran-Fitz"),
    "addresses": ("wilhelmina.q@example.org", "b.oyelaran@example.net"),
    "sender": "Ada Byron King",
}


def test_a_dump_of_the_vault_holds_no_plaintext_and_no_address(vault, rpc, tap, settings,
                                                              switches, ada):
    recipients = tuple(zip(SECRETS["names"], SECRETS["addresses"], strict=True))
    switches.user("eve")
    for user in ("ada", "eve"):
        write(rpc, user, subject=SECRETS["subject"], body=SECRETS["body"],
              recipients=recipients, sender_name=SECRETS["sender"])
    message_id = write(rpc, "ada", subject="Second", body=SECRETS["body"] + " (copy)",
                       recipients=recipients[:1], switch_id=switches.another("ada"))
    rpc.call("vault", "update_message", "ada", "ada@example.org", message_id,
             {"body": SECRETS["body"] + " (edited)"})
    publish(settings.amqp_uri, check_in_missed("ada", ada))
    tokens = [r["read_token"] for e in released_of(tap, 1) for r in e["data"]["recipients"]]
    readable = [SECRETS["subject"], SECRETS["body"], "PIN 80417", SECRETS["sender"],
                *SECRETS["names"], *SECRETS["addresses"], "ada@example.org",
                "eve@example.org", *tokens]

    raw = stored_bytes(settings.data_dir)
    with sqlite3.connect(settings.data_dir / "vault.sqlite3") as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master "
                                               "WHERE type = 'table'")]
        rows = "\n".join(str(db.execute(f"SELECT * FROM {table}").fetchall())  # noqa: S608
                         for table in tables)
    assert {"messages", "data_keys", "read_tokens"} <= set(tables)
    for text in readable:
        assert text.encode() not in raw, f"{text!r} rests readable in the file"
        assert text not in rows, f"{text!r} rests readable in a row"
    # ...while the author can still read everything back.
    listed = rpc.call("vault", "list_messages", "ada")["messages"]
    assert {m["subject"] for m in listed} == {SECRETS["subject"], "Second"}


# The release ------------------------------------------------------------------------------


def test_check_in_missed_releases_one_event_per_message_with_addresses_and_tokens_only(
    vault, rpc, tap, settings, switches, ada
):
    three = (("Grace", "grace@example.org"), ("Alan", "alan@example.org"),
             ("Kurt", "kurt@example.org"))
    first = write(rpc, recipients=three)
    second = write(rpc, recipients=three[:2], subject="Another", body="Another text",
                   inline=True)
    untouched = write(rpc, switch_id=switches.another("ada"))
    publish(settings.amqp_uri, check_in_missed("ada", ada, cycle=7))

    events = released_of(tap, 2)
    assert sorted(e["data"]["message_id"] for e in events) == sorted([first, second])
    by_message = {e["data"]["message_id"]: e for e in events}
    assert by_message[first]["event_id"] == release_event_id(first, 7)
    assert [r["email"] for r in by_message[first]["data"]["recipients"]] == [
        "grace@example.org", "alan@example.org", "kurt@example.org"]
    assert by_message[second]["data"]["inline"] is True
    for raw in tap.raw:
        for text in (b"4921", b"For the family", b"Another text"):
            assert text not in raw, "no message content travels on the broker"

    token = by_message[first]["data"]["recipients"][1]["read_token"]
    read = rpc.call("vault", "read_released", token, {"ip": "203.0.113.5"})
    assert (read["recipient_name"], read["body"]) == ("Alan", "The code of the safe is 4921.")
    recipient_id = by_message[second]["data"]["recipients"][0]["recipient_id"]
    content = rpc.call("vault", "released_content", second, recipient_id)
    assert content["subject"] == "Another"
    assert rpc.call("vault", "get_message", "ada", untouched)["state"] == "sealed"
    status = rpc.call("vault", "release_status", ada)
    assert {key: status[key] for key in ("sealed", "released", "waiting", "complete")} == {
        "sealed": 0, "released": 2, "waiting": 0, "complete": True}
    # This switch never fired at the scheduler (the test played CheckInMissed): it refuses.
    wait_for(lambda: rpc.call("vault", "release_status", ada)["scheduler"] == "refused",
             timeout=PATIENCE, what="the scheduler's answer")


def test_check_in_missed_delivered_twice_releases_nothing_more(vault, rpc, tap, settings, ada):
    write(rpc)
    write(rpc)
    missed = check_in_missed("ada", ada)
    publish(settings.amqp_uri, missed)
    released_of(tap, 2)
    publish(settings.amqp_uri, missed)  # the same event again
    resent = {**check_in_missed("ada", ada), "data": missed["data"]}
    publish(settings.amqp_uri, resent)  # and the same fact under a new event id
    records = database_of(vault).collection("processed_events")
    wait_for(lambda: records.count({"event_id": resent["event_id"], "state": "done"}) == 1,
             timeout=PATIENCE, what="the second CheckInMissed to be handled")
    settle(vault)
    assert len(tap.drain()) == 2


def test_a_sealed_message_is_not_given_to_anyone(vault, rpc, ada):
    message_id = write(rpc)
    recipient = rpc.call("vault", "get_message", "ada", message_id)["recipients"][0]
    with pytest.raises(RemoteError) as refused:
        rpc.call("vault", "released_content", message_id, recipient["id"])
    assert refused.value.exc_type == "Forbidden"
    with pytest.raises(RemoteError) as unknown:
        rpc.call("vault", "read_released", "a-token-nobody-was-ever-given", {})
    assert unknown.value.exc_type == "NotFound"


class OneSwitch:
    """The scheduler's answers while the vault is down: everything goes to one switch."""

    def __init__(self, switch_id: str) -> None:
        self.switch_id = switch_id

    def default_switch_id(self, user_id: str) -> str:
        return self.switch_id

    def owns_switch(self, user_id: str, switch_id: str) -> bool:
        return switch_id == self.switch_id


def seed_half_released(settings, amqp_uri, switch_id: str) -> tuple[str, str]:
    """The state a vault leaves when it dies in the middle of a release: the first message
    released and its event published but not yet marked as handed over, the second sealed."""
    db = open_service_database("vault", INDEXES, settings)
    repo = VaultRepository(db)
    keys = DataKeys(repo.data_keys, keyring_from_settings(settings), DataKeyCache())
    now = time_now()
    messages = Messages(repo, keys, OneSwitch(switch_id), lambda user_id: free_limits(), now)
    first = messages.create("ada", "ada@example.org", NewMessage.model_validate(draft())).id
    second = messages.create("ada", "ada@example.org", NewMessage.model_validate(draft())).id
    release = Release(repo, keys, now)
    fired = CheckInMissed(user_id="ada", switch_id=switch_id, cycle=3, deadline=now,
                          fired_at=now)
    release._release_one(repo.message(first), fired)
    publish(amqp_uri, release.released_event(repo.message(first)))  # then the process died
    db.close()
    return first, second


def test_a_release_interrupted_by_a_crash_is_finished_exactly_once(
    container_factory, service_config, scheduler, settings, tap, ada
):
    listener = container_factory(ReleaseListener, service_config)
    listener.start()
    first, second = seed_half_released(settings, settings.amqp_uri, ada)
    vault = container_factory(VaultService, service_config)
    vault.start()  # the vault comes back, and CheckInMissed is redelivered
    publish(settings.amqp_uri, check_in_missed("ada", ada, cycle=3))

    events = released_of(tap, 3)
    ids = {}
    for event in events:
        ids.setdefault(event["data"]["message_id"], set()).add(event["event_id"])
    assert ids == {first: {release_event_id(first, 3)}, second: {release_event_id(second, 3)}}
    wait_for(lambda: sorted(HEARD) == sorted([first, second]), timeout=PATIENCE)
    settle(vault)
    assert sorted(HEARD) == sorted([first, second]), "each message handled once downstream"


# The switch ends released -------------------------------------------------------------------


def switch_state(rpc, user_id: str, switch_id: str) -> str:
    return rpc.call("scheduler", "get_switch", user_id, switch_id)["state"]


def test_the_switch_ends_released_once_every_message_was_handed_over(vault, rpc, tap, settings,
                                                                     switches, ada):
    write(rpc)
    write(rpc, inline=True)
    cycle = switches.fire("ada", ada)
    publish(settings.amqp_uri, check_in_missed("ada", ada, cycle=cycle))
    released_of(tap, 2)
    wait_for(lambda: switch_state(rpc, "ada", ada) == "released", timeout=PATIENCE,
             what="the scheduler to hear the switch is released")
    assert rpc.call("vault", "release_status", ada)["scheduler"] == "released"


def test_a_switch_without_messages_ends_released_too(vault, rpc, settings, switches, ada):
    cycle = switches.fire("ada", ada)
    publish(settings.amqp_uri, check_in_missed("ada", ada, cycle=cycle))
    wait_for(lambda: switch_state(rpc, "ada", ada) == "released", timeout=PATIENCE,
             what="an empty switch to end released")


def test_a_scheduler_that_was_down_hears_of_the_release_once_it_is_back(
    vault, scheduler, container_factory, service_config, rpc, tap, settings, switches, ada
):
    write(rpc)
    cycle = switches.fire("ada", ada)
    scheduler.stop()  # its queue stays: the vault's calls wait there, expire, are retried
    publish(settings.amqp_uri, check_in_missed("ada", ada, cycle=cycle))
    released_of(tap, 1)
    releases = database_of(vault).collection("releases")
    wait_for(lambda: releases.get(ada) and releases.get(ada).get("attempts", 0) >= 1,
             timeout=PATIENCE, what="the vault to fail to tell the scheduler")
    assert releases.get(ada)["state"] == "releasing"

    container_factory(SchedulerService, service_config).start()
    wait_for(lambda: switch_state(rpc, "ada", ada) == "released", timeout=PATIENCE,
             what="the scheduler to hear of the release once back")


# Plans, erasure, the scheduler ----------------------------------------------------------------


def test_a_plan_change_sets_the_limits_the_vault_applies(vault, rpc, settings, ada):
    entitlements = {"switches": 1, "messages_per_switch": 1, "recipients_per_message": 3,
                    "body_bytes": 10_240}
    publish(settings.amqp_uri, new_event(
        "PlanChanged", {"user_id": "ada", "plan": "free", "status": "canceled",
                        "entitlements": entitlements},
        producer="billing", now=time_now()))
    kept = database_of(vault).collection("entitlements")
    wait_for(lambda: kept.get("ada") is not None, timeout=PATIENCE,
             what="the plan to be recorded")
    write(rpc)
    with pytest.raises(RemoteError) as refused:
        write(rpc)
    error = rebuild(refused.value.exc_type, refused.value.exc_args)
    assert (error.status, error.code) == (402, "plan_limit_reached")
    assert error.details == {"limit": "messages_per_switch", "allowed": 1, "wanted": 2,
                             "plan": "free"}


def test_erasing_a_user_shreds_the_key_and_deletes_the_messages(vault, rpc, switches, ada):
    switches.user("eve")
    message_id = write(rpc)
    write(rpc, "eve")
    summary = erase_part(vault, "ada")
    assert summary == {"data_keys": 1, "messages": 1, "read_tokens": 0, "releases": 0,
                       "entitlements": 0, "test_releases": 0, "test_read_tokens": 0}
    with pytest.raises(RemoteError) as gone:
        rpc.call("vault", "get_message", "ada", message_id)
    assert gone.value.exc_type == "NotFound"
    assert database_of(vault).collection("data_keys").get("ada") is None
    assert erase_part(vault, "ada")["messages"] == 0
    assert len(rpc.call("vault", "list_messages", "eve")["messages"]) == 1


def test_a_switch_that_fired_takes_no_new_message_and_the_vault_says_why(vault, rpc, switches,
                                                                        ada):
    write(rpc)
    switches.fire("ada", ada)
    with pytest.raises(RemoteError) as refused:
        write(rpc)
    error = rebuild(refused.value.exc_type, refused.value.exc_args)
    assert (error.status, error.code) == (409, "switch_fired")
    assert error.details["state"] == "fired"
    assert len(rpc.call("vault", "list_messages", "ada")["messages"]) == 1


def test_another_users_switch_is_refused_like_one_that_does_not_exist(vault, rpc, switches):
    switches.user("eve")
    eves = switches.another("eve")
    for switch_id in (eves, "no-such-switch"):
        with pytest.raises(RemoteError) as refused:
            write(rpc, "eve-not", switch_id=switch_id)
        error = rebuild(refused.value.exc_type, refused.value.exc_args)
        assert (error.status, error.code) == (404, "switch_not_found")


def test_without_a_scheduler_writing_fails_at_once_with_a_503(container_factory, service_config,
                                                              rpc):
    container_factory(VaultService, service_config).start()
    with pytest.raises(RemoteError) as refused:
        write(rpc)
    assert refused.value.exc_type == "Unavailable"
    assert refused.value.exc_args[1] == "scheduler_unavailable"


def test_a_scheduler_that_stopped_answering_makes_writing_fail_within_its_deadline(
    vault, scheduler, rpc, ada
):
    write(rpc)
    scheduler.stop()  # its queue stays: requests wait there, and expire
    started = time.monotonic()
    with pytest.raises(RemoteError) as refused:
        write(rpc)
    assert refused.value.exc_type == "Unavailable"
    assert time.monotonic() - started < 6


def test_the_vault_answers_the_readiness_probe(vault, rpc):
    assert rpc.call("vault", "health")["status"] == "ok"


# KEK rotation while the vault runs --------------------------------------------------------------


def kek() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def vault_settings(base, **keys):
    environ = {"JICM_ENV": "test", "AMQP_URI": base.amqp_uri, "JICM_DATA_DIR": str(base.data_dir),
               **keys}
    return environ, load_settings(environ)


def premium(amqp_uri: str, user_id: str) -> None:
    """Billing announces a paid plan for the user (more messages per switch)."""
    entitlements = {"switches": 5, "messages_per_switch": 50, "recipients_per_message": 20,
                    "body_bytes": 102_400}
    publish(amqp_uri, new_event(
        "PlanChanged", {"user_id": user_id, "plan": "premium_monthly", "status": "active",
                        "entitlements": entitlements, "revision": 1},
        producer="billing", now=time_now()))


def test_rotating_the_kek_while_messages_are_written_loses_nothing(
    container_factory, service_config, scheduler, switches, settings, rpc
):
    old, new = kek(), kek()
    _, first = vault_settings(settings, JICM_VAULT_KEK=old, JICM_VAULT_KEK_ID="1")
    rotation_env, second = vault_settings(settings, JICM_VAULT_KEK=new, JICM_VAULT_KEK_ID="2",
                                          JICM_VAULT_OLD_KEKS=f"1:{old}")
    _, third = vault_settings(settings, JICM_VAULT_KEK=new, JICM_VAULT_KEK_ID="2")

    # Under the old KEK: messages, and many more users' keys, so the rotation takes a while.
    before = container_factory(VaultService, {**service_config, SETTINGS_CONFIG_KEY: first})
    before.start()
    authors = [f"user-{n}" for n in range(5)]
    for user in authors:
        switches.user(user)
        premium(settings.amqp_uri, user)
    plans = database_of(before).collection("entitlements")
    wait_for(lambda: all(plans.get(user) for user in authors), timeout=PATIENCE,
             what="the paid plans to reach the vault")
    written = {write(rpc, user, body=f"message {user}"): user for user in authors}
    keys = DataKeys(database_of(before).collection("data_keys"), keyring_from_settings(first),
                    DataKeyCache())
    for n in range(300):
        keys.get_or_create(f"quiet-{n}", time_now())
    before.stop()

    # The new KEK is current, the old one kept: old keys still open.
    during = container_factory(VaultService, {**service_config, SETTINGS_CONFIG_KEY: second})
    during.start()
    for message_id, user in written.items():
        assert rpc.call("vault", "get_message", user, message_id)["body"].startswith("message")

    stop = []

    def writer(number: int) -> None:
        # Odd writers add to the authors whose keys are being re-wrapped (a bounded number,
        # within their plan); even ones bring new authors, whose keys are born under the
        # new KEK.
        round_ = 0
        while not stop and (number % 2 == 0 or round_ < 40):
            if number % 2:
                user = authors[round_ % len(authors)]
            else:
                user = f"new-{number}-{round_}"
                switches.user(user)
            body = f"written during rotation {number}/{round_}"
            written[write(rpc, user, body=body)] = user
            round_ += 1

    writers = [eventlet.spawn(writer, n) for n in range(4)]
    rotation = subprocess.Popen(
        [sys.executable, "-m", "jicm", "keys", "rotate", "--quiet", "--batch", "25"],
        cwd=REPO, env={**os.environ, **rotation_env}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    while rotation.poll() is None:
        eventlet.sleep(0.05)
    stop.append(True)
    for greenlet in writers:
        greenlet.wait()
    output = rotation.stdout.read()
    assert rotation.returncode == 0, output
    assert "re-wrapped" in output
    assert len(written) > 5, "messages were written while the rotation ran"
    during.stop()

    # The old KEK removed: every message, old and new, still opens.
    after = container_factory(VaultService, {**service_config, SETTINGS_CONFIG_KEY: third})
    after.start()
    assert database_of(after).collection("data_keys").count({"kek_id": {"$ne": "2"}}) == 0
    for message_id, user in written.items():
        assert rpc.call("vault", "get_message", user, message_id)["body"]
    check = subprocess.run([sys.executable, "-m", "jicm", "keys", "check"], cwd=REPO,
                           env={**os.environ, **rotation_env}, capture_output=True, text=True,
                           check=False)
    assert check.returncode == 0, check.stderr


def test_a_check_in_missed_arriving_after_the_erasure_brings_no_release_back(vault, rpc,
                                                                             settings, ada):
    write(rpc)
    erasure = new_event("ErasureRequested", {"request_id": str(uuid.uuid4()), "user_id": "ada",
                                             "reason": "user", "email": "ada@example.org"},
                        producer="privacy", now=datetime.now(UTC))
    publish(settings.amqp_uri, erasure)
    processed = database_of(vault).collection("processed_events")
    wait_for(lambda: processed.count({"event_id": erasure["event_id"], "state": "done"}) == 1,
             timeout=PATIENCE, what="the erasure")
    # As if it had waited in a retry queue behind the erasure.
    late = check_in_missed("ada", ada)
    publish(settings.amqp_uri, late)
    wait_for(lambda: processed.count({"event_id": late["event_id"], "state": "done"}) == 1,
             timeout=PATIENCE, what="the late CheckInMissed")
    assert database_of(vault).collection("releases").find({}) == []


def erasure_for(user_id: str, reason: str) -> dict:
    return new_event("ErasureRequested", {"request_id": str(uuid.uuid4()), "user_id": user_id,
                                          "reason": reason, "email": f"{user_id}@example.org"},
                     producer="privacy", now=datetime.now(UTC))


def test_a_retention_erasure_the_scheduler_refuses_shreds_nothing_in_the_vault(
        vault, rpc, settings, ada):
    # Retention only erases accounts never verified; ada's switch is armed, so the scheduler
    # refuses (someone's last words may be at stake), and the vault must refuse too.
    message_id = write(rpc)
    erasure = erasure_for("ada", "retention")
    publish(settings.amqp_uri, erasure)
    [refused] = wait_for(
        lambda: dead_letters(settings.amqp_uri, "jicm.vault.ErasureRequested.dead"),
        timeout=PATIENCE, what="the vault to refuse the erasure")
    assert refused.event_id == erasure["event_id"]
    assert "armed" in refused.reason
    assert rpc.call("vault", "get_message", "ada", message_id)["body"] == \
        "The code of the safe is 4921."
    assert database_of(vault).collection("data_keys").get("ada") is not None


def test_a_retention_erasure_of_a_never_armed_account_goes_ahead_in_the_vault(
        vault, rpc, settings, switches):
    switches.registered("eve")
    write(rpc, "eve")
    erasure = erasure_for("eve", "retention")
    publish(settings.amqp_uri, erasure)
    processed = database_of(vault).collection("processed_events")
    wait_for(lambda: processed.count({"event_id": erasure["event_id"], "state": "done"}) == 1,
             timeout=PATIENCE, what="the erasure")
    assert database_of(vault).collection("data_keys").get("eve") is None
    assert rpc.call("vault", "list_messages", "eve")["messages"] == []
