"""Delivery's part in privacy, over a real SMTP sink and store: the mail log exported,
reduced to counts by an erasure or by age, the erased address kept only as a hash on the
suppression list, erasure receipts that forget their address once sent, and the
unsubscribe link announced for privacy's consent receipt."""

from __future__ import annotations

from datetime import timedelta

from services.delivery import privacy
from services.delivery.unsubscribe import PURPOSE as UNSUBSCRIBE_PURPOSE
from services.delivery.unsubscribe import address_key, make_token
from shared.events import parse_event
from tests.unit.test_delivery_sending import consent, news

USER, EMAIL = "user-1", "bob@example.org"


def test_the_export_holds_the_persons_mail_consent_and_unsubscribes_but_no_mail_values(
        mailer, repo, clock):
    m, _ = mailer()
    m.request(user_id=USER)
    m.request(reference="other", to="eve@example.org", user_id="user-2")
    consent(m, True, clock.now())
    clock.advance(seconds=1)
    m.deliveries().unsubscribe(make_token(m.settings.derived_key(UNSUBSCRIBE_PURPOSE), EMAIL,
                                          USER), "page")
    part = privacy.export_user(repo, USER)
    assert [(mail["kind"], mail["recipient"]) for mail in part["mail"]] == [
        ("verification", EMAIL)]
    assert part["marketing_consent"]["email"] is False
    assert part["unsubscribes"] == [{"address_sha256": address_key(EMAIL), "source": "page",
                                     "created_at": clock.now()}]
    assert "eve@example.org" not in str(part) and "secret-token" not in str(part)


def test_an_erasure_reduces_the_mail_log_to_counts_and_keeps_the_address_only_hashed(
        mailer, repo, clock):
    m, sink = mailer()
    m.request(user_id=USER)
    m.request(kind="account_exists", reference="ref-3", to=EMAIL,
              context={"reset_link": "https://jic.example/reset?token=t", "expires_at": "x"})
    m.pipeline().send_due()
    pending = m.request(reference="ref-2", user_id=USER)
    consent(m, True, clock.now())
    other = m.request(reference="theirs", to="eve@example.org", user_id="user-2")

    summary = privacy.erase_user(repo, USER, EMAIL, clock.now())

    assert summary["mail_records_reduced"] == 3 and summary["consents"] == 1
    assert repo.get(pending.id) is None, "nothing more is sent on their behalf"
    assert repo.get(other.id) is not None
    assert EMAIL not in str(repo.deliveries.find({})) + str(repo.consents.find({}))
    counts = {doc["_id"]: doc["count"] for doc in repo.mail_counts.find({})}
    assert counts == {"2030-05:verification:sent": 1, "2030-05:verification:queued": 1,
                      "2030-05:account_exists:sent": 1}
    assert privacy.erase_user(repo, USER, EMAIL, clock.now())["mail_records_reduced"] == 0
    assert repo.is_suppressed(address_key(EMAIL))
    consent(m, True, clock.now() + timedelta(seconds=1), user_id="user-3")
    news(m, "news-after", to=EMAIL, user_id="user-3")  # a new account, same address
    m.pipeline().send_due()
    assert "Pausing is here" not in [mail["Subject"] for mail in sink.mail()]


def test_an_erasure_unlinks_old_unsubscribes_from_the_person(mailer, repo):
    m, _ = mailer()
    token = make_token(m.settings.derived_key(UNSUBSCRIBE_PURPOSE), EMAIL, USER)
    m.deliveries().unsubscribe(token, "one_click")
    privacy.erase_user(repo, USER, EMAIL, m.clock.now())
    [suppression] = repo.suppressions.find({})
    assert suppression["_id"] == address_key(EMAIL) and "user_id" not in suppression


def test_a_used_unsubscribe_link_is_announced_for_privacys_receipt_in_the_same_write(mailer,
                                                                                      repo):
    m, _ = mailer()
    token = make_token(m.settings.derived_key(UNSUBSCRIBE_PURPOSE), EMAIL, USER)
    m.deliveries().unsubscribe(token, "one_click")
    [suppression] = repo.suppressions.find({})
    [event] = [parse_event(e) for e in suppression["outbox"]]
    assert event.type == "Unsubscribed"
    assert (event.data.user_id, event.data.source, event.data.channel) == (
        USER, "one_click", "email")
    anonymous = make_token(m.settings.derived_key(UNSUBSCRIBE_PURPOSE), "eve@example.org", None)
    m.deliveries().unsubscribe(anonymous, "page")
    assert not repo.suppressions.get(address_key("eve@example.org")).get("outbox")


def test_a_receipt_about_an_erasure_keeps_only_a_hash_of_its_address_once_sent(mailer, repo):
    m, sink = mailer()
    sent = m.request(kind="privacy_erasure_completed", reference="req-1:completed",
                     context={})
    stored = repo.get(sent.id)
    assert stored["recipient"] == EMAIL and stored["recipient_key"] == address_key(EMAIL)
    m.pipeline().send_due()
    [mail] = sink.mail()
    assert mail["To"] == EMAIL
    stored = repo.get(sent.id)
    assert stored["state"] == "sent" and "recipient" not in stored
    assert EMAIL not in str(stored)
    again = m.request(kind="privacy_erasure_completed", reference="req-1:completed",
                      context={})
    assert again.id == sent.id and not again.created, "asked again, still sent once"


def test_retention_reduces_settled_mail_older_than_the_window_and_nothing_else(mailer, repo,
                                                                               clock):
    m, _ = mailer()
    old = m.request(user_id=USER)
    m.pipeline().send_due()
    clock.advance(days=89)
    recent = m.request(reference="recent", user_id=USER)
    m.pipeline().send_due()
    clock.advance(days=2)
    assert privacy.reduce_old_records(repo, clock.now(), timedelta(days=90)) == 1
    assert repo.get(old.id) is None and repo.get(recent.id) is not None
    assert privacy.reduce_old_records(repo, clock.now(), timedelta(days=90)) == 0
