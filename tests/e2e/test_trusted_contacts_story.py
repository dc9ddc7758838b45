"""Trusted contacts end to end, through `make run`'s processes with seconds-long settings
(gunicorn, accounts, delivery, the scheduler, RabbitMQ, the dev SMTP sink, real clocks):
a contact accepts on the invitation page, the switch becomes overdue, the contact holds
it from the mailed link, the owner is told, and the switch fires only after the new end
of grace; a contact who declined receives nothing more."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import requests

from tests.e2e.conftest import start_system, system_environment
from tests.e2e.people import PATIENCE, Sender, mail_to, text_of
from tests.e2e.switch_system import SECONDS_LONG, when
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

INVITATION_LINK = re.compile(r"https?://\S+?/i/([A-Za-z0-9_-]+)")
REQUEST_LINK = re.compile(r"https?://\S+?/t/([A-Za-z0-9_-]+)")
OUR_FORM = {"confirm": "yes"}


@pytest.fixture(scope="module")
def contacts_system(tmp_path_factory, vhost):
    tmp = tmp_path_factory.mktemp("trusted-contacts")
    environ = system_environment(tmp, vhost, "accounts,delivery,scheduler", **SECONDS_LONG)
    system = start_system(tmp, environ)
    yield system
    system.supervisor.stop_all()


def link_in(system, address: str, subject_part: str, pattern: re.Pattern) -> str:
    def arrived():
        for mail in mail_to(system, address):
            if subject_part in mail["Subject"]:
                return pattern.search(text_of(mail))
        return None
    found = wait_for(arrived, timeout=PATIENCE, interval=0.1,
                     what=f"a mail {subject_part!r} to {address}")
    return found.group(1)


def test_a_contact_holds_the_release_and_the_switch_fires_only_after_the_new_end_of_grace(
        contacts_system):
    system = contacts_system
    owner = Sender(system, verified=True)
    switch_id = owner.switch()["id"]
    contacts_path = f"/api/v1/switches/{switch_id}/trusted-contacts"
    for name, email in (("Sam", "sam-e2e@example.org"), ("Noah", "noah-e2e@example.org")):
        added = owner.call("POST", contacts_path, json={"name": name, "email": email})
        assert added.status_code == 201, added.text
        assert added.json()["status"] == "invited"

    sam_invitation = link_in(system, "sam-e2e@example.org", "trusted contact", INVITATION_LINK)
    shown = requests.get(system.url(f"/i/{sam_invitation}"), timeout=10)
    assert shown.status_code == 200 and owner.email in shown.text
    accepted = requests.post(system.url(f"/i/{sam_invitation}"), timeout=10,
                             data={**OUR_FORM, "decision": "accepted"})
    assert accepted.status_code == 200 and "You are now a trusted contact" in accepted.text
    noah_invitation = link_in(system, "noah-e2e@example.org", "trusted contact",
                              INVITATION_LINK)
    declined = requests.post(system.url(f"/i/{noah_invitation}"), timeout=10,
                             data={**OUR_FORM, "decision": "declined"})
    assert declined.status_code == 200
    statuses = {c["name"]: c["status"]
                for c in owner.call("GET", contacts_path).json()["trusted_contacts"]}
    assert statuses == {"Sam": "accepted", "Noah": "declined"}

    owner.configure(interval_seconds=3, grace_seconds=8, reminders_seconds=[], hold_seconds=10)
    request = link_in(system, "sam-e2e@example.org", "missed a check-in", REQUEST_LINK)
    overdue = owner.switch()
    assert overdue["state"] == "overdue"
    page = requests.get(system.url(f"/t/{request}"), timeout=10)
    assert page.status_code == 200
    assert "hold the release" in page.text and "check me in" not in page.text.lower()

    held = requests.post(system.url(f"/t/{request}"), timeout=10,
                         data={**OUR_FORM, "action": "hold"})

    assert held.status_code == 200 and "The release is held" in held.text, held.text
    told = owner.mail("A trusted contact held your release")
    assert "Sam" in text_of(told)
    after_hold = owner.switch()
    assert after_hold["holds_used"] == 1
    new_end = when(after_hold["grace_ends_at"])
    assert new_end >= when(overdue["grace_ends_at"]) + timedelta(seconds=10)
    wait_for(lambda: owner.switch()["state"] == "fired", timeout=PATIENCE, interval=0.2,
             what="the switch to fire after the new end of grace")
    assert when(owner.switch()["fired_at"]) >= new_end
    # Too late now: the same link says so, and changes nothing.
    again = requests.post(system.url(f"/t/{request}"), timeout=10,
                          data={**OUR_FORM, "action": "hold"})
    assert again.status_code == 409 and "too late" in again.text
    # The contact who declined received the invitation and nothing more.
    assert len(mail_to(system, "noah-e2e@example.org")) == 1
