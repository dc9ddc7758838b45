"""The delivery service on the real RabbitMQ, sending to a real SMTP server on loopback.

Mail is asked for as other services ask for it: `MailRequested` and `ReminderDue` events
published to the events exchange, and the `delivery.send` RPC. A small `watcher` service
collects the `DeliveryFailed` events delivery announces.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.delivery.service import DeliveryService
from services.delivery.storage import DeliveryRepository
from shared.config import SETTINGS_CONFIG_KEY, load_settings
from shared.events import event_handler, new_event
from shared.events import topology as topo
from shared.events.deadletters import connect, peek
from shared.rpc.client import RpcClientPool
from shared.rpc.errors import RemoteError
from shared.storage.provider import Storage, database_of
from tests.helpers import publish, wait_for
from tests.sink import start_sink

pytestmark = pytest.mark.service

FAILED_EVENTS: list = []
SETTLED_EVENTS: list = []
PUBLIC = "https://jic.example"


class Watcher:
    name = "watcher"
    store = Storage({})

    @event_handler("DeliveryFailed")
    def on_delivery_failed(self, event) -> None:
        FAILED_EVENTS.append(event)

    @event_handler("ReminderSettled")
    def on_reminder_settled(self, event) -> None:
        SETTLED_EVENTS.append(event)


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    FAILED_EVENTS.clear()
    SETTLED_EVENTS.clear()
    monkeypatch.setitem(topo.CONSUMERS, "watcher", ("DeliveryFailed", "ReminderSettled"))


@pytest.fixture
def sinks(tmp_path):
    started = []

    def start(*options: str):
        sink = start_sink(tmp_path / f"sink{len(started)}", *options)
        started.append(sink)
        return sink

    yield start
    for sink in started:
        sink.stop()


@pytest.fixture
def start_delivery(container_factory, rabbit_config, tmp_path):
    """Start a delivery service sending to `sink`; call again for a restart on the same store."""

    def start(sink, **env: str):
        settings = load_settings({
            "JICM_ENV": "test", "AMQP_URI": rabbit_config["AMQP_URI"],
            "JICM_DATA_DIR": str(tmp_path / "data"), "JICM_PUBLIC_URL": PUBLIC,
            "SMTP_PORT": str(sink.port), "SMTP_TIMEOUT": "2", "JICM_DELIVERY_LEASE": "8",
            "JICM_DELIVERY_TICK": "0.2", "JICM_DELIVERY_RETRY_BASE": "0.3",
            "JICM_DELIVERY_RETRY_CAP": "1", **env,
        })
        container = container_factory(
            DeliveryService, {**rabbit_config, SETTINGS_CONFIG_KEY: settings, "max_workers": 4})
        container.start()
        return container

    return start


@pytest.fixture
def watcher(container_factory, rabbit_config, tmp_path):
    settings = load_settings({"JICM_ENV": "test", "AMQP_URI": rabbit_config["AMQP_URI"],
                              "JICM_DATA_DIR": str(tmp_path / "watcher")})
    container = container_factory(
        Watcher, {**rabbit_config, SETTINGS_CONFIG_KEY: settings, "max_workers": 2})
    container.start()
    return container


@pytest.fixture
def rpc(rabbit_config):
    pool = RpcClientPool(rabbit_config["AMQP_URI"], size=2, timeout=10)
    yield pool
    pool.close()


def records(container) -> DeliveryRepository:
    return DeliveryRepository(database_of(container))


def mail_requested(reference: str = "ref-1", to: str = "bob@example.org",
                   kind: str = "verification", user_id: str = "user-1") -> dict[str, Any]:
    return new_event(
        "MailRequested",
        {"kind": kind, "reference": reference, "to": to, "user_id": user_id,
         "context": {"link": f"{PUBLIC}/verify?token=t0k3n", "expires_at": "tomorrow"}},
        producer="accounts", now=datetime.now(UTC),
    )


def sent(container, record_id: str) -> bool:
    return records(container).get(record_id)["state"] == "sent"


def send(rpc, reference="ref-1", to="bob@example.org", kind="verification", **extra):
    context = extra.pop("context", {"link": f"{PUBLIC}/verify?token=t0k3n",
                                    "expires_at": "tomorrow"})
    return rpc.call("delivery", "send", kind, reference, to, context, **extra)


# ------------------------------------------------------------------------------------------------


def test_mail_asked_for_over_rpc_arrives_once_and_its_status_says_so(start_delivery, sinks,
                                                                     rpc):
    sink = sinks()
    delivery = start_delivery(sink)
    first = send(rpc, to_name="Bob")
    assert first["created"] and first["status"] == "pending"
    [mail] = sink.wait_for_mail(1)
    assert mail["Message-ID"] == f"<{first['id']}@justincase.example>"
    assert mail["To"] == "Bob <bob@example.org>"
    wait_for(lambda: sent(delivery, first["id"]), what="the record to be marked sent")
    again = send(rpc)
    assert again["id"] == first["id"] and not again["created"]
    assert rpc.call("delivery", "mail_status", "verification", ["ref-1", "ref-2"]) == {
        "ref-1": "sent", "ref-2": "unknown"}
    assert len(sink.mail()) == 1


def test_a_server_that_refuses_temporarily_and_then_accepts_gets_the_mail_once(
    start_delivery, sinks, rabbit_config
):
    sink = sinks("--tempfail-first", "1")
    delivery = start_delivery(sink)
    publish(rabbit_config["AMQP_URI"], mail_requested())
    [mail] = sink.wait_for_mail(1)
    record = wait_for(lambda: records(delivery).by_key("verification", "ref-1",
                                                       "bob@example.org"))
    wait_for(lambda: sent(delivery, record["_id"]))
    record = records(delivery).get(record["_id"])
    assert record["attempts"] == 2
    assert "451" in record["last_error"]
    assert mail["Message-ID"] == f"<{record['_id']}@justincase.example>"
    assert len(sink.mail()) == 1


def test_a_permanent_refusal_ends_as_delivery_failed_and_is_never_retried(start_delivery,
                                                                          watcher, sinks, rpc):
    sink = sinks("--reject-recipient", "^gone@")
    delivery = start_delivery(sink)
    failed = send(rpc, to="gone@example.org")
    [event] = wait_for(lambda: FAILED_EVENTS, what="DeliveryFailed")
    assert event.data.delivery_id == failed["id"]
    assert event.data.recipient == "gone@example.org"
    assert event.data.attempts == 1
    assert "RCPT: 550" in event.data.reason
    record = records(delivery).get(failed["id"])
    assert record["state"] == "failed" and "next_attempt_at" not in record
    # The address was refused for good: a bounce, not a failure of ours.
    assert rpc.call("delivery", "mail_status", "verification", ["ref-1"]) == {"ref-1": "bounced"}
    send(rpc, reference="after")  # the loop keeps running: the next mail goes
    sink.wait_for_mail(1)
    assert records(delivery).get(failed["id"])["attempts"] == 1
    assert len(FAILED_EVENTS) == 1


def test_the_same_event_delivered_twice_sends_one_mail(start_delivery, sinks, rabbit_config):
    sink = sinks()
    delivery = start_delivery(sink)
    event = mail_requested()
    publish(rabbit_config["AMQP_URI"], event)
    publish(rabbit_config["AMQP_URI"], event)
    publish(rabbit_config["AMQP_URI"], mail_requested())  # a new event for the same mail
    processed = database_of(delivery).collection("processed_events")
    wait_for(lambda: processed.count({"state": "done"}) == 2, what="both events handled")
    [record] = records(delivery).deliveries.find({})
    wait_for(lambda: sent(delivery, record["_id"]))
    assert len(sink.mail()) == 1


def test_mail_about_an_erased_user_that_arrives_after_the_erasure_is_never_sent(
        start_delivery, sinks, rabbit_config):
    sink = sinks()
    delivery = start_delivery(sink)
    amqp = rabbit_config["AMQP_URI"]
    processed = database_of(delivery).collection("processed_events")
    erasure = new_event("ErasureRequested", {"request_id": "req-1", "user_id": "user-1",
                                             "reason": "user", "email": "bob@example.org"},
                        producer="privacy", now=datetime.now(UTC))
    publish(amqp, erasure)
    wait_for(lambda: processed.count({"event_id": erasure["event_id"], "state": "done"}) == 1,
             what="the erasure")
    # As if these had waited in a retry queue behind the erasure; then someone else's mail.
    late = [mail_requested(reference="late-verification"), new_event(
        "ReminderDue",
        {"user_id": "user-1", "switch_id": "s1", "cycle": 1, "step": 0, "stage": "upcoming",
         "deadline": datetime(2030, 6, 4, tzinfo=UTC).isoformat(),
         "email": "bob@example.org", "checkin_token": "chk"},
        producer="scheduler", now=datetime.now(UTC))]
    for event in late:
        publish(amqp, event)
    wait_for(lambda: all(processed.count({"event_id": e["event_id"], "state": "done"}) == 1
                         for e in late), what="the late events")
    assert records(delivery).deliveries.find({"recipient": "bob@example.org"}) == []
    publish(amqp, mail_requested(reference="carol", to="carol@example.org", user_id="user-2"))
    [mail] = sink.wait_for_mail(1)
    assert mail["To"] == "carol@example.org"


def test_a_reminder_carries_the_one_click_link_and_the_deadline(start_delivery, watcher, sinks,
                                                                rpc, rabbit_config):
    sink = sinks()
    start_delivery(sink)
    deadline = datetime(2030, 6, 4, 14, 0, tzinfo=UTC)
    publish(rabbit_config["AMQP_URI"], new_event(
        "ReminderDue",
        {"user_id": "u1", "switch_id": "s1", "cycle": 3, "step": 0, "stage": "upcoming",
         "deadline": deadline.isoformat(), "email": "ada@example.org",
         "checkin_token": "chk-token-123"},
        producer="scheduler", now=datetime.now(UTC)))
    [mail] = sink.wait_for_mail(1)
    text = mail.get_body(("plain",)).get_content()
    assert f"{PUBLIC}/c/chk-token-123" in text
    assert "Tuesday 4 June 2030 at 14:00 UTC" in text
    assert mail["To"] == "ada@example.org"
    wait_for(lambda: rpc.call("delivery", "mail_status", "reminder", ["s1:3:0", "s1:3:1"])
             == {"s1:3:0": "sent", "s1:3:1": "unknown"})
    # Delivery says the reminder left, on the broker, and when asked.
    [settled] = wait_for(lambda: SETTLED_EVENTS, what="ReminderSettled")
    assert (settled.data.switch_id, settled.data.cycle, settled.data.step,
            settled.data.outcome) == ("s1", 3, 0, "sent")
    answer = rpc.call("delivery", "reminder_status", ["s1:3:0", "s1:3:1"])
    assert answer["s1:3:0"]["status"] == "sent"
    assert datetime.fromisoformat(answer["s1:3:0"]["settled_at"]) == settled.data.settled_at
    assert answer["s1:3:1"] == {"status": "unknown", "settled_at": None, "last_error": None}


def test_mail_waiting_for_a_retry_survives_a_restart_of_the_service(start_delivery, sinks, rpc):
    sink = sinks()
    sink.control({"refuse": True})
    first = start_delivery(sink, JICM_DELIVERY_RETRY_BASE="2", JICM_DELIVERY_RETRY_CAP="2")
    waiting = send(rpc)
    wait_for(lambda: records(first).get(waiting["id"])["state"] == "retrying")
    assert rpc.call("delivery", "mail_status", "verification", ["ref-1"]) == {"ref-1": "pending"}
    first.stop()
    sink.control({})
    second = start_delivery(sink)
    [mail] = sink.wait_for_mail(1)
    assert mail["Message-ID"] == f"<{waiting['id']}@justincase.example>"
    wait_for(lambda: sent(second, waiting["id"]))
    assert len(sink.mail()) == 1


def test_marketing_goes_only_to_those_who_agreed_and_stops_at_one_click(start_delivery, sinks,
                                                                       rpc, rabbit_config):
    sink = sinks()
    delivery = start_delivery(sink)
    news = {"headline": "Pausing is here", "body": "Going on holiday?"}
    held = send(rpc, kind="product_news", reference="news-1", user_id="user-1", context=news)
    wait_for(lambda: records(delivery).get(held["id"])["state"] == "suppressed")
    publish(rabbit_config["AMQP_URI"], new_event(
        "ConsentChanged",
        {"user_id": "user-1", "marketing": {"email": True}, "cookies": {}, "source": "web"},
        producer="privacy", now=datetime.now(UTC)))
    processed = database_of(delivery).collection("processed_events")
    wait_for(lambda: processed.count({"type": "ConsentChanged", "state": "done"}) == 1)
    send(rpc, kind="product_news", reference="news-2", user_id="user-1", context=news)
    [mail] = sink.wait_for_mail(1)
    token = mail["List-Unsubscribe"].strip("<>").rsplit("/", 1)[1]
    rpc.call("delivery", "check_unsubscribe", token)
    rpc.call("delivery", "unsubscribe", token, "one_click")
    later = send(rpc, kind="product_news", reference="news-3", user_id="user-1", context=news)
    wait_for(lambda: records(delivery).get(later["id"])["state"] == "suppressed")
    with pytest.raises(RemoteError) as forged:
        rpc.call("delivery", "unsubscribe", token[:-4] + "AAAA", "one_click")
    assert forged.value.exc_type == "NotFound"
    assert len(sink.mail()) == 1


def test_a_request_no_mail_can_come_of_is_refused_over_rpc_and_dead_lettered_as_an_event(
    start_delivery, sinks, rpc, rabbit_config
):
    sink = sinks()
    delivery = start_delivery(sink)
    with pytest.raises(RemoteError) as refused:
        send(rpc, to="not an address")
    assert refused.value.exc_type == "InvalidInput"
    publish(rabbit_config["AMQP_URI"], mail_requested(kind="chain_letter"))
    queue = "jicm.delivery.MailRequested.dead"

    def dead() -> list:
        connection = connect(rabbit_config["AMQP_URI"])
        try:
            return list(peek(connection.channel(), queue, 10))
        finally:
            connection.close()

    [letter] = wait_for(dead, what="the dead letter")
    assert "unknown_mail_kind" in letter.reason
    assert records(delivery).deliveries.count({}) == 0


def test_the_service_answers_the_readiness_probe(start_delivery, sinks, rpc):
    start_delivery(sinks())
    assert rpc.call("delivery", "health")["status"] == "ok"


def test_mail_status_answers_for_hundreds_of_references_and_refuses_too_many(
    start_delivery, sinks, rpc
):
    start_delivery(sinks())
    references = [f"s:{n}:0" for n in range(300)]
    answer = rpc.call("delivery", "mail_status", "reminder", references)
    assert set(answer.values()) == {"unknown"} and len(answer) == 300
    with pytest.raises(RemoteError) as refused:
        rpc.call("delivery", "mail_status", "reminder", ["x"] * 501)
    assert refused.value.exc_type == "InvalidInput"
