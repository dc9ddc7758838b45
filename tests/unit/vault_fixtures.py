"""Shared set-up of the vault's unit tests: a real embedded store, a keyring, a frozen
clock, a switch directory that answers like the scheduler would, a publisher that keeps
what it was given."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from services.vault.keys import DataKeyCache, DataKeys, Kek, Keyring
from services.vault.messages import Messages
from services.vault.release import Release
from services.vault.schemas import NewMessage
from services.vault.storage import INDEXES, VaultRepository
from shared.clock import FrozenClock
from shared.entitlements import limits_for
from shared.errors import Unavailable
from shared.events.schemas import PlanChanged
from shared.storage.provider import open_store

START = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)


def default_switch(user_id: str) -> str:
    return f"default-{user_id}"


class Switches:
    """The scheduler's answers: a default switch per user, plus `extra-<user>-*` ones,
    armed unless the test fired them (`fired[switch_id] = "fired"`)."""

    def __init__(self) -> None:
        self.asked: list[tuple] = []
        self.fired: dict[str, str] = {}

    def default_switch_id(self, user_id: str) -> str:
        self.asked.append(("default_switch_id", user_id))
        return default_switch(user_id)

    def owns_switch(self, user_id: str, switch_id: str) -> bool:
        self.asked.append(("owns_switch", user_id, switch_id))
        return self._exists(user_id, switch_id) and switch_id not in self.fired

    def switch_state(self, user_id: str, switch_id: str) -> str | None:
        self.asked.append(("switch_state", user_id, switch_id))
        if not self._exists(user_id, switch_id):
            return None
        return self.fired.get(switch_id, "armed")

    @staticmethod
    def _exists(user_id: str, switch_id: str) -> bool:
        return switch_id == default_switch(user_id) or switch_id.startswith(f"extra-{user_id}-")


class Scheduler:
    """The scheduler's `mark_released`: records what it was told, or is down, or refuses."""

    def __init__(self) -> None:
        self.marked: list[tuple[str, int]] = []
        self.questions = 0
        self.down = False
        self.refuse = False

    def mark_released(self, releases: list[tuple[str, int]]) -> dict[str, str | None]:
        self.questions += 1
        if self.down:
            raise Unavailable("the scheduler is unavailable", code="scheduler_unavailable")
        if self.refuse:
            return {switch_id: "not_fired: this switch did not fire in that cycle"
                    for switch_id, _ in releases}
        self.marked.extend(releases)
        return {switch_id: None for switch_id, _ in releases}


class Published:
    """A publisher that keeps every envelope; `fail` makes the broker confirm none of the
    next that many envelopes."""

    def __init__(self) -> None:
        self.envelopes: list[dict] = []
        self.fail = 0

    def publish_all(self, envelopes: list[dict]) -> list[bool]:
        confirmed = []
        for envelope in envelopes:
            if self.fail:
                self.fail -= 1
                confirmed.append(False)
                continue
            self.envelopes.append(envelope)
            confirmed.append(True)
        return confirmed


class Vault:
    """The vault's domain on a real store, as a test drives it."""

    def __init__(self, data_dir) -> None:
        self.db = open_store("vault", INDEXES, data_dir=data_dir)
        self.repo = VaultRepository(self.db)
        self.keyring = Keyring(Kek("1", os.urandom(32)))
        self.cache = DataKeyCache()
        self.clock = FrozenClock(START)
        self.switches = Switches()
        # No billing to ask: the plan the vault's copy holds, else the free plan.
        self.billing = None
        self.published = Published()
        self.scheduler = Scheduler()

    @property
    def keys(self) -> DataKeys:
        return DataKeys(self.repo.data_keys, self.keyring, self.cache)

    def messages(self) -> Messages:
        return Messages(self.repo, self.keys, self.switches, self.limits_of, self.clock.now())

    def limits_of(self, user_id: str):
        return limits_for(user_id, self.repo.entitlements, self.billing)

    def plan(self, user_id: str, revision: int, plan: str = "premium_monthly",
             status: str = "active", **entitlements: int) -> bool:
        """Billing's PlanChanged for the user, as the vault's consumer records it."""
        limits = {"switches": 1, "messages_per_switch": 3, "recipients_per_message": 3,
                  "body_bytes": 10_240, **entitlements}
        return self.repo.entitlements.record(PlanChanged(
            user_id=user_id, plan=plan, status=status, entitlements=limits, revision=revision))

    def release(self) -> Release:
        return Release(self.repo, self.keys, self.clock.now())

    def write(self, user_id: str = "ada", **fields) -> str:
        draft = {"subject": "For the family", "body": "The code of the safe is 4921.",
                 "recipients": [{"name": "Grace", "email": "grace@example.org"}], **fields}
        created = self.messages().create(user_id, f"{user_id}@example.org",
                                         NewMessage.model_validate(draft))
        return created.id

    def close(self) -> None:
        self.db.close()
