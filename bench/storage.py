"""`storage`: the storage port's adapters, in process, on a throw-away directory.

The same operations run against the embedded SQLite adapter (the default of every
service) and against the pymongo adapter on mongomock. mongomock is an in-memory fake
that scans every document for every query and ignores indexes: its figures show the
cost of the adapter's code path, not anything MongoDB would do.

Each document carries every queried value twice, once in an indexed field and once in a
plain one, so the same query on both shows what the declared indexes buy: on SQLite an
indexed equality is a B-tree search, the unindexed one a scan of every row that parses
each row's JSON.
"""

from __future__ import annotations

import random
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mongomock

from bench.measure import measure
from bench.report import BenchResult
from shared.storage import Collection, Database, Index, open_database

COLLECTION = "docs"
INDEXES = [Index.on("indexed_key"), Index.on("indexed_seq")]
RANGE_WIDTH = 500  # documents a range query matches before its limit
RANGE_LIMIT = 10
PAYLOAD = "x" * 200  # about the size of a user document's other fields
SEED = 20240429


@dataclass(frozen=True)
class Sizes:
    """How many documents, and how many of each operation per backend."""

    documents: int
    sqlite_ops: int
    sqlite_scans: int  # unindexed queries: each reads every row, so fewer of them
    mongomock_ops: int


FULL = Sizes(documents=10_000, sqlite_ops=2_000, sqlite_scans=200, mongomock_ops=100)
QUICK = Sizes(documents=1_000, sqlite_ops=200, sqlite_scans=50, mongomock_ops=20)


def run(result: BenchResult) -> None:
    """Measure both adapters at the configured size, adding each case to `result`."""
    sizes = QUICK if result.quick else FULL
    result.parameters = vars(sizes) | _shape()
    result.notes += [
        "One thread, one process: every write is its own SQLite transaction (WAL, "
        "synchronous=NORMAL), as in a service.",
        "update_one CAS: filter on _id and the version last seen, $inc the version.",
        "mongomock is an in-memory fake of MongoDB used by the contract tests; its "
        "figures are not MongoDB's and say nothing about a real server.",
    ]
    for backend, ops, scans in (
        ("sqlite", sizes.sqlite_ops, sizes.sqlite_scans),
        ("mongomock", sizes.mongomock_ops, sizes.mongomock_ops),
    ):
        print(f"storage: {backend}", file=sys.stderr, flush=True)
        with _open(backend) as db:
            _bench_backend(result, backend, db, sizes.documents, ops, scans)


def _shape() -> dict[str, Any]:
    return {
        "indexes": [list(index.fields) for index in INDEXES],
        "range_width": RANGE_WIDTH,
        "range_limit": RANGE_LIMIT,
        "payload_bytes": len(PAYLOAD),
    }


@contextmanager
def _open(backend: str) -> Iterator[Database]:
    with tempfile.TemporaryDirectory(prefix="jicm-bench-storage-") as tmp:
        client = mongomock.MongoClient(tz_aware=True) if backend == "mongomock" else None
        db = open_database("bench", mongo_uri=None, data_dir=Path(tmp), mongo_client=client)
        try:
            db.ensure_indexes(COLLECTION, INDEXES)
            yield db
        finally:
            db.close()


def _document(i: int) -> dict[str, Any]:
    key = f"key-{i:08d}"
    return {
        "_id": f"doc-{i:08d}",
        "indexed_key": key,
        "plain_key": key,  # the same value, in a field no index covers
        "indexed_seq": i,
        "plain_seq": i,
        "version": 0,
        "payload": PAYLOAD,
    }


def _bench_backend(
    result: BenchResult, backend: str, db: Database, documents: int, ops: int, scans: int
) -> None:
    docs = db.collection(COLLECTION)
    label = "mongomock (not MongoDB)" if backend == "mongomock" else "sqlite"
    rng = random.Random(SEED)

    def case(what: str, operation: Callable[[Any], object], items: list[Any]) -> None:
        done = measure(f"{label}: {what}", lambda _: operation, items)
        done.extra["backend"] = backend
        done.extra["documents"] = documents
        result.add(done)

    case("insert (2 indexes)", docs.insert, [_document(i) for i in range(documents)])
    ids = [f"doc-{rng.randrange(documents):08d}" for _ in range(ops)]
    case("get by _id", docs.get, ids)
    keys = [f"key-{rng.randrange(documents):08d}" for _ in range(ops)]
    case("find equality, indexed", lambda k: docs.find({"indexed_key": k}), keys)
    starts = [rng.randrange(max(documents - RANGE_WIDTH, 1)) for _ in range(ops)]
    case("find range+sort+limit, indexed", _range_query(docs, "indexed_seq"), starts)
    case("update_one CAS $inc", _compare_and_set(docs), ids)
    case("find equality, UNindexed", lambda k: docs.find({"plain_key": k}), keys[:scans])
    case("find range+sort+limit, UNindexed", _range_query(docs, "plain_seq"), starts[:scans])
    if backend == "sqlite":
        result.extra["sqlite_query_plans"] = _query_plans(docs)


def _range_query(docs: Collection, field: str) -> Callable[[int], object]:
    """The newest few in a window: what a scheduler asks of its due-date index."""

    def query(start: int) -> object:
        window = {"$gte": start, "$lt": start + RANGE_WIDTH}
        return docs.find({field: window}, sort=[(field, -1)], limit=RANGE_LIMIT)

    return query


def _compare_and_set(docs: Collection) -> Callable[[str], object]:
    """update_one guarded by the version last seen: the claim every service relies on."""
    versions: dict[str, int] = {}

    def claim(_id: str) -> object:
        seen = versions.get(_id, 0)
        after = docs.update_one({"_id": _id, "version": seen}, {"$inc": {"version": 1}})
        if after is None:
            raise RuntimeError("compare-and-set missed")  # counted as an error, never hidden
        versions[_id] = after["version"]
        return after

    return claim


def _query_plans(docs: Collection) -> dict[str, list[str]]:
    """SQLite's own account of each query: index search or full scan."""
    plan = getattr(docs, "query_plan", None)
    if plan is None:
        return {}
    window = {"$gte": 0, "$lt": RANGE_WIDTH}
    return {
        "find equality, indexed": plan({"indexed_key": "key-00000000"}),
        "find equality, UNindexed": plan({"plain_key": "key-00000000"}),
        "find range+sort, indexed": plan({"indexed_seq": window}, sort=[("indexed_seq", -1)]),
        "find range+sort, UNindexed": plan({"plain_seq": window}, sort=[("plain_seq", -1)]),
    }
