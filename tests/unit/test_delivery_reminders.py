"""Reminders hold a switch's firing, so delivery tells their outcome apart and says it:
sent or bounced (announced as ReminderSettled in the write that settles the mail), or
failed on our side (never a bounce); asked for again, it repeats what it said, or sends
again what failed; and retention never deletes a record before its last word is out."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.delivery.privacy import reduce_old_records
from services.delivery.reminders import reference
from services.delivery.smtp import PERMANENT, TEMPORARY, Outcome
from shared.events import parse_event

SWITCH = "9a3c1f0e-5d0c-4b8e-9a57-1d2f3c4b5a69"
OWNER = "user-1"


def remind(m, to="ada@example.org", step=3, cycle=7):
    return m.request(kind="reminder", reference=reference(SWITCH, cycle, step), to=to,
                     user_id=OWNER, context={"stage": "overdue", "deadline": "Monday",
                                             "link": "https://jic.example/c/token"})


def announced(repo, delivery_id, event_type="ReminderSettled"):
    return [event for event in map(parse_event, repo.get(delivery_id).get("outbox", []))
            if event.type == event_type]


def test_a_reminder_accepted_by_the_mail_server_is_announced_as_sent_when_it_left(
        mailer, repo, clock):
    m, sink = mailer()
    delivery = remind(m)
    m.pipeline().send_due()
    [settled] = announced(repo, delivery.id)
    assert (settled.data.switch_id, settled.data.cycle, settled.data.step) == (SWITCH, 7, 3)
    assert settled.data.outcome == "sent"
    assert settled.data.user_id == OWNER
    assert settled.data.settled_at == repo.get(delivery.id)["sent_at"]
    assert len(sink.mail()) == 1


def test_a_reminders_settlement_is_handed_to_the_relay_as_soon_as_it_is_written(
        mailer, repo):
    m, _ = mailer()
    first, second = remind(m, step=1), remind(m, step=2)
    m.request(reference="ref-plain")  # nothing to announce when it is sent
    written_when_woken = []

    def relay() -> None:
        written_when_woken.append(sorted(
            record["_id"] for record in (repo.get(first.id), repo.get(second.id))
            if announced(repo, record["_id"])))

    pipeline = m.pipeline()
    pipeline.relay = relay
    pipeline.send_due()
    assert len(written_when_woken) == 2, "woken once per write that carries an event"
    assert written_when_woken[0] in ([first.id], [second.id])
    assert written_when_woken[1] == sorted([first.id, second.id])


def test_a_reminder_refused_for_the_owners_address_is_a_bounce(mailer, repo):
    m, _ = mailer("--reject-recipient", "^ada@")
    delivery = remind(m)
    m.pipeline().send_due()
    [settled] = announced(repo, delivery.id)
    assert settled.data.outcome == "bounced"
    assert m.deliveries().reminder_status([delivery.reference])[delivery.reference].status == \
        "bounced"


def test_giving_up_on_a_reminder_after_our_own_failures_is_not_a_bounce(mailer, repo, clock):
    m, sink = mailer(JICM_DELIVERY_MAX_ATTEMPTS="2")
    sink.control({"tempfail": True})  # our relay is in trouble
    delivery = remind(m)
    for _ in range(2):
        m.pipeline().send_due()
        clock.advance(hours=2)
    stored = repo.get(delivery.id)
    assert (stored["state"], stored["failure"]) == ("failed", "gave_up")
    assert announced(repo, delivery.id) == []
    answer = m.deliveries().reminder_status([delivery.reference])[delivery.reference]
    assert answer.status == "failed"
    assert "451" in answer.last_error


@pytest.mark.parametrize("code, text, stage, bounced", [
    (550, "5.1.1 no such user", "RCPT", True),
    (550, "5.1.1 <ada@example.org>: user unknown", "DATA", True),
    (552, "5.2.2 mailbox full", "DATA", True),
    (550, "5.7.1 message refused as spam", "DATA", False),
    (554, "transaction failed", "DATA", False),
    (553, "5.7.1 sender not allowed", "MAIL", False),
])
def test_only_a_refusal_of_the_address_is_a_bounce(code, text, stage, bounced):
    outcome = Outcome.from_reply(code, text, stage)
    assert outcome.result == PERMANENT
    assert outcome.bounced is bounced


def test_a_temporary_reply_is_never_a_bounce():
    outcome = Outcome.from_reply(452, "4.2.2 mailbox full", "RCPT")
    assert (outcome.result, outcome.bounced) == (TEMPORARY, False)


def test_asked_again_for_a_reminder_that_left_it_says_so_again_and_sends_nothing(
        mailer, repo, clock):
    m, sink = mailer()
    delivery = remind(m)
    m.pipeline().send_due()
    repo.deliveries.update_one({"_id": delivery.id}, {"$set": {"outbox": []}})  # relayed
    clock.advance(days=3)
    again = remind(m)
    assert not again.created
    [settled] = announced(repo, delivery.id)
    assert settled.data.outcome == "sent"
    m.pipeline().send_due()
    assert len(sink.mail()) == 1


def test_asked_again_for_a_reminder_that_failed_on_our_side_it_sends_it_again(
        mailer, repo, clock):
    m, sink = mailer(JICM_DELIVERY_MAX_ATTEMPTS="1")
    sink.control({"tempfail": True})
    delivery = remind(m)
    m.pipeline().send_due()
    assert repo.get(delivery.id)["state"] == "failed"
    sink.control({})  # the relay is back
    again = remind(m)
    assert again.id == delivery.id and again.status == "pending"
    m.pipeline().send_due()
    assert repo.get(delivery.id)["state"] == "sent"
    assert len(sink.mail()) == 1
    assert [e.data.outcome for e in announced(repo, delivery.id)] == ["sent"]


def test_asked_again_for_a_reminder_still_on_its_way_it_changes_nothing(mailer, repo):
    m, sink = mailer()
    sink.control({"tempfail": True})
    delivery = remind(m)
    m.pipeline().send_due()
    before = repo.get(delivery.id)
    remind(m)
    after = repo.get(delivery.id)
    assert (after["state"], after["attempts"], after["next_attempt_at"]) == \
        (before["state"], before["attempts"], before["next_attempt_at"])
    assert announced(repo, delivery.id) == []


def test_retention_keeps_a_record_until_its_announcement_is_out(mailer, repo, clock):
    m, _ = mailer()
    delivery = remind(m)
    m.pipeline().send_due()
    later = clock.now() + timedelta(days=400)
    assert reduce_old_records(repo, later, timedelta(days=90)) == 0
    assert repo.get(delivery.id) is not None
    # Relayed: the announcement is out, the record may go.
    repo.deliveries.update_one({"_id": delivery.id},
                               {"$set": {"outbox": []}, "$unset": {"outbox_due_at": ""}})
    assert reduce_old_records(repo, later, timedelta(days=90)) == 1
    assert repo.get(delivery.id) is None
