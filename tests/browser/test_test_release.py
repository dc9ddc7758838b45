"""A sender tries their switch out, against `make run`'s processes: on the switch's
settings page they press "Send me a test release", read the confirmation, open the link
of the "[Test]" mail that reached them (and no one else), and see the recipient's page
marked as a test."""

from __future__ import annotations

import re

import pytest
import requests
from playwright.sync_api import Page, expect

from tests.browser.conftest import check_page, log_in
from tests.e2e.people import PASSWORD, PATIENCE, Sender, mail_to, text_of

pytestmark = pytest.mark.browser

RECIPIENT = "grace.browser-test@example.org"
TEST_LINK = re.compile(r"https?://\S+?/r/test/[A-Za-z0-9_-]+")


def test_a_sender_sends_a_test_release_and_opens_the_test_page(page: Page, full_system):
    owner = Sender(full_system, verified=True)
    written = requests.post(full_system.url("/api/v1/messages"), headers=owner.headers,
                            timeout=10, json={
                                "subject": "For Grace", "sender_name": "Ada",
                                "body": "The letters are in the cedar chest.",
                                "recipients": [{"name": "Grace", "email": RECIPIENT}]})
    assert written.status_code == 201, written.text
    switch = owner.switch()

    log_in(page, owner.email, PASSWORD)
    page.goto(f"/app/switches/{switch['id']}")
    expect(page.get_by_role("heading", name="Test release")).to_be_visible()
    check_page(page, "switch-test-release")
    page.get_by_role("button", name="Send me a test release").click()
    expect(page.get_by_text(re.compile(
        r"Test release sent: 1 test mail to \S+@example\.org, one for each message and "
        r"recipient\. Your recipients received nothing\."))).to_be_visible()

    mail = owner.mail("[Test] A message for you from Ada", timeout=PATIENCE)
    link = TEST_LINK.search(text_of(mail))[0]
    response = page.goto(link)
    assert response.status == 200
    expect(page.get_by_role("heading", name="This is a test release")).to_be_visible()
    expect(page.get_by_text(re.compile(r"^This page shows what Grace "
                                       r"would see if your switch fired\."))).to_be_visible()
    expect(page.get_by_role("heading", name="For Grace")).to_be_visible()
    expect(page.get_by_text("The letters are in the cedar chest.")).to_be_visible()
    expect(page).to_have_title(re.compile(r"^\[Test\] For Grace"))
    check_page(page, "letter-test")

    assert owner.switch()["deadline"] == switch["deadline"]
    assert mail_to(full_system, RECIPIENT) == []
