"""Delivery's pieces for unit tests, wired as its workers wire them: the real embedded
store, a frozen clock, and real SMTP sinks on loopback started per test with their faults.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.delivery.context_seal import PURPOSE as SEAL_PURPOSE
from services.delivery.context_seal import ContextSeal
from services.delivery.deliveries import Deliveries
from services.delivery.pipeline import Pipeline
from services.delivery.schemas import MailRequest, StatusRequest
from services.delivery.smtp import SmtpSession, SmtpTransport
from services.delivery.storage import INDEXES, DeliveryRepository
from services.delivery.unsubscribe import PURPOSE as UNSUBSCRIBE_PURPOSE
from shared.clock import FrozenClock
from shared.config import load_settings
from shared.storage.provider import open_store
from tests.sink import Sink, start_sink

START = datetime(2030, 5, 1, 9, 0, tzinfo=UTC)
PUBLIC = "https://jic.example"
BASE_RETRY = 60


@pytest.fixture
def db(tmp_path):
    database = open_store("delivery", INDEXES, data_dir=tmp_path / "data")
    yield database
    database.close()


@pytest.fixture
def repo(db):
    return DeliveryRepository(db)


@pytest.fixture
def clock():
    return FrozenClock(START)


@pytest.fixture
def sinks(tmp_path):
    started: list[Sink] = []

    def start(*options: str) -> Sink:
        sink = start_sink(tmp_path / f"sink{len(started)}", *options)
        started.append(sink)
        return sink

    yield start
    for sink in started:
        sink.stop()


class Mailer:
    """The pieces of the delivery service, wired as its workers wire them."""

    def __init__(self, repo, clock, tmp_path: Path, port: int, **env: str):
        self.repo = repo
        self.clock = clock
        self.settings = load_settings({
            "JICM_ENV": "test", "JICM_DATA_DIR": str(tmp_path / "data"),
            "JICM_PUBLIC_URL": PUBLIC, "JICM_MAIL_FROM": "Just in Case <no-reply@jic.example>",
            "SMTP_PORT": str(port), "SMTP_TIMEOUT": "5", "JICM_DELIVERY_LEASE": "30",
            "JICM_DELIVERY_RETRY_BASE": str(BASE_RETRY), **env,
        })
        self.seal = ContextSeal(self.settings.derived_key(SEAL_PURPOSE))

    def deliveries(self) -> Deliveries:
        return Deliveries(self.repo, self.seal, self.clock.now(), public_url=PUBLIC,
                          unsubscribe_key=self.settings.derived_key(UNSUBSCRIBE_PURPOSE))

    def pipeline(self, fetch=None) -> Pipeline:
        transport = SmtpTransport.from_settings(self.settings)
        if fetch is None:
            return Pipeline(self.repo, self.settings, self.seal, self.clock,
                            lambda: SmtpSession(transport))
        return Pipeline(self.repo, self.settings, self.seal, self.clock,
                        lambda: SmtpSession(transport), fetch=fetch)

    def request(self, to="bob@example.org", kind="verification", reference="ref-1",
                context=None, **extra):
        context = context or {"link": f"{PUBLIC}/verify?token=secret-token",
                              "expires_at": "soon"}
        return self.deliveries().request(
            MailRequest(kind=kind, reference=reference, to=to, context=context, **extra))

    def status(self, kind: str, *references: str) -> dict:
        return self.deliveries().status(StatusRequest(kind=kind, references=list(references)))


@pytest.fixture
def mailer(repo, clock, tmp_path, sinks):
    def make(*sink_options: str, port: int | None = None, **env: str) -> tuple[Mailer, Sink]:
        sink = sinks(*sink_options)
        return Mailer(repo, clock, tmp_path, port or sink.port, **env), sink

    return make


