"""The person end-to-end tests act as: a sender who signs up through the API, from an
address of their own, reads their mail in the SMTP sink, and drives their switch.

Each sender comes from an address of their own (`X-Forwarded-For`, which systems started
with `JICM_TRUSTED_PROXIES=1` believe), so that the per-client limits on sign-up and
log-in do not add up across the tests that share a system.
"""

from __future__ import annotations

import random
import re
import uuid
from email.message import EmailMessage

import requests

from tests.e2e.conftest import System
from tests.helpers import wait_for

PASSWORD = "correct horse battery staple"
POLICY_VERSION = "2024-04-29"
VERIFY_LINK = re.compile(r"https?://\S+?/verify\?token=([A-Za-z0-9_-]+)")
# Several suites share this 2-core machine: deadlines are generous, polls are quick.
PATIENCE = 60.0


def client_address() -> str:
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"


def text_of(mail: EmailMessage) -> str:
    return mail.get_body(("plain",)).get_content()


def mail_to(system: System, address: str) -> list[EmailMessage]:
    """The mail that reached `address` so far, oldest first (envelope recipient)."""
    return [mail for mail in system.mail()
            if address in (to.strip() for to in mail["X-Sink-Envelope-To"].split(","))]


class Sender:
    """A signed-up, logged-in sender; `verified=True` also confirms the address through
    the mailed link and waits until the default switch is armed."""

    def __init__(self, system: System, *, verified: bool = False,
                 user_agent: str = "jicm-e2e/1.0") -> None:
        self.system = system
        self.email = f"sender-{uuid.uuid4().hex[:12]}@example.org"
        self.client = {"X-Forwarded-For": client_address(), "User-Agent": user_agent}
        created = requests.post(system.url("/api/v1/accounts"), headers=self.client, timeout=10,
                                json={"email": self.email, "password": PASSWORD,
                                      "date_of_birth": "1990-01-01",
                                      "accept_policy_version": POLICY_VERSION})
        assert created.status_code == 201, created.text
        self.id = created.json()["id"]
        assert self.log_in().status_code == 201
        if verified:
            wait_for(self.default_switch, timeout=PATIENCE,
                     what="the default switch, from accounts' UserRegistered")
            self.verify()

    def log_in(self) -> requests.Response:
        answer = requests.post(self.system.url("/api/v1/sessions"), headers=self.client,
                               json={"email": self.email, "password": PASSWORD}, timeout=10)
        if answer.status_code == 201:
            self.headers = {**self.client, "Authorization": f"Bearer {answer.json()['token']}"}
        return answer

    def call(self, method: str, path: str, headers: dict | None = None,
             **kwargs) -> requests.Response:
        return requests.request(method, self.system.url(path), timeout=30,
                                headers={**self.headers, **(headers or {})}, **kwargs)

    # Mail ---------------------------------------------------------------------------------

    def mail(self, subject: str, timeout: float = PATIENCE) -> EmailMessage:
        """The first mail to this sender whose subject starts with `subject`."""
        def arrived():
            return next((m for m in mail_to(self.system, self.email)
                         if m["Subject"].startswith(subject)), None)
        return wait_for(arrived, timeout=timeout, interval=0.1,
                        what=f"a mail {subject!r} to {self.email}")

    def verify(self) -> None:
        """Confirm the address with the token of the verification mail; wait for arming."""
        found = VERIFY_LINK.search(text_of(self.mail("Confirm your email address")))
        assert found, "the verification mail carries its link"
        confirmed = requests.post(self.system.url("/api/v1/accounts/verify"),
                                  json={"token": found.group(1)}, timeout=10)
        assert confirmed.status_code == 200, confirmed.text
        wait_for(lambda: self.switch().get("state") == "armed", timeout=PATIENCE,
                 what="arming, from accounts' EmailVerified")

    # The switch ---------------------------------------------------------------------------

    def default_switch(self) -> str | None:
        """The id of the default switch, once the scheduler has made it."""
        return self.switch().get("id")

    def switch(self) -> dict:
        found = self.call("GET", "/api/v1/switches").json()["switches"]
        return found[0] if found else {}

    def configure(self, **settings) -> dict:
        answer = self.call("PUT", f"/api/v1/switches/{self.switch()['id']}", json=settings)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def check_in(self) -> requests.Response:
        return self.call("POST", "/api/v1/checkins", json={})
