"""Keyboard only: a person who cannot use a mouse signs up and checks in with Tab, typing,
Space and Enter, and always sees where the focus is."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import PASSWORD, check_page, link_in_mail, log_in

pytestmark = pytest.mark.browser

EMAIL = "keys@example.org"
TABS_MAX = 40

FOCUSED_NAME = """() => {
  const el = document.activeElement;
  if (!el) return "";
  const label = el.labels && el.labels.length ? el.labels[0].innerText : "";
  return (label || el.getAttribute("aria-label") || el.innerText || el.value || "").trim();
}"""


def tab_to(page: Page, name: str) -> None:
    """Press Tab until the focused element is named `name` (its label or its text)."""
    for _ in range(TABS_MAX):
        page.keyboard.press("Tab")
        focused = page.evaluate(FOCUSED_NAME)
        if focused.startswith(name):
            outline = page.evaluate(
                "() => getComputedStyle(document.activeElement).outlineStyle")
            assert outline != "none", f"{name!r} has focus but shows no focus ring"
            return
    raise AssertionError(f"Tab never reached {name!r}")


def test_signing_up_and_checking_in_need_only_a_keyboard(page: Page, full_system):
    page.goto("/")
    tab_to(page, "Sign up")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Sign up")).to_be_visible()
    for label, text in (("Email address", EMAIL), ("Password", PASSWORD), ("Day", "9"),
                        ("Month", "12"), ("Year", "1980")):
        tab_to(page, label)
        page.keyboard.type(text)
    tab_to(page, "I have read and accept")
    page.keyboard.press("Space")
    tab_to(page, "Create my account")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Check your mail")).to_be_visible()

    page.goto(link_in_mail(full_system, "Confirm", "/verify?token=", count=1))
    tab_to(page, "Confirm my address")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Your address is confirmed")).to_be_visible()

    page.goto("/login")
    tab_to(page, "Email address")
    page.keyboard.type(EMAIL)
    tab_to(page, "Password")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Your dashboard")).to_be_visible()
    tab_to(page, "I\u2019m here (check in)")
    page.keyboard.press("Enter")
    expect(page.get_by_text("Checked in. Your next check-in is due")).to_be_visible()
    check_page(page, "dashboard-checked-in")


def test_the_skip_link_is_the_first_stop_and_leads_to_the_content(page: Page, full_system):
    log_in(page, "nobody@example.org")
    page.goto("/")
    page.keyboard.press("Tab")
    assert page.evaluate(FOCUSED_NAME) == "Skip to the content"
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.id") == "main"
