"""Browser fixtures: `make run`'s processes (tests/e2e), Debian's Chromium driven by
Playwright, axe-core injected into every page, and screenshots at two widths.

Chromium is `/usr/bin/chromium` (deploy/local/ensure_chromium.sh installs it) with the
flags this machine needs: Playwright's own browser download cannot work here. Contexts are
made with `bypass_csp=True` so axe-core can be injected into our strict-CSP pages; the
CSP itself is checked separately, in a context without the bypass.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

import tests.e2e.conftest as e2e

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"]
AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = REPO / "var" / "screenshots"
WIDTHS = (1280, 375)
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
PASSWORD = "a long and quiet evening by the sea"

# The system as `make run` starts it, one per test module (tests/e2e/conftest.py).
vhost, full_system = e2e.vhost, e2e.full_system


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser: Browser, full_system: e2e.System) -> Iterator[BrowserContext]:
    ctx = browser.new_context(base_url=full_system.base_url, bypass_csp=True,
                              viewport={"width": WIDTHS[0], "height": 900},
                              timezone_id="Europe/Paris", locale="en-GB")
    ctx.set_default_timeout(15_000)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


def check_page(page: Page, name: str) -> None:
    """axe-core finds no WCAG 2.x A/AA violation, and screenshots at both widths."""
    page.wait_for_load_state("load")
    page.add_script_tag(path=str(AXE))
    result = page.evaluate(
        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", WCAG_TAGS)
    problems = [
        f"{v['id']} ({v['impact']}): {v['help']} at "
        + ", ".join(" ".join(node["target"]) for node in v["nodes"][:5])
        for v in result["violations"]
    ]
    assert not problems, f"accessibility problems on {name} ({page.url}):\n" + "\n".join(
        problems)
    screenshot(page, name)


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size or {"width": WIDTHS[0], "height": 900}
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": size["height"]})
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)
    page.set_viewport_size(size)


def link_in_mail(system: e2e.System, subject_part: str, path: str, count: int) -> str:
    """The link to `path` in the newest mail whose subject has `subject_part`."""
    mails = [m for m in system.wait_for_mail(count) if subject_part in m["Subject"]]
    assert mails, f"no mail about {subject_part!r}"
    text = mails[-1].get_body(("plain",)).get_content()
    return re.search(re.escape(system.url(path)) + r"\S+", text)[0]


def sign_up(page: Page, email: str, password: str = PASSWORD) -> None:
    page.goto("/signup")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_label("Day").fill("27")
    page.get_by_label("Month").fill("3")
    page.get_by_label("Year").fill("1985")
    page.get_by_label("I have read and accept").check()
    page.get_by_role("button", name="Create my account").click()


def log_in(page: Page, email: str, password: str = PASSWORD) -> None:
    page.goto("/login")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()
