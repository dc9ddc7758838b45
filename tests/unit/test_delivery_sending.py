"""Delivery's records and sending loop, over a real SMTP server on loopback (the dev sink)
and the real embedded store, with a frozen clock so that back-off and leases are exact.

Each test starts its own sink, with the faults it needs.
"""

from __future__ import annotations

import itertools
import logging
from datetime import datetime, timedelta

import eventlet
import pytest
from eventlet.event import Event as GreenEvent

from deploy.local.smtp_sink import envelope_of
from services.delivery.pipeline import Pipeline, RetryPolicy, ValuesGone, ValuesUnavailable
from services.delivery.records import MailRecord
from services.delivery.release_mail import released_requests
from services.delivery.smtp import SmtpSession, SmtpTransport
from services.delivery.unsubscribe import PURPOSE as UNSUBSCRIBE_PURPOSE
from services.delivery.unsubscribe import address_key, make_token
from shared.errors import InvalidInput, NotFound
from shared.events import parse_event
from shared.events.schemas import ConsentChanged, MessageReleased
from tests.helpers import wait_for
from tests.unit.delivery_fixtures import BASE_RETRY, PUBLIC, START, Mailer

# Accepting mail --------------------------------------------------------------------------------


def test_the_same_mail_requested_twice_is_one_record(mailer, repo):
    m, _ = mailer()
    first = m.request()
    again = m.request(to="BOB@example.org", context={"link": f"{PUBLIC}/other", "expires_at": "x"})
    assert first.created and not again.created
    assert again.id == first.id
    assert repo.deliveries.count({}) == 1
    assert m.request(reference="ref-2").id != first.id


def test_the_mail_values_are_kept_sealed_not_readable(mailer, repo):
    m, _ = mailer()
    delivery = m.request()
    stored = repo.get(delivery.id)
    assert "secret-token" not in str(stored)
    assert isinstance(stored["context_sealed"], bytes)


@pytest.mark.parametrize(
    "request_args, field",
    [({"to": "not an address"}, "to"), ({"kind": "chain_letter"}, "kind"),
     ({"context": {"link": "javascript:alert(1)", "expires_at": "x"}}, "context.link")],
)
def test_a_request_no_mail_could_come_of_is_refused_and_stores_nothing(mailer, repo,
                                                                       request_args, field):
    m, _ = mailer()
    with pytest.raises(InvalidInput) as refused:
        m.request(**request_args)
    assert refused.value.details["field"] == field
    assert repo.deliveries.count({}) == 0


# Sending ------------------------------------------------------------------------------------------


def test_due_mail_is_sent_once_with_its_stable_message_id_and_its_values_dropped(mailer, repo):
    m, sink = mailer()
    delivery = m.request(to_name="Bob Byron")
    assert m.status("verification", "ref-1") == {"ref-1": "pending"}
    m.pipeline().send_due()
    [mail] = sink.mail()
    assert mail["Message-ID"] == f"<{delivery.id}@jic.example>"
    assert mail["To"] == "Bob Byron <bob@example.org>"
    assert envelope_of(mail) == ("no-reply@jic.example", ["bob@example.org"])
    assert "secret-token" in mail.get_body(("plain",)).get_content()
    stored = repo.get(delivery.id)
    assert stored["state"] == "sent" and stored["attempts"] == 1
    assert "context_sealed" not in stored and "next_attempt_at" not in stored
    assert m.status("verification", "ref-1", "ref-9") == {"ref-1": "sent", "ref-9": "unknown"}
    m.pipeline().send_due()
    assert len(sink.mail()) == 1


class CountingTransport(SmtpTransport):
    connections = 0

    def connect(self, **kwargs):
        CountingTransport.connections += 1
        return super().connect(**kwargs)


def test_each_lane_reuses_one_connection_for_its_share_and_a_refusal_fails_only_its_mail(
        mailer, repo):
    m, sink = mailer("--tempfail-recipient", "busy@")
    for n in range(12):
        m.request(reference=f"ref-{n}", to="busy@example.org" if n == 1 else "bob@example.org")
    transport = CountingTransport(**vars(SmtpTransport.from_settings(m.settings)))
    CountingTransport.connections = 0
    pipeline = Pipeline(repo, m.settings, m.seal, m.clock, lambda: SmtpSession(transport),
                        lanes=3)
    pipeline.send_due()
    assert CountingTransport.connections == 3, "one connection per lane, reused"
    assert len(sink.mail()) == 11
    assert m.status("verification", "ref-1") == {"ref-1": "pending"}
    assert m.status("verification", *(f"ref-{n}" for n in range(12) if n != 1)) == {
        f"ref-{n}": "sent" for n in range(12) if n != 1}


class StallingSession(SmtpSession):
    """A conversation that stalls on one address until every other mail was accepted."""

    def __init__(self, transport: SmtpTransport, others_done: GreenEvent) -> None:
        super().__init__(transport)
        self.others_done = others_done

    def send(self, message, sender, recipient, deadline=None):
        if recipient.startswith("stalled@"):
            self.others_done.wait(timeout=10)
        return super().send(message, sender, recipient, deadline=deadline)


def test_a_stalled_conversation_holds_up_only_its_own_lane(mailer, repo):
    m, sink = mailer()
    m.request(reference="ref-stalled", to="stalled@example.org")
    for n in range(7):
        m.request(reference=f"ref-{n}")
    others_done = GreenEvent()
    transport = SmtpTransport.from_settings(m.settings)
    pipeline = Pipeline(repo, m.settings, m.seal, m.clock,
                        lambda: StallingSession(transport, others_done), lanes=2)

    def watch() -> None:
        wait_for(lambda: len(sink.mail()) == 7, timeout=10, what="the other lane's mail")
        others_done.send(True)

    watcher = eventlet.spawn(watch)
    pipeline.send_due()
    watcher.wait()
    arrived = [envelope_of(mail).rcpt_tos for mail in sink.mail()]
    assert arrived[-1] == ["stalled@example.org"], "every other mail went past the stall"
    assert len(arrived) == 8


def test_a_temporary_refusal_is_retried_after_a_back_off_and_then_arrives_once(mailer, repo,
                                                                               clock):
    m, sink = mailer("--tempfail-first", "1")
    delivery = m.request()
    m.pipeline().send_due()
    stored = repo.get(delivery.id)
    assert stored["state"] == "retrying"
    assert "451" in stored["last_error"]
    wait = (stored["next_attempt_at"] - clock.now()).total_seconds()
    assert BASE_RETRY / 2 <= wait <= BASE_RETRY
    assert m.status("verification", "ref-1") == {"ref-1": "pending"}
    m.pipeline().send_due()  # not yet due: nothing happens
    assert repo.get(delivery.id)["attempts"] == 1
    clock.advance(seconds=BASE_RETRY)
    m.pipeline().send_due()
    assert len(sink.mail()) == 1
    assert repo.get(delivery.id)["state"] == "sent"
    assert repo.get(delivery.id)["attempts"] == 2


def test_a_permanent_refusal_fails_at_once_and_announces_delivery_failed(mailer, repo, clock):
    m, sink = mailer("--reject-recipient", "^gone@")
    delivery = m.request(to="gone@example.org")
    m.pipeline().send_due()
    stored = repo.get(delivery.id)
    assert stored["state"] == "failed"
    assert "next_attempt_at" not in stored
    [announced] = stored["outbox"]
    event = parse_event(announced)
    assert event.type == "DeliveryFailed"
    assert event.data.delivery_id == delivery.id
    assert event.data.attempts == 1
    assert "RCPT: 550" in event.data.reason
    clock.advance(days=1)
    m.pipeline().send_due()
    assert repo.get(delivery.id)["attempts"] == 1
    assert sink.mail() == []
    assert m.status("verification", "ref-1") == {"ref-1": "bounced"}
    assert stored["failure"] == "bounced"


def test_it_gives_up_after_the_last_attempt(mailer, repo, clock):
    m, _ = mailer("--tempfail-recipient", "busy@", JICM_DELIVERY_MAX_ATTEMPTS="3")
    delivery = m.request(to="busy@example.org")
    for _ in range(3):
        m.pipeline().send_due()
        clock.advance(hours=2)
    stored = repo.get(delivery.id)
    assert stored["state"] == "failed"
    assert stored["attempts"] == 3
    assert parse_event(stored["outbox"][0]).data.reason.startswith("gave up after 3 attempts")


def test_it_gives_up_once_the_mail_is_too_old(mailer, repo, clock):
    m, sink = mailer(JICM_DELIVERY_MAX_AGE="3600")
    sink.control({"tempfail": True})
    delivery = m.request()
    m.pipeline().send_due()
    assert repo.get(delivery.id)["state"] == "retrying"
    clock.advance(seconds=3600)
    m.pipeline().send_due()
    assert repo.get(delivery.id)["state"] == "failed"


def test_a_refused_or_absent_server_is_a_temporary_failure(mailer, repo, sinks):
    m, sink = mailer()
    sink.control({"refuse": True})
    first = m.request(reference="refused")
    m.pipeline().send_due()
    assert repo.get(first.id)["state"] == "retrying"
    assert "421" in repo.get(first.id)["last_error"]

    dead = sinks()
    dead.stop()
    nobody, _ = mailer(port=dead.port)
    second = nobody.request(reference="nobody-listening")
    nobody.pipeline().send_due()
    assert repo.get(second.id)["state"] == "retrying"
    assert "ConnectionRefusedError" in repo.get(second.id)["last_error"]


def test_two_senders_racing_for_one_mail_send_it_once(mailer, repo):
    m, sink = mailer()
    m.request()
    [due] = repo.due(m.clock.now(), 10)
    with SmtpSession(SmtpTransport.from_settings(m.settings)) as smtp:
        m.pipeline().attempt(MailRecord.from_doc(due), smtp)
        # A second process with the same stale view.
        m.pipeline().attempt(MailRecord.from_doc(due), smtp)
    assert len(sink.mail()) == 1
    assert repo.get(due["_id"])["attempts"] == 1


def test_a_mail_interrupted_mid_attempt_is_sent_again_with_the_same_message_id_after_the_lease(
    mailer, repo, clock, caplog
):
    m, sink = mailer()
    delivery = m.request()
    [due] = repo.due(clock.now(), 10)
    # A sender claims the mail and dies before recording any outcome.
    repo.claim(due["_id"], due["next_attempt_at"], now=clock.now(), lease="dead-sender",
               lease_until=clock.now() + timedelta(seconds=30))
    m.pipeline().send_due()
    assert sink.mail() == [], "the claim holds until its lease ends"
    assert m.status("verification", "ref-1") == {"ref-1": "pending"}
    clock.advance(seconds=30)
    with caplog.at_level(logging.WARNING):
        m.pipeline().send_due()
    [mail] = sink.mail()
    assert mail["Message-ID"] == f"<{delivery.id}@jic.example>"
    assert "interrupted mid-attempt" in caplog.text
    assert repo.get(delivery.id)["state"] == "sent"


def test_a_batch_ends_after_the_current_mail_when_the_service_stops(mailer):
    m, sink = mailer()
    for n in range(3):
        m.request(reference=f"ref-{n}")
    answers = itertools.chain([True], itertools.repeat(False))
    m.pipeline().send_due(keep_going=lambda: next(answers))
    assert len(sink.mail()) == 1


def test_the_due_query_uses_its_index_and_skips_mail_that_needs_nothing(mailer, repo, db):
    m, _ = mailer()
    m.request()
    m.pipeline().send_due()
    plan = " ".join(db.collection("deliveries").query_plan(
        {"next_attempt_at": {"$lte": m.clock.now()}}, sort=[("next_attempt_at", 1)]))
    assert "USING INDEX" in plan
    assert repo.due(m.clock.now(), 10) == []


def test_the_back_off_doubles_with_jitter_up_to_its_cap():
    policy = RetryPolicy(base=10, cap=100, max_attempts=5, max_age=timedelta(days=1))
    for attempts, ceiling in [(1, 10), (2, 20), (3, 40), (4, 80), (5, 100), (9, 100)]:
        delays = [policy.delay(attempts) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1, "jittered"
    assert policy.gives_up(5, START, START)
    assert policy.gives_up(1, START, START + timedelta(days=1))
    assert not policy.gives_up(4, START, START + timedelta(hours=23))


# Marketing, consent and unsubscribing ----------------------------------------------------------


def news(m: Mailer, reference: str, user_id: str = "user-1", to: str = "bob@example.org"):
    return m.request(kind="product_news", reference=reference, to=to, user_id=user_id,
                     context={"headline": "Pausing is here", "body": "Going on holiday?"})


def consent(m: Mailer, marketing_email: bool, at: datetime, user_id: str = "user-1"):
    m.deliveries().consent_changed(
        ConsentChanged(user_id=user_id, marketing={"email": marketing_email}, cookies={},
                       source="web"), at)


def test_marketing_is_opt_in_and_never_reaches_an_address_that_did_not_agree(mailer, repo):
    m, sink = mailer()
    held = news(m, "news-1")
    anonymous = m.request(kind="product_news", reference="news-1", to="eve@example.org",
                          context={"headline": "h", "body": "b"})
    m.pipeline().send_due()
    assert sink.mail() == []
    assert repo.get(held.id)["state"] == "suppressed"
    assert repo.get(anonymous.id)["state"] == "suppressed"
    assert m.status("product_news", "news-1") == {"news-1": "failed"}


def test_marketing_with_consent_carries_a_working_one_click_unsubscribe(mailer, repo, clock):
    m, sink = mailer()
    consent(m, True, clock.now())
    news(m, "news-1")
    m.pipeline().send_due()
    [mail] = sink.mail()
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = mail["List-Unsubscribe"].strip("<>")
    assert link.startswith(f"{PUBLIC}/u/")
    assert link in mail.get_body(("plain",)).get_content()

    token = link.rsplit("/", 1)[1]
    m.deliveries().check_unsubscribe(token)
    assert not repo.is_suppressed(address_key("bob@example.org")), "checking changes nothing"
    m.deliveries().unsubscribe(token, "one_click")
    assert repo.is_suppressed(address_key("bob@example.org"))
    assert "bob@example.org" not in str(repo.suppressions.find({}))

    later = news(m, "news-2")
    m.request(reference="account-mail")  # transactional mail is never suppressed
    m.pipeline().send_due()
    assert repo.get(later.id)["state"] == "suppressed"
    assert [mail["Subject"] for mail in sink.mail()][1:] == [
        "Confirm your email address for Just in Case"]


def test_a_forged_unsubscribe_link_is_not_found(mailer):
    m, _ = mailer()
    with pytest.raises(NotFound):
        m.deliveries().unsubscribe("A" * 60 + "." + "B" * 43, "page")


def test_the_newest_consent_wins_and_a_new_opt_in_lifts_an_old_unsubscribe(mailer, repo, clock):
    m, sink = mailer()
    consent(m, True, clock.now())
    token = make_token(m.settings.derived_key(UNSUBSCRIBE_PURPOSE), "bob@example.org", "user-1")
    m.deliveries().unsubscribe(token, "page")
    consent(m, True, clock.now() - timedelta(hours=1))  # an older event arriving late
    news(m, "news-1")
    m.pipeline().send_due()
    assert sink.mail() == []
    clock.advance(seconds=1)
    consent(m, True, clock.now())  # the user opts in again, explicitly
    news(m, "news-2")
    m.pipeline().send_due()
    assert len(sink.mail()) == 1


def test_a_mail_whose_every_attempt_dies_midway_fails_for_good_instead_of_looping(mailer, repo,
                                                                                  clock):
    m, sink = mailer(JICM_DELIVERY_MAX_ATTEMPTS="2")
    delivery = m.request()
    for n in range(2):  # two senders died, each in the middle of this mail
        [due] = repo.due(clock.now(), 10)
        repo.claim(due["_id"], due["next_attempt_at"], now=clock.now(), lease=f"dead-{n}",
                   lease_until=clock.now() + timedelta(seconds=30))
        clock.advance(seconds=30)
    m.pipeline().send_due()
    stored = repo.get(delivery.id)
    assert stored["state"] == "failed"
    assert "interrupted attempts" in stored["last_error"]
    assert sink.mail() == []


def test_a_bug_while_building_a_mail_keeps_it_waiting_for_a_fix(mailer, repo, clock,
                                                                monkeypatch):
    m, sink = mailer()
    delivery = m.request()

    def broken(*args, **kwargs):
        raise RuntimeError("template bug")

    monkeypatch.setattr("services.delivery.pipeline.render", broken)
    m.pipeline().send_due()
    assert repo.get(delivery.id)["state"] == "retrying"
    assert "template bug" in repo.get(delivery.id)["last_error"]
    monkeypatch.undo()
    clock.advance(seconds=BASE_RETRY)
    m.pipeline().send_due()
    assert len(sink.mail()) == 1


# Released messages ---------------------------------------------------------------------------

RELEASE = {
    "user_id": "ada", "switch_id": "switch-1", "message_id": "message-1",
    "sender_name": "Ada Lovelace (ada@example.org)",
    "recipients": [
        {"recipient_id": "r-grace", "name": "Grace", "email": "grace@example.org",
         "read_token": "grace-read-token-" + "g" * 30},
        {"recipient_id": "r-alan", "name": "Alan", "email": "alan@example.org",
         "read_token": "alan-read-token-" + "a" * 30},
    ],
}
TEXT = {"subject": "For the family", "body": "The code of the safe is 4921."}


def release(m: Mailer, inline: bool = False) -> list:
    event = MessageReleased.model_validate({**RELEASE, "inline": inline})
    return [m.deliveries().request(r) for r in released_requests(event, PUBLIC)]


class Vault:
    """The vault's answer to `released_content`, or its absence."""

    def __init__(self) -> None:
        self.down: Exception | None = None
        self.asked: list[tuple[str, str]] = []

    def __call__(self, kind: str, context) -> dict:
        self.asked.append((context["message_id"], context["recipient_id"]))
        if self.down is not None:
            raise self.down
        return {"message_subject": TEXT["subject"], "message_body": TEXT["body"]}


def test_a_released_message_is_one_mail_per_recipient_with_a_link_of_its_own(mailer, repo):
    m, sink = mailer()
    release(m)
    m.pipeline().send_due()
    mails = {mail["To"]: mail.get_body(("plain",)).get_content() for mail in sink.mail()}
    assert set(mails) == {"Grace <grace@example.org>", "Alan <alan@example.org>"}
    assert f"{PUBLIC}/r/grace-read-token-" in mails["Grace <grace@example.org>"]
    assert "alan-read-token" not in mails["Grace <grace@example.org>"]
    assert "Ada Lovelace (ada@example.org) named you" in mails["Alan <alan@example.org>"]
    assert [mail["Subject"] for mail in sink.mail()] == [
        "A message for you from Ada Lovelace (ada@example.org)"] * 2
    assert m.status("released_message", "message-1") == {"message-1": "sent"}


def test_the_same_release_heard_again_sends_nothing_new(mailer, repo):
    m, sink = mailer()
    first = release(m)
    m.pipeline().send_due()
    again = release(m) + release(m, inline=True)
    assert [d.created for d in first] == [True, True]
    assert [d.created for d in again] == [False] * 4
    m.pipeline().send_due()
    assert len(sink.mail()) == 2
    assert repo.deliveries.count({}) == 2


def test_an_inline_release_fetches_its_text_when_sent_and_never_keeps_it(mailer, repo, db):
    m, sink = mailer()
    vault = Vault()
    release(m, inline=True)
    for record in repo.deliveries.find({}):
        opened = m.seal.open(record["_id"], record["context_sealed"])
        assert opened == {"variant": "inline", "sender_name": RELEASE["sender_name"],
                          "message_id": "message-1", "recipient_id": opened["recipient_id"]}
    m.pipeline(fetch=vault).send_due()
    assert sorted(vault.asked) == [("message-1", "r-alan"), ("message-1", "r-grace")]
    for mail in sink.mail():
        text = mail.get_body(("plain",)).get_content()
        assert TEXT["body"] in text and TEXT["subject"] in text
        assert "/r/" not in text
    stored = b"".join(path.read_bytes()
                      for path in sorted((m.settings.data_dir).glob("delivery.sqlite3*")))
    assert TEXT["body"].encode() not in stored
    assert TEXT["subject"].encode() not in stored


def test_an_inline_release_waits_while_the_vault_cannot_answer(mailer, repo, clock):
    m, sink = mailer()
    vault = Vault()
    vault.down = ValuesUnavailable("the vault did not answer within 5 s")
    deliveries = release(m, inline=True)
    m.pipeline(fetch=vault).send_due()
    for delivery in deliveries:
        stored = repo.get(delivery.id)
        assert stored["state"] == "retrying"
        assert "did not answer" in stored["last_error"]
    assert sink.mail() == []
    vault.down = None
    clock.advance(seconds=BASE_RETRY)
    m.pipeline(fetch=vault).send_due()
    assert len(sink.mail()) == 2
    assert {repo.get(d.id)["state"] for d in deliveries} == {"sent"}


def test_an_inline_release_whose_message_is_gone_fails_for_good(mailer, repo):
    m, sink = mailer()
    vault = Vault()
    vault.down = ValuesGone("the vault no longer has message message-1")
    [first, _] = release(m, inline=True)
    m.pipeline(fetch=vault).send_due()
    stored = repo.get(first.id)
    assert stored["state"] == "failed"
    assert "no longer has message" in stored["last_error"]
    assert sink.mail() == []
