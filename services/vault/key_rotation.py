"""Rotating the vault's key-encryption key: re-wrap every data key with the current KEK
(operators run it as `jicm keys rotate`, and `jicm keys check` counts what is left).

Run it after the new KEK became current in the vault's configuration (the old one kept
in `JICM_VAULT_OLD_KEKS` or the key file), while the vault keeps running: each data key
is re-wrapped by its own compare-and-set (`{_id, kek_id: old}`), so a key changed or
deleted meanwhile is simply left alone, and a key created meanwhile is already wrapped
by the current KEK. Interrupted, it loses nothing: run it again and it carries on with
the keys still wrapped by an older KEK. Messages are never re-encrypted: only the data
keys, which are few and small.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from services.vault.crypto import DecryptionFailed
from services.vault.keys import Keyring, UnknownKek
from shared.storage import Collection

BATCH = 200


@dataclass
class RotationReport:
    """What a rotation run did."""

    rewrapped: int = 0
    changed_meanwhile: int = 0
    unknown_keks: Counter = field(default_factory=Counter)
    unreadable: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.unknown_keks and not self.unreadable


def keys_to_rotate(collection: Collection, keyring: Keyring) -> int:
    """How many data keys are not yet wrapped by the current KEK."""
    return collection.count({"kek_id": {"$ne": keyring.current_id}})


def rotate(
    collection: Collection,
    keyring: Keyring,
    *,
    batch: int = BATCH,
    on_key: Callable[[], None] = lambda: None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> RotationReport:
    """Re-wrap every data key still wrapped by an older KEK; `on_key` ticks per key seen."""
    report = RotationReport()
    after = ""
    while True:
        # Paging by _id keeps a key that cannot be re-wrapped from being met again.
        docs = collection.find(
            {"kek_id": {"$ne": keyring.current_id}, "_id": {"$gt": after}},
            sort=[("_id", 1)], limit=batch,
        )
        if not docs:
            return report
        for doc in docs:
            after = doc["_id"]
            _rewrap(collection, keyring, doc, report, now())
            on_key()


def _rewrap(
    collection: Collection, keyring: Keyring, doc: dict, report: RotationReport, now: datetime
) -> None:
    user_id, old_kek = doc["_id"], doc["kek_id"]
    try:
        data_key = keyring.unwrap(user_id, doc["wrapped"], old_kek)
    except UnknownKek:
        report.unknown_keks[old_kek] += 1
        return
    except DecryptionFailed:
        report.unreadable.append(user_id)
        return
    wrapped, kek_id = keyring.wrap(user_id, data_key)
    updated = collection.update_one(
        {"_id": user_id, "kek_id": old_kek},
        {"$set": {"wrapped": wrapped, "kek_id": kek_id, "rewrapped_at": now}},
    )
    if updated is None:
        report.changed_meanwhile += 1  # erased, or re-wrapped by another run
    else:
        report.rewrapped += 1


def describe_rotation(report: RotationReport, keyring: Keyring) -> list[str]:
    """The lines an operator reads at the end of a run."""
    lines = [f"re-wrapped {report.rewrapped} data keys with KEK {keyring.current_id!r}"]
    if report.changed_meanwhile:
        lines.append(f"{report.changed_meanwhile} changed meanwhile (erased, or done by "
                     "another run) and were left alone")
    for kek_id, count in sorted(report.unknown_keks.items()):
        lines.append(f"{count} data keys are wrapped by KEK {kek_id!r}, which is not "
                     "configured: add it to JICM_VAULT_OLD_KEKS (or the key file) and run again")
    if report.unreadable:
        users = ", ".join(report.unreadable[:20])
        lines.append(f"{len(report.unreadable)} data keys do not unwrap with their KEK "
                     f"(damaged, or a wrong key under that id): users {users}")
    return lines
