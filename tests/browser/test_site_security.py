"""The site's security as a browser meets it: no form takes a POST without its CSRF token
(a 403 page, never a stack trace), the session cookie's flags, another person's message or
switch is a 404 page, and the Content-Security-Policy holds with nothing inline."""

from __future__ import annotations

import re

import pytest
import requests
from playwright.sync_api import Browser, Page, expect

from deploy.local.supervisor import stripe_standin_url
from tests.browser.conftest import link_in_mail, log_in, sign_up

pytestmark = pytest.mark.browser

OWNER, STRANGER = "owner@example.org", "stranger@example.org"
PUBLIC_PAGES = ["/", "/privacy", "/signup", "/login", "/forgot", "/cookies"]
APP_PAGES = ["/app", "/app/messages", "/app/messages/new", "/app/account",
             "/app/account/close", "/app/privacy", "/app/billing/success",
             "/app/billing/cancel"]
FORMS = ["/signup", "/login", "/logout", "/forgot", "/app/check-in", "/app/verify/resend",
         "/app/messages/new", "/app/account/time-zone", "/app/account/password",
         "/app/account/sessions/end", "/app/account/close", "/app/switches/new",
         "/cookies", "/app/privacy/marketing/email", "/app/privacy/export",
         "/app/billing/checkout", "/app/billing/portal", "/login/code", "/login/code/recovery",
         "/app/account/two-factor/start", "/app/account/two-factor/confirm",
         "/app/account/two-factor/disable"]


@pytest.fixture(scope="module")
def owner(browser: Browser, full_system) -> dict:
    """A verified sender with one message; what their pages' URLs are."""
    context = browser.new_context(base_url=full_system.base_url, bypass_csp=True)
    page = context.new_page()
    sign_up(page, OWNER)
    page.goto(link_in_mail(full_system, "Confirm", "/verify?token=", count=1))
    page.get_by_role("button", name="Confirm my address").click()
    log_in(page, OWNER)
    page.goto("/app/messages/new")
    page.get_by_label("Subject").fill("Only for my sister")
    page.get_by_label("Your message").fill("The safe's code is 1234.")
    page.get_by_label("Name of recipient 1").fill("Sister")
    page.get_by_label("Email of recipient 1").fill("sister@example.org")
    page.get_by_role("button", name="Seal this message").click()
    message_url = page.get_by_role("link", name="Only for my sister", exact=True).get_attribute(
        "href")
    page.goto("/app")
    switch_url = page.get_by_role("button", name="Settings").get_attribute("href")
    cookies = {c["name"]: c for c in context.cookies()}
    context.close()
    return {"message": message_url, "switch": switch_url, "cookies": cookies}


def test_the_session_cookie_is_httponly_lax_and_not_readable_by_scripts(owner):
    # make run serves plain http on 127.0.0.1: the documented cookie name without the
    # __Host- prefix, and no Secure flag (a browser would drop it); https gets both.
    session = owner["cookies"]["jicm_session"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Lax"
    assert session["secure"] is False
    assert session["path"] == "/"
    assert "domain" not in session or session["domain"] in ("127.0.0.1", "")
    forms = owner["cookies"]["jicm_forms"]
    assert forms["httpOnly"] is True and forms["sameSite"] == "Lax"


def test_every_form_refuses_a_post_without_its_csrf_token(owner, full_system):
    cookies = {"jicm_session": owner["cookies"]["jicm_session"]["value"]}
    for path in [*FORMS, owner["message"], owner["message"] + "/delete", owner["switch"],
                 owner["switch"] + "/pause", owner["switch"] + "/resume",
                 owner["switch"] + "/trusted-contacts",
                 owner["switch"] + "/trusted-contacts/settings",
                 owner["switch"] + "/trusted-contacts/some-contact/remove"]:
        answer = requests.post(full_system.url(path), data={"anything": "1"},
                               cookies=cookies, headers={"Accept": "text/html"},
                               allow_redirects=False, timeout=10)
        assert answer.status_code == 403, path
        assert answer.headers["Content-Type"].startswith("text/html"), path
        assert "This form has expired" in answer.text, path
        assert "Traceback" not in answer.text


def test_another_senders_message_and_switch_are_404_pages(page: Page, owner, full_system):
    sign_up(page, STRANGER)
    log_in(page, STRANGER)
    expect(page.get_by_role("heading", name="Your dashboard")).to_be_visible()
    for path in (owner["message"], owner["message"] + "/delete", owner["switch"]):
        response = page.goto(path)
        assert response.status == 404, path
        expect(page.get_by_role("heading", name="There is nothing here")).to_be_visible()
        expect(page.get_by_text("Only for my sister")).to_have_count(0)


def test_the_api_never_takes_the_session_cookie(owner, full_system):
    answer = requests.get(full_system.url("/api/v1/me"), timeout=10, cookies={
        "jicm_session": owner["cookies"]["jicm_session"]["value"]})
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthorized"


def test_the_csp_allows_nothing_inline_and_no_other_origin(owner, full_system):
    cookies = {"jicm_session": owner["cookies"]["jicm_session"]["value"]}
    for path in PUBLIC_PAGES + APP_PAGES + [owner["message"], owner["switch"],
                                            "/verify?token=x", "/reset?token=x",
                                            "/c/" + "x" * 40]:
        answer = requests.get(full_system.url(path), cookies=cookies, timeout=10)
        csp = answer.headers["Content-Security-Policy"]
        assert answer.status_code in (200, 404), path
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, path
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, path
        assert not re.search(r"https?://", csp), path
        assert "<script>" not in answer.text and " style=" not in answer.text, path


def test_the_billing_page_lets_its_forms_lead_to_the_payment_pages_and_nowhere_else(
        owner, full_system):
    cookies = {"jicm_session": owner["cookies"]["jicm_session"]["value"]}
    answer = requests.get(full_system.url("/app/billing"), cookies=cookies, timeout=10)
    csp = answer.headers["Content-Security-Policy"]
    assert f"form-action 'self' {stripe_standin_url(full_system.environ)};" in csp
    assert "unsafe-inline" not in csp and "default-src 'none'" in csp
    assert csp.count("http") == 1, "one other origin: the payment pages"


def test_no_page_breaks_its_own_policy_in_a_real_browser(browser: Browser, owner,
                                                         full_system):
    # A context without the CSP bypass: any inline style or script would be refused,
    # and Chromium says so on the console.
    context = browser.new_context(base_url=full_system.base_url)
    context.add_cookies([{**owner["cookies"]["jicm_session"]}])
    page = context.new_page()
    refusals: list[str] = []
    page.on("console", lambda message: refusals.append(message.text)
            if "Content Security Policy" in message.text else None)
    for path in PUBLIC_PAGES + APP_PAGES + ["/app/billing", owner["switch"]]:
        page.goto(path)
        page.wait_for_load_state("load")
    context.close()
    assert not refusals, refusals
