"""Two-factor sign-in on the site, as a person does it, against `make run`'s processes: set
it up reading the secret off the page (an authenticator app, played by pyotp), keep the
recovery codes, log out, log in with a wrong code and then the right one, log in with a
recovery code, and turn it off with the password and a code. Every page passes axe-core
and is photographed at 1280 and 375 pixels (var/screenshots/)."""

from __future__ import annotations

import time

import pyotp
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import PASSWORD, check_page, log_in, sign_up

pytestmark = pytest.mark.browser

EMAIL = "ada.two-factor@example.org"


def test_a_sender_sets_up_two_factor_sign_in_and_logs_in_with_a_code(page: Page, full_system):
    sign_up(page, EMAIL)
    expect(page.get_by_role("heading", name="Check your mail")).to_be_visible()
    log_in(page, EMAIL)
    expect(page.get_by_role("heading", name="Your dashboard")).to_be_visible()

    # Set-up: the QR code as an image, the secret as text, a first code.
    page.goto("/app/account")
    check_page(page, "account-two-factor-off")
    page.get_by_role("button", name="Set up two-factor sign-in").click()
    expect(page.get_by_role("heading", name="Set up two-factor sign-in")).to_be_visible()
    qr = page.get_by_role("img", name="QR code holding your two-factor secret")
    expect(qr).to_be_visible()
    assert qr.evaluate("image => image.complete && image.naturalWidth > 0"), "no QR code drawn"
    check_page(page, "two-factor-set-up")
    app = pyotp.TOTP(page.locator("#totp-secret").inner_text().strip())
    page.get_by_label("Code from your app").fill("000000" if app.now() != "000000" else "111111")
    page.get_by_role("button", name="Turn two-factor sign-in on").click()
    expect(page.locator("#code-error")).to_contain_text("The code is not right")
    check_page(page, "two-factor-set-up-error")
    page.get_by_label("Code from your app").fill(app.now())
    page.get_by_role("button", name="Turn two-factor sign-in on").click()
    expect(page.get_by_role("heading", name="Two-factor sign-in is on")).to_be_visible()
    check_page(page, "two-factor-recovery-codes")
    codes = page.get_by_role("list", name="Recovery codes").locator("code").all_inner_texts()
    assert len(codes) == 10

    # Log out, and back in: the password, then a wrong code, then the app's.
    page.get_by_role("button", name="Log out").click()
    log_in(page, EMAIL)
    expect(page.get_by_role("heading", name="Your sign-in code")).to_be_visible()
    check_page(page, "login-code")
    page.get_by_label("Code from your app").fill(app.at(time.time() + 600))
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#code-error")).to_contain_text("The code is not right")
    check_page(page, "login-code-error")
    # The confirming code is spent: the app's next one is accepted (one step of drift).
    page.get_by_label("Code from your app").fill(app.at(time.time() + 30))
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Your dashboard")).to_be_visible()

    # No phone at hand: a recovery code, once.
    page.get_by_role("button", name="Log out").click()
    log_in(page, EMAIL)
    page.get_by_role("button", name="Use a recovery code").click()
    check_page(page, "login-recovery-code")
    page.get_by_label("Recovery code").fill(codes[0])
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Your dashboard")).to_be_visible()

    # Turning it off asks the password and a code; then the password alone logs in.
    page.goto("/app/account")
    expect(page.get_by_text("Recovery codes left: 9")).to_be_visible()
    check_page(page, "account-two-factor-on")
    page.get_by_label("Your password", exact=True).fill(PASSWORD)
    page.get_by_label("A code from your app, or a recovery code").fill(codes[1])
    page.get_by_role("button", name="Turn two-factor sign-in off").click()
    expect(page.get_by_text("Two-factor sign-in is off")).to_be_visible()
    page.get_by_role("button", name="Log out").click()
    log_in(page, EMAIL)
    expect(page.get_by_role("heading", name="Your dashboard")).to_be_visible()


def test_the_qr_code_shows_under_the_sites_own_policy(browser: Browser, full_system):
    # A context without the CSP bypass: the QR code is a `data:` image, which the policy
    # allows for images only; any inline style or script would be refused on the console.
    context = browser.new_context(base_url=full_system.base_url)
    page = context.new_page()
    refusals: list[str] = []
    page.on("console", lambda message: refusals.append(message.text)
            if "Content Security Policy" in message.text else None)
    sign_up(page, "grace.two-factor@example.org")
    log_in(page, "grace.two-factor@example.org")
    page.goto("/app/account")
    page.get_by_role("button", name="Set up two-factor sign-in").click()
    qr = page.get_by_role("img", name="QR code holding your two-factor secret")
    expect(qr).to_be_visible()
    assert qr.evaluate("image => image.complete && image.naturalWidth > 0"), "no QR code drawn"
    context.close()
    assert not refusals, refusals
