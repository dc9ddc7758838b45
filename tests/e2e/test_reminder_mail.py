"""The reminder mail end to end: it arrives with a one-click link, opening the link
changes nothing, and its button checks in. It runs on a vhost of its own, so no other
system's processes answer for this one's."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
import requests

from tests.e2e.conftest import start_system, system_environment
from tests.e2e.people import PATIENCE, Sender, mail_to, text_of
from tests.e2e.switch_system import SECONDS_LONG, when
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

LINK = re.compile(r"https?://\S+?/c/[A-Za-z0-9_-]+")


def test_the_reminder_mail_arrives_with_a_link_that_checks_in(tmp_path, vhost):
    environ = system_environment(tmp_path, vhost, "accounts,scheduler,delivery", **SECONDS_LONG)
    system = start_system(tmp_path, environ)
    try:
        owner = Sender(system, verified=True)
        before = owner.configure(interval_seconds=8, grace_seconds=30, reminders_seconds=[5])

        def reminder() -> tuple | None:
            # The verification mail went to the same address: look for the reminder's link.
            for mail in mail_to(system, owner.email):
                found = LINK.search(text_of(mail))
                if found:
                    return mail, found.group(0)
            return None

        mail, link = wait_for(reminder, timeout=PATIENCE, what="the reminder mail")
        assert "Please check in with Just in Case by " in mail["Subject"]
        assert "You receive this mail because you set up a switch" in text_of(mail)
        path = urlsplit(link).path
        shown = requests.get(system.url(path), timeout=10)
        assert shown.status_code == 200
        assert 'method="post"' in shown.text
        assert owner.switch()["cycle"] == before["cycle"], "opening the link changes nothing"
        confirmed = requests.post(system.url(path), data={"confirm": "yes"}, timeout=10)
        assert confirmed.status_code == 200, confirmed.text
        after = owner.switch()
        assert after["cycle"] == before["cycle"] + 1
        assert when(after["deadline"]) > when(before["deadline"])
        assert requests.post(system.url(path), data={"confirm": "yes"},
                             timeout=10).status_code == 410
    finally:
        system.supervisor.stop_all()
