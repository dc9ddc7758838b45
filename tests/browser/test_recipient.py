"""The recipient's side, against `make run`'s processes with seconds-long switches: an owner
stops checking in, the switch fires, the release mail reaches the sink in the site's look,
and the recipient opens it, reads who wrote and when, prints the message (the print
stylesheet leaves the letter alone) and downloads it as text and as an email. The page
sets no cookie at all and loads nothing from anyone else."""

from __future__ import annotations

import re
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Page, expect

import tests.e2e.conftest as e2e
from deploy.local.supervisor import DEFAULT_SERVICES
from tests.browser.conftest import check_page, screenshot
from tests.e2e.people import PATIENCE, Sender, mail_to, text_of
from tests.e2e.switch_system import SECONDS_LONG
from tests.helpers import wait_for

pytestmark = pytest.mark.browser

RECIPIENT = "grace.recipient@example.org"
BODY = "Dear Grace,\n\nThe letters are in the cedar chest.\nAll my love."
READ_LINK = re.compile(r"https?://\S+?/r/[A-Za-z0-9_-]+")


@pytest.fixture(scope="module")
def full_system(tmp_path_factory, vhost) -> Iterator[e2e.System]:
    """`make run`'s processes, with switches that fire within seconds."""
    tmp = tmp_path_factory.mktemp("recipient-system")
    environ = e2e.system_environment(tmp, vhost, DEFAULT_SERVICES,
                                     JICM_STRIPE_STANDIN_PORT=str(e2e.free_port()),
                                     **SECONDS_LONG)
    system = e2e.start_system(tmp, environ)
    yield system
    system.supervisor.stop_all()


@pytest.fixture(scope="module")
def release_mail(full_system):
    """The mail a recipient receives once an owner stopped checking in."""
    owner = Sender(full_system, verified=True)
    written = requests.post(full_system.url("/api/v1/messages"), headers=owner.headers, json={
        "subject": "For Grace", "body": BODY, "sender_name": "Ada",
        "recipients": [{"name": "Grace", "email": RECIPIENT}]}, timeout=10)
    assert written.status_code == 201, written.text
    owner.configure(interval_seconds=2, grace_seconds=2, reminders_seconds=[1])
    return wait_for(lambda: mail_to(full_system, RECIPIENT), timeout=PATIENCE, interval=0.2,
                    what="the release mail")[-1]


def test_the_release_mail_is_in_the_sites_look_and_leads_to_the_site(page: Page, release_mail,
                                                                     full_system):
    html = release_mail.get_body(("html",)).get_content()
    links = re.findall(r'href="([^"]+)"', html)
    assert links and all(link.startswith(full_system.base_url) for link in links), links
    assert "#007a50" in html, "the site's colour"
    assert READ_LINK.search(text_of(release_mail)), "the text part is kept"
    page.set_content(html)
    check_page(page, "mail-release")


def test_a_recipient_reads_prints_and_keeps_the_message(page: Page, release_mail, full_system,
                                                         tmp_path: Path):
    link = READ_LINK.search(text_of(release_mail))[0]
    response = page.goto(link)
    assert response.status == 200
    expect(page.get_by_role("heading", name="For Grace")).to_be_visible()
    expect(page.get_by_text(re.compile(r"^A message from Ada \(sender-\S+\) for Grace$"))
           ).to_be_visible()
    expect(page.get_by_text(re.compile(r"Written on \d{1,2} \w+ \d{4}\. Given to you on"))
           ).to_be_visible()
    expect(page.get_by_text("The letters are in the cedar chest.")).to_be_visible()
    expect(page.get_by_text("It has no expiry date")).to_be_visible()
    check_page(page, "letter")

    # Nothing tracks the reader: no cookie, nothing from another origin.
    assert page.context.cookies() == []
    assert "Set-Cookie" not in response.headers and "set-cookie" not in response.headers
    loaded = page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(url.startswith(full_system.base_url) for url in loaded), loaded

    # Print: the print stylesheet keeps the letter and drops everything to press.
    expect(page.get_by_role("button", name="Print")).to_be_visible()
    page.emulate_media(media="print")
    expect(page.get_by_role("button", name="Print")).to_be_hidden()
    expect(page.get_by_role("button", name="Download as text (.txt)")).to_be_hidden()
    expect(page.get_by_role("heading", name="About this link")).to_be_hidden()
    expect(page.get_by_text("The letters are in the cedar chest.")).to_be_visible()
    screenshot(page, "letter-print")
    printed = page.pdf(path=str(tmp_path / "letter.pdf"))
    assert printed.startswith(b"%PDF")
    page.emulate_media(media="screen")

    # Keep it: as text, and as an email any mail program opens.
    with page.expect_download() as text_download:
        page.get_by_role("button", name="Download as text (.txt)").click()
    assert text_download.value.suggested_filename == "For Grace.txt"
    text = Path(text_download.value.path()).read_text(encoding="utf-8")
    assert text.startswith("For Grace\n\nFrom: Ada (sender-") and "\nTo: Grace\n" in text
    assert BODY in text
    with page.expect_download() as eml_download:
        page.get_by_role("button", name="Download as an email (.eml)").click()
    mail = message_from_bytes(Path(eml_download.value.path()).read_bytes(),
                              policy=policy.default)
    assert mail["Subject"] == "For Grace"
    assert mail["From"].addresses[0].display_name.startswith("Ada (sender-")
    assert mail["From"].addresses[0].display_name.endswith(") via Just in Case")
    assert mail.get_content().strip() == BODY.strip()
    assert page.context.cookies() == []


def test_a_link_that_opens_nothing_is_a_calm_404_page(page: Page, full_system):
    response = page.goto("/r/" + "x" * 43)
    assert response.status == 404
    expect(page.get_by_role("heading", name="This link does not open any message")
           ).to_be_visible()
    check_page(page, "letter-not-found")
