"""A test release through `make run`'s processes, over real HTTP, mail read from the SMTP
sink: the owner presses for a test, the mail reaches the owner alone, marked [Test], its
link opens the recipient's page marked as a test, the switch is unchanged, and the
recipient's inbox stays empty. Then the rules a person meets: three a day, a verified
address, and nobody else's switch."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests

from tests.e2e.people import PATIENCE, Sender, mail_to, text_of
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

RECIPIENT = "grace.test-release@example.org"
TEST_LINK = re.compile(r"https?://\S+?/r/test/([A-Za-z0-9_-]+)")
# What the scheduler owns and a test release must never move.
SWITCH_FACTS = ("id", "state", "cycle", "deadline", "interval_seconds", "grace_seconds",
                "reminders_seconds", "paused_until")


def write(sender: Sender, body: str = "The letters are in the cedar chest.") -> str:
    answer = sender.call("POST", "/api/v1/messages", json={
        "subject": "For Grace", "body": body, "sender_name": "Ada",
        "recipients": [{"name": "Grace", "email": RECIPIENT}]})
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def facts(switch: dict) -> dict:
    return {name: switch.get(name) for name in SWITCH_FACTS}


def test_a_test_release_reaches_only_the_owner_and_opens_the_test_page(full_system):
    owner = Sender(full_system, verified=True)
    write(owner)
    before = facts(owner.switch())

    answer = owner.call("POST", f"/api/v1/switches/{before['id']}/test-release")
    assert answer.status_code == 202, answer.text
    assert (answer.json()["mails"], answer.json()["sent_to"]) == (1, owner.email)

    mail = owner.mail("[Test] A message for you from Ada", timeout=PATIENCE)
    text = " ".join(text_of(mail).split())
    assert "This is a test release you asked for" in text and "Hello Grace," in text
    token = TEST_LINK.search(text_of(mail))[1]

    page = requests.get(full_system.url(f"/r/test/{token}"), timeout=10)
    assert page.status_code == 200
    assert "This is a test release" in page.text
    assert "The letters are in the cedar chest." in page.text
    assert page.headers["Cache-Control"] == "no-store"
    # The test link opens no real page.
    assert requests.get(full_system.url(f"/r/{token}"), timeout=10).status_code == 404

    log = Path(full_system.environ["JICM_DATA_DIR"]).parent / "logs" / "gateway.log"
    # gunicorn writes the access line just after the answer: wait for it.
    logged = wait_for(lambda: "/r/test/[redacted]" in (text := log.read_text()) and text,
                      timeout=10, what="the access log line of the test page")
    assert token not in logged

    assert facts(owner.switch()) == before
    # Every mail the system sent for this owner has reached the sink by now (the test
    # mail came after the verification): the recipient has none.
    assert mail_to(full_system, RECIPIENT) == []
    tests = [m for m in full_system.mail() if m["Subject"].startswith("[Test]")]
    assert {m["X-Sink-Envelope-To"] for m in tests} == {owner.email}


def test_three_test_releases_a_day_then_429_with_retry_after(full_system):
    owner = Sender(full_system, verified=True)
    write(owner)
    path = f"/api/v1/switches/{owner.switch()['id']}/test-release"
    for _ in range(3):
        assert owner.call("POST", path).status_code == 202
    refused = owner.call("POST", path)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "test_release_limit"
    assert 0 < int(refused.headers["Retry-After"]) <= 86_400


def test_an_unverified_owner_and_someone_elses_switch_are_refused(full_system):
    unverified = Sender(full_system)
    switch_id = wait_for(unverified.default_switch, timeout=PATIENCE, what="the switch")
    write(unverified)
    refused = unverified.call("POST", f"/api/v1/switches/{switch_id}/test-release")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "email_not_verified"

    other = Sender(full_system, verified=True)
    answer = other.call("POST", f"/api/v1/switches/{switch_id}/test-release")
    assert answer.status_code == 404
    assert mail_to(full_system, RECIPIENT) == []
