"""The privacy centre as a signed-in sender uses it, against `make run`'s processes: news by
email turned on and off with two receipts to show for it, "download my data" followed to
the JSON file with their message in it (the "export ready" mail leads to this page), and
an erasure started in the browser, followed to its end, after which the account cannot
log in. Every page passes axe-core and is photographed at both widths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from shared.rpc.client import RpcClientPool
from tests.browser.conftest import PASSWORD, check_page, link_in_mail, log_in, sign_up
from tests.helpers import wait_for

pytestmark = pytest.mark.browser

EMAIL = "privacy.centre@example.org"
SECRET = "The spare key is under the third flowerpot."
PATIENCE = 60_000  # ms: every service answers an export or an erasure


@pytest.fixture
def sender(page: Page, full_system) -> Page:
    """A verified sender, signed in, with one message; cookies answered already."""
    page.goto("/cookies")
    page.get_by_role("button", name="Reject all").click()
    sign_up(page, EMAIL)
    page.goto(link_in_mail(full_system, "Confirm", "/verify?token=", count=1))
    page.get_by_role("button", name="Confirm my address").click()
    log_in(page, EMAIL)
    page.goto("/app/messages/new")
    page.get_by_label("Subject").fill("For my brother")
    page.get_by_label("Your message").fill(SECRET)
    page.get_by_label("Name of recipient 1").fill("Brother")
    page.get_by_label("Email of recipient 1").fill("brother@example.org")
    page.get_by_role("button", name="Seal this message").click()
    expect(page.get_by_text("is sealed")).to_be_visible()
    return page


def unsubscribe_from_news(page: Page, full_system, user_id: str) -> None:
    """Turn news by email on, have delivery send a piece of news, and leave it through
    the mail's unsubscribe page; the centre then shows it off, with its receipt."""
    page.goto("/app/privacy")
    page.get_by_role("switch", name="News by email").click()
    expect(page.get_by_text("News by email is on, from now on.")).to_be_visible()
    wait_for(lambda: full_system.query(
        "delivery", "SELECT json_extract(doc, '$.marketing_email') FROM consents WHERE id = ?",
        (user_id,)) == [(1,)], timeout=30, what="delivery to learn of the consent")
    rpc = RpcClientPool(full_system.environ["AMQP_URI"], size=1, timeout=10)
    try:
        rpc.call("delivery", "send", "product_news", f"news-{user_id}", EMAIL,
                 {"headline": "Pausing is here", "body": "Going away? Pause your switch."},
                 user_id=user_id)
    finally:
        rpc.close()
    [news] = wait_for(lambda: [m for m in full_system.mail() if m["Subject"] ==
                               "Pausing is here"], timeout=30, what="the news")
    page.goto(news["List-Unsubscribe"].strip("<>"))
    expect(page.get_by_role("heading", name="Unsubscribe from news")).to_be_visible()
    check_page(page, "unsubscribe")
    page.get_by_role("button", name="Unsubscribe").click()
    expect(page.get_by_role("heading", name="You are unsubscribed")).to_be_visible()
    check_page(page, "unsubscribed")

    def switched_off() -> bool:
        page.goto("/app/privacy")
        news_switch = page.get_by_role("switch", name="News by email")
        return news_switch.get_attribute("aria-checked") == "false"

    wait_for(switched_off, timeout=30, interval=0.5, what="the unsubscribe to reach privacy")
    receipts = page.get_by_role("table", name="Your consent receipts, newest first")
    expect(receipts.get_by_role("row").nth(1)).to_contain_text("the unsubscribe link in a mail")


def test_a_sender_uses_the_privacy_centre_from_news_to_erasure(sender: Page, full_system):
    page = sender
    page.get_by_role("link", name="Privacy", exact=True).click()
    expect(page.get_by_role("heading", name="Your data and choices")).to_be_visible()
    check_page(page, "privacy-centre")

    # News by email: on, then off, each at once and each with its receipt.
    news = page.get_by_role("switch", name="News by email")
    expect(news).to_have_attribute("aria-checked", "false")
    news.click()
    expect(page.get_by_text("News by email is on, from now on.")).to_be_visible()
    expect(page.get_by_role("switch", name="News by email")).to_have_attribute(
        "aria-checked", "true")
    page.get_by_role("switch", name="News by email").click()
    expect(page.get_by_text("News by email is off, from now on.")).to_be_visible()
    expect(page.get_by_role("switch", name="News by email")).to_have_attribute(
        "aria-checked", "false")
    receipts = page.get_by_role("table", name="Your consent receipts, newest first")
    rows = receipts.get_by_role("row").filter(has_text="News by email")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text("News by email: off")
    expect(rows.last).to_contain_text("News by email: on")
    expect(rows.first).to_contain_text("on this site")
    check_page(page, "privacy-centre-receipts")

    # Download my data: progress while the services answer, then the file.
    page.get_by_role("button", name="Download my data").click()
    expect(page.get_by_role("heading", name="Your data export")).to_be_visible()
    check_page(page, "export-progress")
    download_link = page.get_by_role("button", name="Download my data (JSON)")
    expect(download_link).to_be_visible(timeout=PATIENCE)  # site.js looked again
    check_page(page, "export-ready")
    with page.expect_download() as waited:
        download_link.click()
    export = json.loads(Path(waited.value.path()).read_text(encoding="utf-8"))
    [message] = export["services"]["vault"]["messages"]
    assert message["content"]["body"] == SECRET
    assert export["services"]["accounts"]["account"]["email"] == EMAIL

    # News by email again, then the one-click link in a piece of news: off at once.
    unsubscribe_from_news(page, full_system, export["user_id"])

    # The "export ready" mail leads to the privacy centre, where the download is.
    [ready] = [m for m in full_system.wait_for_mail(2) if "export is ready" in m["Subject"]]
    assert full_system.url("/app/privacy\n") in ready.get_body(("plain",)).get_content()
    assert f'href="{full_system.url("/app/privacy")}"' in ready.get_body(("html",)).get_content()
    page.goto("/app/privacy")
    expect(page.get_by_role("link", name="Download this export")).to_be_visible()

    # Erase my account: what goes and what stays, the password again, then its progress.
    page.get_by_role("link", name="Erase my account").click()
    expect(page.get_by_text("Kept, because tax law requires it")).to_be_visible()
    check_page(page, "erase")
    page.get_by_label("Your password, to confirm").fill("not my password")
    page.get_by_role("button", name="Close my account and erase everything").click()
    expect(page.get_by_role("alert")).to_contain_text("The password is not correct")
    page.get_by_label("Your password, to confirm").fill(PASSWORD)
    page.get_by_role("button", name="Close my account and erase everything").click()
    expect(page.get_by_role("heading", name="Your account is being erased").or_(
        page.get_by_role("heading", name="Your account is erased"))).to_be_visible()
    check_page(page, "erasure-progress")
    expect(page.get_by_role("heading", name="Your account is erased")).to_be_visible(
        timeout=PATIENCE)
    for part in ("Your account, sessions and mailed links", "Your messages and their recipients",
                 "Your plan and payments", "Your consent and its receipts"):
        expect(page.get_by_role("listitem").filter(has_text=part)).to_contain_text("done")
    check_page(page, "erasure-complete")

    log_in(page, EMAIL)
    expect(page.get_by_role("alert")).to_contain_text("The email address or password is incorrect")
