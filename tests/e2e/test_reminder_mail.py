"""The reminder mail end to end: it arrives with a one-click link, opening the link
changes nothing, and its button checks in. Needs the real delivery service (issue 3);
until that is merged the test is skipped. It runs on a vhost of its own, so no other
system's processes answer for this one's."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
import requests

from tests.e2e.conftest import system_environment
from tests.e2e.switch_system import SECONDS_LONG, Owner, start, when
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

LINK = re.compile(r"https?://\S+?/c/[A-Za-z0-9_-]+")


def test_the_reminder_mail_arrives_with_a_link_that_checks_in(tmp_path, vhost):
    pytest.importorskip(
        "services.delivery.service",
        reason="the reminder mail needs the real delivery service (issue 3), not yet merged",
    )
    environ = system_environment(tmp_path, vhost, "accounts,scheduler,delivery", **SECONDS_LONG)
    system = start(tmp_path, environ, standin_delivery=False)
    try:
        owner = Owner(system)
        before = owner.configure(interval_seconds=8, grace_seconds=30, reminders_seconds=[5])

        def reminder_link() -> str | None:
            # Other mail (a verification, say) may arrive too: look for the reminder's link.
            for mail in system.mail():
                if owner.email not in mail["To"]:
                    continue
                found = LINK.search(mail.get_body(("plain",)).get_content())
                if found:
                    return found.group(0)
            return None

        path = urlsplit(wait_for(reminder_link, timeout=60, what="the reminder mail")).path
        shown = requests.get(system.url(path), timeout=10)
        assert shown.status_code == 200
        assert 'method="post"' in shown.text
        assert owner.switch()["cycle"] == before["cycle"]
        confirmed = requests.post(system.url(path), data={"confirm": "yes"}, timeout=10)
        assert confirmed.status_code == 200, confirmed.text
        after = owner.switch()
        assert after["cycle"] == before["cycle"] + 1
        assert when(after["deadline"]) > when(before["deadline"])
        assert requests.post(system.url(path), data={"confirm": "yes"},
                             timeout=10).status_code == 410
    finally:
        system.supervisor.stop_all()
