"""The cookie question as visitors meet it, against `make run`'s processes: one rejects
everything and no cookie but the strictly necessary is ever set; one whose browser sends
Global Privacy Control is not asked at all; one who answered signs up and finds the
answer among the account's receipts. Every cookie the browser holds is on the cookie
settings page, as strictly necessary."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

import tests.data_map as data_map
from tests.browser.conftest import WIDTHS, check_page, link_in_mail, log_in, sign_up

pytestmark = pytest.mark.browser

PAGES = ["/", "/privacy", "/signup", "/login", "/cookies"]


def listed_cookies(page: Page) -> dict[str, str]:
    """Name -> kind, from the table of the cookie settings page."""
    page.goto("/cookies")
    table = page.get_by_role("table", name="Cookies this site sets")
    rows = {}
    for row in table.get_by_role("row").all()[1:]:
        name = row.get_by_role("rowheader").inner_text().strip()
        rows[name] = row.get_by_role("cell").last.inner_text().strip()
    assert rows, "the settings page lists no cookie"
    return rows


def assert_only_listed_cookies(context: BrowserContext, page: Page) -> set[str]:
    held = {cookie["name"] for cookie in context.cookies()}
    listed = listed_cookies(page)
    assert held <= set(listed), f"cookies set but not listed: {held - set(listed)}"
    assert all(kind == "Strictly necessary" for kind in listed.values()), listed
    return held


def visitor_choices(full_system) -> list[dict]:
    return [json.loads(doc) for (doc,) in
            full_system.query("privacy", "select doc from visitor_consents")]


def test_a_visitor_rejects_every_cookie_and_only_necessary_ones_are_ever_set(
        page: Page, context: BrowserContext, full_system):
    page.goto("/")
    banner = page.get_by_role("region", name="Cookies on this site")
    expect(banner).to_be_visible()
    for answer in ("Accept all", "Reject all"):
        expect(banner.get_by_role("button", name=answer)).to_be_visible()
    expect(banner.get_by_role("button", name="Choose")).to_be_visible()
    assert {c["name"] for c in context.cookies()} <= {"jicm_forms"}, "nothing before a choice"
    check_page(page, "cookie-banner")

    before = len(visitor_choices(full_system))
    banner.get_by_role("button", name="Reject all").click()
    expect(page.get_by_text("Your choice is saved: only the cookies the site needs")
           ).to_be_visible()
    expect(page.get_by_role("region", name="Cookies on this site")).to_have_count(0)
    for path in PAGES:
        page.goto(path)
        expect(page.get_by_role("region", name="Cookies on this site")).to_have_count(0)
    assert assert_only_listed_cookies(context, page) == {"jicm_forms", "jicm_cookies"}
    check_page(page, "cookie-settings")

    # The answer is consent on record: a receipt of method web, filed under a hash.
    [*_, choice] = visitor_choices(full_system)
    assert len(visitor_choices(full_system)) == before + 1
    assert choice["cookies"] == {"analytics": False, "marketing": False}
    assert [r["method"] for r in choice["receipts"]] == ["web"]
    token = next(c["value"] for c in context.cookies() if c["name"] == "jicm_cookies")
    assert token.split(".")[0] not in json.dumps(choice), "the token itself is never stored"
    paths = {p for p in data_map.paths_of(choice) if p} | {"_id"}
    paths = {p.removesuffix(".$date") for p in paths}
    assert not data_map.unlisted("privacy", "visitor_consents", paths)

    # Withdrawing is as easy: the footer reopens the settings on every page.
    page.goto("/privacy")
    page.get_by_role("link", name="Cookie settings").click()
    page.get_by_label("Analytics cookies").check()
    page.get_by_role("button", name="Save my choice").click()
    expect(page.get_by_text("analytics cookies are allowed")).to_be_visible()
    page.get_by_role("link", name="Cookie settings").click()
    page.get_by_role("button", name="Reject all").click()
    expect(page.get_by_text("only the cookies the site needs")).to_be_visible()
    receipts = visitor_choices(full_system)[-1]["receipts"]
    assert [r["changes"] for r in receipts][1:] == [
        [{"purpose": "cookies.analytics", "choice": True}],
        [{"purpose": "cookies.analytics", "choice": False}]]


def test_a_browser_sending_gpc_is_not_asked_and_told_its_signal_is_honoured(
        browser: Browser, full_system):
    context = browser.new_context(base_url=full_system.base_url, bypass_csp=True,
                                  viewport={"width": WIDTHS[0], "height": 900},
                                  extra_http_headers={"Sec-GPC": "1"})
    page = context.new_page()
    page.goto("/")
    banner = page.get_by_role("region", name="Your browser\u2019s privacy signal is honoured")
    expect(banner).to_contain_text("Global Privacy Control")
    expect(page.get_by_role("button", name="Accept all")).to_have_count(0)
    expect(page.get_by_role("button", name="Reject all")).to_have_count(0)
    check_page(page, "cookie-banner-gpc")
    page.goto("/cookies")
    expect(page.get_by_label("Analytics cookies")).to_be_disabled()
    expect(page.get_by_label("Marketing cookies")).to_be_disabled()
    check_page(page, "cookie-settings-gpc")
    # Even a deliberate "accept" changes nothing while the signal is sent.
    page.get_by_role("button", name="Accept all").click()
    expect(page.get_by_text("only the cookies the site needs")).to_be_visible()
    page.goto("/")
    expect(page.get_by_role("region", name=banner_name())).to_have_count(0)
    assert_only_listed_cookies(context, page)
    assert [r["method"] for r in visitor_choices(full_system)[-1]["receipts"]] == ["gpc"]
    context.close()


def banner_name() -> str:
    return "Your browser\u2019s privacy signal is honoured"


def test_a_visitors_answer_joins_the_account_they_sign_up_for(page: Page, full_system):
    page.goto("/")
    page.get_by_role("button", name="Choose").click()
    page.get_by_label("Marketing cookies").check()
    page.get_by_role("button", name="Save my choice").click()
    expect(page.get_by_text("marketing cookies are allowed")).to_be_visible()
    sign_up(page, "cookie.visitor@example.org")
    expect(page.get_by_role("heading", name="Check your mail")).to_be_visible()
    page.goto(link_in_mail(full_system, "Confirm", "/verify?token=", count=1))
    page.get_by_role("button", name="Confirm my address").click()
    log_in(page, "cookie.visitor@example.org")
    page.get_by_role("link", name="Privacy", exact=True).click()
    receipts = page.get_by_role("table", name="Your consent receipts, newest first")
    expect(receipts.get_by_role("row").filter(has_text="Marketing cookies: on")
           ).to_contain_text("on this site")
    expect(receipts.get_by_role("row").filter(has_text="The privacy policy")
           ).to_contain_text("when you signed up")
