"""Billing as a sender meets it, against `make run`'s processes and its Stripe stand-in: the
plans side by side, an upgrade through the stand-in's checkout, the return page that waits
for Stripe's webhook and then says Premium, the customer portal, and a failed payment said
plainly, with the promise that money never holds back a release.

The journey runs in a browser that enforces the pages' Content-Security-Policy (a form
whose answer is a redirect to the payment page must be allowed to go there); axe-core and
the screenshots look at the same pages in a second browser context with the same session.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import WIDTHS, check_page, link_in_mail, log_in, sign_up

pytestmark = pytest.mark.browser

EMAIL = "billing.journey@example.org"
PATIENCE = 30_000  # ms: the stand-in's webhook reaches billing


def looked_at(browser: Browser, full_system, journey: Page, name: str) -> None:
    """axe-core and screenshots of the journey's current page, in a context that lets
    axe in (bypassing the CSP), signed in as the journey is."""
    context = browser.new_context(base_url=full_system.base_url, bypass_csp=True,
                                  viewport={"width": WIDTHS[0], "height": 900},
                                  timezone_id="Europe/Paris", locale="en-GB")
    context.add_cookies(journey.context.cookies())
    page = context.new_page()
    page.goto(journey.url)
    check_page(page, name)
    context.close()


@pytest.fixture
def journey(browser: Browser, full_system) -> Page:
    context = browser.new_context(base_url=full_system.base_url,
                                  viewport={"width": WIDTHS[0], "height": 900},
                                  timezone_id="Europe/Paris", locale="en-GB")
    context.set_default_timeout(15_000)
    page = context.new_page()
    refusals: list[str] = []
    page.on("console", lambda message: refusals.append(message.text)
            if "Content Security Policy" in message.text else None)
    page.refusals = refusals  # type: ignore[attr-defined]
    yield page
    context.close()


def test_a_sender_upgrades_through_checkout_and_sees_premium_after_the_webhook(
        journey: Page, browser: Browser, full_system):
    page = journey
    page.goto("/cookies")
    page.get_by_role("button", name="Reject all").click()
    sign_up(page, EMAIL)
    page.goto(link_in_mail(full_system, "Confirm", "/verify?token=", count=1))
    page.get_by_role("button", name="Confirm my address").click()
    log_in(page, EMAIL)

    page.get_by_role("link", name="Plan", exact=True).click()
    expect(page.get_by_role("heading", name="Your plan", exact=True)).to_be_visible()
    expect(page.get_by_text("You are on the Free plan.")).to_be_visible()
    plans = page.get_by_role("article")
    expect(plans).to_have_count(3)
    expect(plans.filter(has_text="Premium (monthly)")).to_contain_text("50 messages per switch")
    expect(plans.filter(has_text="Free")).to_contain_text("Your plan")
    looked_at(browser, full_system, page, "billing")

    # Checkout: the stand-in's page, then back to ours, which waits for the webhook.
    page.get_by_role("button", name="Upgrade to Premium (monthly)").click()
    expect(page.get_by_role("heading", name="Checkout")).to_be_visible()
    page.get_by_role("button", name="Pay with test card 4242").click()
    expect(page.get_by_role("heading", name="Thank you")).to_be_visible()
    assert page.url.endswith("/app/billing/success")
    expect(page.get_by_text("Stripe has confirmed your payment")).to_be_visible(
        timeout=PATIENCE)
    expect(page.get_by_text("It renews")).to_be_visible()
    looked_at(browser, full_system, page, "billing-success")

    page.get_by_role("link", name="Back to your plan").click()
    expect(page.get_by_text("You are on the Premium (monthly) plan.")).to_be_visible()
    expect(page.get_by_text("It renews")).to_be_visible()
    expect(page.get_by_role("button", name="Upgrade to Premium (yearly)")).to_have_count(0)

    # The portal: a failed payment, and what the page says about it.
    page.get_by_role("button", name="Manage my subscription").click()
    expect(page.get_by_role("heading", name="Your subscription")).to_be_visible()
    page.get_by_role("button", name="Simulate a failed payment").click()
    page.get_by_role("link", name="Back to Just in Case").click()
    expect(page.get_by_role("alert")).to_contain_text("Your last payment did not go through",
                                                      timeout=PATIENCE)
    expect(page.get_by_role("alert")).to_contain_text("releases are never held back by money")
    looked_at(browser, full_system, page, "billing-payment-failed")

    page.goto("/app/billing/cancel")
    expect(page.get_by_text("Nothing was charged")).to_be_visible()
    looked_at(browser, full_system, page, "billing-cancel")
    assert not page.refusals, page.refusals  # type: ignore[attr-defined]


def test_the_return_page_grants_nothing_by_itself(page: Page, full_system):
    page.goto("/cookies")
    page.get_by_role("button", name="Reject all").click()
    sign_up(page, "no.payment@example.org")
    page.goto(link_in_mail(full_system, "Confirm", "/verify?token=", count=2))
    page.get_by_role("button", name="Confirm my address").click()
    log_in(page, "no.payment@example.org")
    page.goto("/app/billing/success")
    expect(page.get_by_text("Waiting for Stripe to confirm your payment")).to_be_visible()
    page.goto("/app/billing")
    expect(page.get_by_text("You are on the Free plan.")).to_be_visible()
