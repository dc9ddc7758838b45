"""The embedded default: a service's collections in one SQLite file.

One connection per SqliteDatabase, shared by the service's threads under a lock. The file is
in WAL mode, so readers never wait for the writer, and several processes of one service may
share it: every write runs in a `BEGIN IMMEDIATE` transaction, which takes the file's write
lock before reading, so `update_one`'s read-modify-write is an atomic compare-and-set across
processes as well as threads. Under eventlet the sqlite3 calls block the hub; they are short,
and a busy file is waited for at most `busy_timeout` seconds before StorageError.

A commit is most of what a small write costs (SQLite appends every page it touched to the
WAL). `group_writes()` puts the writes of a block in one transaction, each in a savepoint
of its own, so a loop of independent compare-and-sets pays for one commit.
"""

# Statements here are f-strings only over table names and paths that `_rules` has checked
# against strict patterns; every value is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from shared.storage import _sql
from shared.storage._rules import (
    check_limit,
    check_name,
    expiry_filters,
    normalize_document,
    normalize_filter,
    normalize_sort,
    normalize_update,
    remember_expiries,
    upsert_seed,
    with_upsert_id,
)
from shared.storage._updates import apply_update
from shared.storage.port import (
    Document,
    DuplicateKeyError,
    Filter,
    Index,
    Sort,
    StorageError,
    Update,
)

# `doc -> path` in the unique indexes needs SQLite 3.38 (Python 3.11 images ship 3.40).
_MIN_SQLITE = (3, 38, 0)
WAL_CHECKPOINT_PAGES = 10_000  # of 4 KiB
WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024


class SqliteDatabase:
    """A service's store in the SQLite file at `path` (created with its directories)."""

    def __init__(self, path: Path, *, busy_timeout: float = 10.0) -> None:
        if sqlite3.sqlite_version_info < _MIN_SQLITE:
            raise StorageError(f"SQLite {sqlite3.sqlite_version} is too old: 3.38+ needed")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._grouping = False
        self._collections: dict[str, SqliteCollection] = {}
        self._expiries: dict[str, list[tuple[str, int]]] = {}
        with _translate_errors():
            # isolation_level=None: sqlite3 must not open transactions behind our back;
            # `timeout` is the busy timeout, which must be in force before switching to WAL.
            self._conn = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            # Copy the WAL back into the file every 40 MiB rather than SQLite's 4 MiB: a
            # checkpoint copies each page changed since the last one (and syncs), and the
            # same few pages (an index's, a busy document's) change in commit after commit;
            # measured here, a write costs a quarter less CPU. The WAL file is cut back to
            # at most 64 MiB after a checkpoint.
            self._conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            self._conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")

    def collection(self, name: str) -> SqliteCollection:
        """The collection `name`, its table created if need be."""
        with self._lock:
            if name not in self._collections:
                with self.write() as conn:
                    conn.execute(
                        f"CREATE TABLE IF NOT EXISTS {_sql.table(name)} "
                        "(id TEXT PRIMARY KEY, doc TEXT NOT NULL)"
                    )
                expiries = self._expiries.setdefault(name, [])
                self._collections[name] = SqliteCollection(self, name, expiries)
            return self._collections[name]

    def ensure_indexes(self, name: str, indexes: Sequence[Index]) -> None:
        """Create the collection's indexes if missing, all in one transaction."""
        self.collection(name)
        with self.write() as conn:
            for index in indexes:
                for statement in _sql.index_statements(name, index):
                    conn.execute(statement)
        remember_expiries(self._expiries.setdefault(name, []), indexes)

    def describe(self) -> str:
        """Where the data lives, for the start-up log."""
        return f"embedded SQLite at {self.path}"

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Rows of one read-only statement."""
        with self._lock, _translate_errors():
            return self._conn.execute(sql, params).fetchall()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the file's write lock from its first statement;
        inside `grouped()`, a savepoint of the group's transaction."""
        with self._lock, _translate_errors():
            if self._grouping:
                with self._savepoint():
                    yield self._conn
                return
            with self._transaction():
                yield self._conn

    @contextmanager
    def grouped(self) -> Iterator[None]:
        """One transaction for every write of the block (see `Collection.group_writes`)."""
        with self._lock, _translate_errors():
            if self._grouping:
                yield  # already inside a group: part of it
                return
            with self._transaction():
                self._grouping = True
                try:
                    yield
                finally:
                    self._grouping = False

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._conn.execute("COMMIT")
        except BaseException:
            # Also after a failed COMMIT: a transaction left open would make every
            # later BEGIN on this shared connection fail.
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _savepoint(self) -> Iterator[None]:
        # A write that fails inside a group undoes itself alone, as it would outside one.
        self._conn.execute("SAVEPOINT one_write")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK TO one_write")
            raise
        finally:
            self._conn.execute("RELEASE one_write")


@contextmanager
def _translate_errors() -> Iterator[None]:
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise DuplicateKeyError(str(exc)) from exc
    except sqlite3.Error as exc:
        raise StorageError(f"SQLite: {exc}") from exc


class SqliteCollection:
    """One collection: a table of JSON documents."""

    def __init__(self, db: SqliteDatabase, name: str, expiries: list[tuple[str, int]]):
        self._db = db
        self._table = _sql.table(check_name(name))
        self._expiries = expiries

    def insert(self, doc: Document) -> Document:
        """Store a new document; DuplicateKeyError if its `_id` or a unique key is taken."""
        doc = normalize_document(doc)
        with self._db.write() as conn:
            conn.execute(
                f"INSERT INTO {self._table} (id, doc) VALUES (?, ?)", (doc["_id"], _sql.encode(doc))
            )
        return doc

    def get(self, _id: str) -> Document | None:
        """The document with this `_id`, or None."""
        return self.find_one({"_id": _id})

    def group_writes(self) -> AbstractContextManager[None]:
        """Every write of the block, to any collection of this file, in one transaction."""
        return self._db.grouped()

    def find(
        self, filter: Filter, *, sort: Sort | None = None, limit: int | None = None
    ) -> list[Document]:
        """Matching documents in `sort` order, at most `limit`."""
        sql, params = self._select(filter, sort, limit)
        return [_sql.decode(_id, text) for _id, text in self._db.read(sql, params)]

    def find_one(self, filter: Filter, *, sort: Sort | None = None) -> Document | None:
        """The first matching document in `sort` order, or None."""
        found = self.find(filter, sort=sort, limit=1)
        return found[0] if found else None

    def count(self, filter: Filter) -> int:
        """How many documents match."""
        where, params = _sql.compile_where(normalize_filter(filter))
        return self._db.read(f"SELECT count(*) FROM {self._table} WHERE {where}", params)[0][0]

    def update_one(
        self, filter: Filter, update: Update, *, upsert: bool = False
    ) -> Document | None:
        """Atomic compare-and-set: update one match and return it after the update."""
        flt = normalize_filter(filter)
        upd = normalize_update(update)
        if upsert:
            upd = with_upsert_id(flt, upd)
        where, params = _sql.compile_where(flt)
        with self._db.write() as conn:
            row = conn.execute(
                f"SELECT id, doc FROM {self._table} WHERE {where} LIMIT 1", params
            ).fetchone()
            if row is not None:
                return self._rewrite(conn, row, upd)
            if not upsert:
                return None
            doc = apply_update(upsert_seed(flt), upd, inserting=True)
            conn.execute(
                f"INSERT INTO {self._table} (id, doc) VALUES (?, ?)", (doc["_id"], _sql.encode(doc))
            )
            return doc

    def update_many(self, filter: Filter, update: Update) -> int:
        """Update every match in one transaction; return how many changed."""
        flt = normalize_filter(filter)
        upd = normalize_update(update, allow_set_on_insert=False)
        where, params = _sql.compile_where(flt)
        changed = 0
        with self._db.write() as conn:
            rows = conn.execute(f"SELECT id, doc FROM {self._table} WHERE {where}", params)
            for row in rows.fetchall():
                before = row[1]
                changed += _sql.encode(self._rewrite(conn, row, upd)) != before
        return changed

    def _rewrite(self, conn: sqlite3.Connection, row: tuple[str, str], upd: dict) -> Document:
        after = apply_update(_sql.decode(*row), upd, inserting=False, in_place=True)
        text = _sql.encode(after)
        # Like MongoDB, leave a document alone when the update changes nothing in it.
        if text != row[1]:
            conn.execute(f"UPDATE {self._table} SET doc = ? WHERE id = ?", (text, row[0]))
        return after

    def delete_one(self, filter: Filter) -> bool:
        """Delete one match; True if there was one."""
        where, params = _sql.compile_where(normalize_filter(filter))
        sql = (
            f"DELETE FROM {self._table} WHERE rowid = "
            f"(SELECT rowid FROM {self._table} WHERE {where} LIMIT 1)"
        )
        with self._db.write() as conn:
            return conn.execute(sql, params).rowcount == 1

    def delete_many(self, filter: Filter) -> int:
        """Delete every match; return how many."""
        where, params = _sql.compile_where(normalize_filter(filter))
        with self._db.write() as conn:
            return conn.execute(f"DELETE FROM {self._table} WHERE {where}", params).rowcount

    def purge_expired(self, now: datetime) -> int:
        """Delete documents whose TTL-indexed datetime is older than `now` minus the TTL."""
        return sum(self.delete_many(flt) for flt in expiry_filters(now, self._expiries))

    def query_plan(self, filter: Filter, *, sort: Sort | None = None) -> list[str]:
        """SQLite's EXPLAIN QUERY PLAN for a find: to check that indexes are used."""
        sql, params = self._select(filter, sort, None)
        return [row[-1] for row in self._db.read(f"EXPLAIN QUERY PLAN {sql}", params)]

    def _select(self, filter: Filter, sort: Sort | None, limit: int | None) -> _sql.Sql:
        where, params = _sql.compile_where(normalize_filter(filter))
        order = _sql.compile_order(normalize_sort(sort))
        sql = f"SELECT id, doc FROM {self._table} WHERE {where}{order}"
        if check_limit(limit) is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return sql, params
