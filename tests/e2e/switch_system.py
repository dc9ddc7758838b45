"""What the end-to-end switch tests share: `make run`'s parts (plus, until the real
delivery service is merged, a stand-in delivery), and an owner driving the API.

Accounts does not announce verified addresses yet (that arrives with delivery, issue 3),
so `Owner` publishes `EmailVerified` to the broker itself.
"""

from __future__ import annotations

import json
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import requests
from kombu import Connection

from deploy.local.supervisor import ProcessSpec, Supervisor, default_specs
from shared.events import new_event
from shared.events.topology import EVENTS_EXCHANGE_NAME
from tests.e2e.conftest import System
from tests.helpers import wait_for

PASSWORD = "correct horse battery staple"
SECONDS_LONG = {"JICM_MIN_INTERVAL": "1", "JICM_SCHEDULER_TICK": "0.2",
                "JICM_SCHEDULER_RECHECK": "1"}


def start(tmp: Path, environ: dict[str, str], *, standin_delivery: bool) -> System:
    """`make run`'s parts (plus the stand-in delivery when asked), each started and ready."""
    specs = default_specs(environ)
    if standin_delivery:
        standin = ProcessSpec(name="delivery-standin",
                              argv=[sys.executable, "-m", "tests.e2e.standin_delivery"],
                              env_overrides=specs[1].env_overrides)
        specs.insert(-1, standin)
    supervisor = Supervisor(specs, env=environ, log_dir=tmp / "logs")
    for spec in specs:
        supervisor.start(spec.name)
    for spec in specs:
        supervisor.wait_ready(spec.name)
    return System(supervisor=supervisor, base_url=f"http://{environ['JICM_GATEWAY_BIND']}",
                  maildir=Path(environ["JICM_MAILDIR"]), data_dir=Path(environ["JICM_DATA_DIR"]),
                  environ=environ)


class Owner:
    """A signed-up, verified owner driving the API."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.email = f"owner-{uuid.uuid4().hex[:10]}@example.org"
        account = requests.post(system.url("/api/v1/accounts"), timeout=10, json={
            "email": self.email, "password": PASSWORD, "date_of_birth": "1990-01-01",
            "accept_policy_version": "2024-04-29"}).json()
        self.user_id = account["id"]
        token = requests.post(system.url("/api/v1/sessions"), timeout=10, json={
            "email": self.email, "password": PASSWORD}).json()["token"]
        self.auth = {"Authorization": f"Bearer {token}"}
        wait_for(lambda: self.switch().get("state") == "unarmed", timeout=20,
                 what="the default switch, from accounts' UserRegistered")
        self.verify_address()
        wait_for(lambda: self.switch()["state"] == "armed", timeout=20, what="arming")

    def verify_address(self) -> None:
        event = new_event("EmailVerified", {"user_id": self.user_id, "email": self.email},
                          producer="test", now=datetime.now(UTC))
        with Connection(self.system.environ["AMQP_URI"]) as conn:
            conn.Producer().publish(json.dumps(event).encode(), exchange=EVENTS_EXCHANGE_NAME,
                                    routing_key="EmailVerified", delivery_mode=2,
                                    content_type="application/json", content_encoding="utf-8")

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
