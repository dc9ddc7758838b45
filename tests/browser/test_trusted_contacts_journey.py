"""Trusted contacts in a browser, against `make run`'s processes with seconds-long switches:
the owner invites a contact from the switch settings page, the contact accepts on the
invitation page, the owner stops checking in, and the contact holds the release from the
page their mail links to. Every page passes axe-core and is screenshotted."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

import tests.e2e.conftest as e2e
from deploy.local.supervisor import DEFAULT_SERVICES
from tests.browser.conftest import check_page, log_in
from tests.e2e.people import PASSWORD, PATIENCE, Sender, mail_to, text_of
from tests.e2e.switch_system import SECONDS_LONG
from tests.helpers import wait_for

pytestmark = pytest.mark.browser

CONTACT = "sam.contact@example.org"


@pytest.fixture(scope="module")
def full_system(tmp_path_factory, vhost) -> Iterator[e2e.System]:
    tmp = tmp_path_factory.mktemp("trusted-contacts-browser")
    environ = e2e.system_environment(tmp, vhost, DEFAULT_SERVICES,
                                     JICM_STRIPE_STANDIN_PORT=str(e2e.free_port()),
                                     **SECONDS_LONG)
    system = e2e.start_system(tmp, environ)
    yield system
    system.supervisor.stop_all()


def link_to(system: e2e.System, subject_part: str, path: str) -> str:
    def arrived():
        for mail in mail_to(system, CONTACT):
            if subject_part in mail["Subject"]:
                return re.search(r"https?://\S+?" + path + r"[A-Za-z0-9_-]+", text_of(mail))
        return None
    return wait_for(arrived, timeout=PATIENCE, interval=0.2,
                    what=f"a mail {subject_part!r} to the contact")[0]


def test_an_owner_invites_a_contact_who_accepts_and_later_holds_the_release(
        page: Page, full_system):
    owner = Sender(full_system, verified=True)
    switch_id = owner.switch()["id"]
    log_in(page, owner.email, PASSWORD)
    page.goto(f"/app/switches/{switch_id}")
    expect(page.get_by_role("heading", name="Trusted contacts")).to_be_visible()
    page.get_by_label("Their name").fill("Sam")
    page.get_by_label("Their email address").fill(CONTACT)
    page.get_by_role("button", name="Invite them").click()
    expect(page.get_by_text("We mailed Sam an invitation")).to_be_visible()
    expect(page.get_by_text("invited, has not answered yet")).to_be_visible()
    check_page(page, "switch-trusted-contacts")

    page.goto(link_to(full_system, "trusted contact", "/i/"))
    expect(page.get_by_role("heading", name="Will you be a trusted contact?")).to_be_visible()
    expect(page.get_by_text(owner.email).first).to_be_visible()
    check_page(page, "trusted-contact-invitation")
    page.get_by_role("button", name="Yes, I accept").click()
    expect(page.get_by_role("heading", name="Thank you")).to_be_visible()
    check_page(page, "trusted-contact-accepted")

    owner.configure(interval_seconds=2, grace_seconds=60, reminders_seconds=[],
                    hold_seconds=120)
    page.goto(link_to(full_system, "missed a check-in", "/t/"))
    expect(page.get_by_role("heading", name=f"{owner.email} missed a check-in")).to_be_visible()
    expect(page.get_by_role("button", name="I'm here")).to_have_count(0)
    check_page(page, "trusted-contact-request")
    page.get_by_role("button", name="They are all right: hold the release").click()
    expect(page.get_by_role("heading", name="The release is held")).to_be_visible()
    check_page(page, "trusted-contact-held")
    assert owner.switch()["holds_used"] == 1
