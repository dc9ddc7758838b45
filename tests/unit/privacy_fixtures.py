"""Privacy's domain code over a real embedded store and a frozen clock, with fakes for the
other services (accounts' answers, the export parts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from services.privacy.consent import Consents
from services.privacy.exports import Exports, ExportSettings, PartAnswer
from services.privacy.notices import notice
from services.privacy.requests import Requests, RequestSettings
from services.privacy.saga import Saga
from services.privacy.storage import INDEXES, PrivacyRepository
from shared.clock import FrozenClock
from shared.events import parse_event
from shared.events.outbox import OUTBOX
from shared.storage.provider import open_store

NOW = datetime(2030, 3, 1, 12, 0, tzinfo=UTC)
ALL = ("accounts", "billing", "delivery", "privacy", "scheduler", "vault")
PASSWORD = "correct horse battery staple"


@dataclass
class FakeAccounts:
    """Accounts as privacy sees it: a password per user, closures and lookups recorded."""

    passwords: dict[str, str] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)  # user id -> email
    closed: list[str] = field(default_factory=list)
    down: bool = False

    def verify_password(self, user_id: str, password: str) -> bool:
        return self.passwords.get(user_id) == password

    def close_account(self, user_id: str) -> None:
        if self.down:
            raise RuntimeError("accounts is down")
        self.closed.append(user_id)

    def find_user(self, email_or_id: str) -> dict[str, str] | None:
        for user_id, email in self.users.items():
            if email_or_id in (user_id, email):
                return {"user_id": user_id, "email": email}
        return None


@dataclass
class FakeParts:
    """Every service's export part, or a problem per service."""

    parts: dict[str, dict] = field(default_factory=dict)
    problems: dict[str, PartAnswer] = field(default_factory=dict)
    asked: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)

    def export_user(self, user_id: str, services: tuple[str, ...]) -> dict[str, PartAnswer]:
        self.asked.append((user_id, services))
        return {name: self.problems.get(name) or PartAnswer(self.parts.get(name, {"of": name}))
                for name in services}


class PrivacyWorld:
    """One privacy store, a clock, and use cases built on them as the service builds them."""

    def __init__(self, tmp_path) -> None:
        self.db = open_store("privacy", INDEXES, data_dir=tmp_path)
        self.repo = PrivacyRepository(self.db)
        self.clock = FrozenClock(NOW)
        self.accounts = FakeAccounts()
        self.parts = FakeParts()
        self.notice = notice("2024-04-29")
        self.key = b"k" * 32

    def consents(self) -> Consents:
        return Consents(self.repo, self.notice, self.clock.now())

    def requests(self, services: tuple[str, ...] = ALL) -> Requests:
        settings = RequestSettings(subject_key=self.key, public_url="https://jic.example",
                                   ledger_retention=timedelta(days=730),
                                   erasing_services=services, export_services=services)
        return Requests(self.repo, self.clock.now(), settings, self.accounts)

    def exports(self, ttl: timedelta = timedelta(days=7)) -> Exports:
        settings = ExportSettings(key=b"e" * 32, public_url="https://jic.example", ttl=ttl,
                                  lease=timedelta(seconds=60),
                                  ledger_retention=timedelta(days=730))
        return Exports(self.repo, self.parts, settings, self.clock.now())

    def saga(self) -> Saga:
        return Saga(self.repo, self.clock.now(), closed_retention=timedelta(days=30),
                    ledger_retention=timedelta(days=730))

    def outbox(self, collection: str, doc_id: str) -> list[Any]:
        doc = self.db.collection(collection).get(doc_id) or {}
        return [parse_event(envelope) for envelope in doc.get(OUTBOX, [])]

    def close(self) -> None:
        self.db.close()
