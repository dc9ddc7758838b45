"""What the end-to-end switch and release tests share: `make run`'s processes with
seconds-long settings, and an owner who signs up, verifies the address through the
verification mail that really arrives in the sink, and drives the switch API.

No stand-in anywhere: accounts mails the link (through delivery), its confirmation
publishes `EmailVerified`, the scheduler arms the switch, and a switch fires only once
delivery says its overdue notice left.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from email.message import EmailMessage

import requests

from tests.e2e.conftest import System
from tests.helpers import wait_for

PASSWORD = "correct horse battery staple"
# Switches that fire within seconds; mail that goes out within a second, and a failed
# attempt retried a second later rather than a minute.
SECONDS_LONG = {"JICM_MIN_INTERVAL": "1", "JICM_SCHEDULER_TICK": "0.2",
                "JICM_SCHEDULER_RECHECK": "1", "JICM_DELIVERY_TICK": "0.2",
                "JICM_DELIVERY_RETRY_BASE": "1", "JICM_DELIVERY_RETRY_CAP": "2"}
VERIFY_LINK = re.compile(r"https?://\S+?/verify\?token=([A-Za-z0-9_-]+)")
# Several suites share this 2-core machine: deadlines are generous, polls are quick.
PATIENCE = 60.0


def text_of(mail: EmailMessage) -> str:
    return mail.get_body(("plain",)).get_content()


def mail_to(system: System, address: str) -> list[EmailMessage]:
    """The mail that reached `address` so far, oldest first (envelope recipient)."""
    return [mail for mail in system.mail()
            if address in (to.strip() for to in mail["X-Sink-Envelope-To"].split(","))]


class Owner:
    """A signed-up owner who verified the address through the mailed link."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.email = f"owner-{uuid.uuid4().hex[:10]}@example.org"
        created = requests.post(system.url("/api/v1/accounts"), timeout=10, json={
            "email": self.email, "password": PASSWORD, "date_of_birth": "1990-01-01",
            "accept_policy_version": "2024-04-29"})
        assert created.status_code == 201, created.text
        self.user_id = created.json()["id"]
        token = requests.post(system.url("/api/v1/sessions"), timeout=10, json={
            "email": self.email, "password": PASSWORD}).json()["token"]
        self.auth = {"Authorization": f"Bearer {token}"}
        wait_for(lambda: self.switch().get("state") == "unarmed", timeout=PATIENCE,
                 what="the default switch, from accounts' UserRegistered")
        self.verify_address()
        wait_for(lambda: self.switch()["state"] == "armed", timeout=PATIENCE,
                 what="arming, from accounts' EmailVerified")

    def verify_address(self) -> None:
        """Confirm the address with the token of the verification mail."""
        token = wait_for(self._verification_token, timeout=PATIENCE, interval=0.1,
                         what=f"the verification mail to {self.email}")
        confirmed = requests.post(self.system.url("/api/v1/accounts/verify"),
                                  json={"token": token}, timeout=10)
        assert confirmed.status_code == 200, confirmed.text

    def _verification_token(self) -> str | None:
        for mail in mail_to(self.system, self.email):
            found = VERIFY_LINK.search(text_of(mail))
            if found:
                return found.group(1)
        return None

    def switch(self) -> dict:
        found = requests.get(self.system.url("/api/v1/switches"), headers=self.auth,
                             timeout=10).json()["switches"]
        return found[0] if found else {}

    def configure(self, **settings) -> dict:
        answer = requests.put(self.system.url(f"/api/v1/switches/{self.switch()['id']}"),
                              headers=self.auth, json=settings, timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def check_in(self) -> requests.Response:
        return requests.post(self.system.url("/api/v1/checkins"), headers=self.auth, json={},
                             timeout=10)


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)
