"""Moving a running installation from the embedded SQLite stores to MongoDB and back loses
nothing: every service's every collection, exported with `jicm store export`, imported
onto the pymongo adapter (on mongomock), exported again and imported into fresh SQLite
files, comes back document for document, value for value. Imports are idempotent and
refuse an export that was cut short or is of another service."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mongomock
import pytest

from jicm.cli import main as jicm
from jicm.store import SERVICES, service_indexes
from shared.storage import Database, Index
from shared.storage.provider import open_store
from shared.storage.transfer import TransferError, every_document, export_store, import_store

NOW = datetime(2026, 11, 2, 9, 30, 15, 123000, tzinfo=UTC)
PER_COLLECTION = 7


def document(collection: str, n: int, indexes: list[Index]) -> dict:
    """A document with every kind of value the port stores, unique where an index says so."""
    doc = {
        "_id": f"{collection}-{n:04d}", "n": n, "big": 2**62 + n, "ratio": n / 3,
        "flag": n % 2 == 0, "nothing": None, "text": f"ünïcode ✓ {n}",
        "at": NOW - timedelta(minutes=n), "blob": bytes(range(n, n + 16)),
        "nested": {"deeper": {"list": [n, "two", {"three": NOW}], "empty": {}}},
        "outbox": [{"event_id": f"e-{n}", "type": "Something", "data": {"user_id": "u"}}],
    }
    for index in indexes:
        for path, _ in index.fields:
            if index.expire_after_seconds is not None:
                doc[path] = NOW + timedelta(days=365)  # not expired
            elif index.unique:
                doc[path] = f"{collection}-{path}-{n}"
    return doc


def populate(db: Database, indexes: dict[str, list[Index]]) -> None:
    for name, declared in indexes.items():
        for n in range(PER_COLLECTION):
            db.collection(name).insert(document(name, n, declared))


def contents(db: Database, indexes: dict[str, list[Index]]) -> dict[str, list[dict]]:
    return {name: list(every_document(db.collection(name))) for name in sorted(indexes)}


def exported(db: Database, service: str, indexes: dict) -> io.StringIO:
    out = io.StringIO()
    counts = export_store(db, service, sorted(indexes), out, NOW)
    assert counts == {name: PER_COLLECTION for name in indexes}
    out.seek(0)
    return out


@pytest.mark.parametrize("service", SERVICES)
def test_a_populated_sqlite_store_moves_onto_mongo_and_back_losing_nothing(service, tmp_path):
    indexes = service_indexes(service)
    sqlite = open_store(service, indexes, data_dir=tmp_path / "before")
    populate(sqlite, indexes)
    original = contents(sqlite, indexes)
    assert all(len(docs) == PER_COLLECTION for docs in original.values())

    mongo = open_store(service, indexes, data_dir=tmp_path, mongo_client=mongomock.MongoClient())
    report = import_store(mongo, service, exported(sqlite, service, indexes))
    assert report.inserted == {name: PER_COLLECTION for name in indexes}
    assert contents(mongo, indexes) == original

    back = open_store(service, indexes, data_dir=tmp_path / "after")
    import_store(back, service, exported(mongo, service, indexes))
    assert contents(back, indexes) == original


def test_an_interrupted_import_is_simply_run_again(tmp_path):
    indexes = service_indexes("scheduler")
    sqlite = open_store("scheduler", indexes, data_dir=tmp_path)
    populate(sqlite, indexes)
    mongo = open_store("scheduler", indexes, data_dir=tmp_path,
                       mongo_client=mongomock.MongoClient())
    lines = exported(sqlite, "scheduler", indexes).getvalue().splitlines()
    with pytest.raises(TransferError, match="cut short"):
        import_store(mongo, "scheduler", lines[: len(lines) // 2])
    again = import_store(mongo, "scheduler", lines)
    assert sum(again.unchanged.values()) + sum(again.inserted.values()) == \
        PER_COLLECTION * len(indexes)
    assert again.unchanged and not again.conflicts
    assert contents(mongo, indexes) == contents(sqlite, indexes)


def test_a_document_that_differs_is_a_conflict_left_as_it_is(tmp_path):
    indexes = service_indexes("accounts")
    source = open_store("accounts", indexes, data_dir=tmp_path / "a")
    populate(source, indexes)
    target = open_store("accounts", indexes, data_dir=tmp_path / "b")
    target.collection("users").insert({"_id": "users-0000", "n": "someone else"})
    report = import_store(target, "accounts", exported(source, "accounts", indexes))
    assert report.conflicts == [("users", "users-0000")]
    assert target.collection("users").get("users-0000")["n"] == "someone else"


def test_an_export_of_another_service_is_refused(tmp_path):
    indexes = service_indexes("vault")
    vault = open_store("vault", indexes, data_dir=tmp_path)
    populate(vault, indexes)
    with pytest.raises(TransferError, match="of vault, not accounts"):
        import_store(open_store("accounts", service_indexes("accounts"), data_dir=tmp_path),
                     "accounts", exported(vault, "vault", indexes))


def test_the_jicm_commands_move_a_store_between_data_directories(tmp_path, monkeypatch, capsys):
    indexes = service_indexes("delivery")
    populate(open_store("delivery", indexes, data_dir=tmp_path / "old"), indexes)
    dump = tmp_path / "delivery.jsonl"
    monkeypatch.setenv("JICM_ENV", "test")
    monkeypatch.delenv("MONGO_URI", raising=False)
    monkeypatch.setenv("JICM_DATA_DIR", str(tmp_path / "old"))
    assert jicm(["store", "export", "delivery", "--out", str(dump)]) == 0
    monkeypatch.setenv("JICM_DATA_DIR", str(tmp_path / "new"))
    assert jicm(["store", "import", "delivery", str(dump)]) == 0
    assert "imported 42 document(s)" in capsys.readouterr().out
    moved = open_store("delivery", indexes, data_dir=Path(tmp_path / "new"))
    old = open_store("delivery", indexes, data_dir=Path(tmp_path / "old"))
    assert contents(moved, indexes) == contents(old, indexes)
