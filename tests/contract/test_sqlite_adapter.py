"""What only the embedded SQLite adapter promises: safety across processes, real indexes,
durability. The behaviour it shares with MongoDB is in test_storage_contract.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.storage import Index, StorageError, _sql, open_database
from shared.storage._rules import normalize_filter
from shared.storage.sqlite import SqliteDatabase

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2030, 1, 1, tzinfo=UTC)


def start_worker(*args: object) -> subprocess.Popen:
    command = [sys.executable, "-m", "tests.contract.sqlite_worker", *map(str, args)]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> str:
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    return out


@pytest.fixture
def db_file(tmp_path) -> Path:
    return tmp_path / "shared.sqlite3"


def test_two_processes_incrementing_one_document_end_with_the_exact_total(db_file):
    db = SqliteDatabase(db_file)
    db.collection("things").insert({"_id": "counter", "cas": 0, "inc": 0})

    workers = [start_worker("count", db_file, "counter", 4, 50) for _ in range(2)]
    for worker in workers:
        finish(worker)

    assert db.collection("things").get("counter") == {"_id": "counter", "cas": 400, "inc": 400}
    db.close()


def test_of_many_processes_racing_to_claim_a_document_exactly_one_wins(db_file):
    db = SqliteDatabase(db_file)
    doc_ids = [f"job{n}" for n in range(20)]
    for doc_id in doc_ids:
        db.collection("things").insert({"_id": doc_id, "state": "free"})

    start_at = time.time() + 1.0  # after every worker has started up
    workers = {
        f"w{n}": start_worker("claim", db_file, start_at, f"w{n}", *doc_ids) for n in range(6)
    }
    won = {me: json.loads(finish(worker)) for me, worker in workers.items()}

    winners = sorted(doc_id for ids in won.values() for doc_id in ids)
    assert winners == sorted(doc_ids)
    for me, ids in won.items():
        for doc_id in ids:
            assert db.collection("things").get(doc_id) == {
                "_id": doc_id,
                "state": "claimed",
                "by": me,
            }
    db.close()


def test_finds_on_indexed_fields_use_the_index(db_file):
    db = SqliteDatabase(db_file)
    db.ensure_indexes(
        "things",
        [
            Index.on("email", unique=True),
            Index.on("state", "due_at"),
            Index.on("owner.id"),
            Index.on("outbox_due_at"),
        ],
    )
    things = db.collection("things")

    plans = {
        "equality": things.query_plan({"email": "a@b.c"}),
        "nested": things.query_plan({"owner.id": "u1"}),
        "range": things.query_plan({"state": "due", "due_at": {"$lte": T0}}, sort=[("due_at", 1)]),
        "in": things.query_plan({"state": {"$in": ["due", "late"]}}),
        "oldest-due": things.query_plan(
            {"outbox_due_at": {"$lte": T0}}, sort=[("outbox_due_at", 1)]
        ),
    }

    for name, plan in plans.items():
        assert any("USING INDEX ix_things_" in step for step in plan), (name, plan)
        assert not any(step.startswith("SCAN") for step in plan), (name, plan)
    for name in ("range", "oldest-due"):  # the index also gives the order: no sort step
        assert not any("TEMP B-TREE" in step for step in plans[name]), plans[name]
    db.close()


def test_a_count_by_an_indexed_string_reads_the_index_and_not_the_documents(db_file):
    db = SqliteDatabase(db_file)
    db.ensure_indexes("things", [Index.on("state", "_id")])
    db.collection("things")
    where, params = _sql.compile_where(
        normalize_filter({"state": "armed", "_id": {"$gte": "4", "$lt": "8"}})
    )
    program = db.read(f'EXPLAIN SELECT count(*) FROM "things" WHERE {where}', params)  # noqa: S608 (compiled from a fixed filter)
    # No column of the row read, no JSON function run: the index entries alone answer it.
    assert not {step[1] for step in program} & {"Column", "Function"}, program
    db.close()


def test_equality_with_text_like_a_documents_json_still_checks_the_type(db_file):
    db = SqliteDatabase(db_file)
    db.ensure_indexes("things", [Index.on("v")])
    things = db.collection("things")
    for _id, value in (("document", {"x": 1}), ("text", '{"x":1}'), ("other", "x")):
        things.insert({"_id": _id, "v": value})
    assert [d["_id"] for d in things.find({"v": '{"x":1}'})] == ["text"]
    assert things.count({"v": {"$in": ['{"x":1}', "x"]}}) == 2
    db.close()


def test_an_id_lookup_uses_the_primary_key(db_file):
    db = SqliteDatabase(db_file)

    plan = db.collection("things").query_plan({"_id": "a"})
    assert any("PRIMARY KEY" in step or "autoindex" in step for step in plan), plan
    db.close()


def test_data_survives_closing_and_reopening_the_file(db_file):
    db = SqliteDatabase(db_file)
    db.ensure_indexes("things", [Index.on("email", unique=True)])
    db.collection("things").insert({"_id": "a", "email": "x", "at": T0, "blob": b"\x01"})
    db.collection("things").update_one({"_id": "a"}, {"$push": {"log": "saved"}})
    db.close()

    reopened = SqliteDatabase(db_file)
    assert reopened.collection("things").get("a") == {
        "_id": "a",
        "email": "x",
        "at": T0,
        "blob": b"\x01",
        "log": ["saved"],
    }
    with pytest.raises(StorageError):  # the unique index is in the file too
        reopened.collection("things").insert({"_id": "b", "email": "x"})
    reopened.close()


def test_the_file_is_in_wal_mode_checkpointed_every_forty_mebibytes(db_file):
    db = SqliteDatabase(db_file)

    assert db.read("PRAGMA journal_mode") == [("wal",)]
    assert db.read("PRAGMA wal_autocheckpoint") == [(10_000,)]
    assert db.read("PRAGMA journal_size_limit") == [(64 * 1024 * 1024,)]
    db.close()


def test_a_closed_database_raises_storage_error(db_file):
    db = SqliteDatabase(db_file)
    things = db.collection("things")
    db.close()

    with pytest.raises(StorageError):
        things.get("a")


def test_open_database_without_a_mongo_uri_keeps_a_file_per_service(tmp_path):
    data_dir = tmp_path / "var" / "data"

    db = open_database("accounts", mongo_uri=None, data_dir=data_dir)
    db.collection("users").insert({"_id": "u1"})

    assert (data_dir / "accounts.sqlite3").is_file()
    assert db.describe() == f"embedded SQLite at {data_dir / 'accounts.sqlite3'}"
    db.close()


def test_a_group_of_writes_is_one_transaction_seen_whole_or_not_at_all(db_file):
    db = open_database("s", mongo_uri=None, data_dir=db_file.parent)
    reader = SqliteDatabase(db.path)
    things, seen = db.collection("things"), reader.collection("things")
    with things.group_writes():
        things.insert({"_id": "a"})
        things.insert({"_id": "b"})
        assert seen.count({}) == 0, "another connection sees nothing before the group ends"
    assert seen.count({}) == 2
    with pytest.raises(RuntimeError), things.group_writes():
        things.insert({"_id": "c"})
        raise RuntimeError("the process died here")
    assert things.get("c") is None, "nothing of a group that did not end is kept"
    things.insert({"_id": "d"})
    assert seen.count({}) == 3, "the connection is usable after"
    reader.close()
    db.close()
