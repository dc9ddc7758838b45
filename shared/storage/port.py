"""The storage port: what every repository may ask of a document store, and nothing more.

Two adapters implement it, MongoDB (`mongo.py`) and embedded SQLite (`sqlite.py`), and the
contract tests in `tests/contract/` hold them to the same behaviour. The port is deliberately
narrow; whatever it does not list is not supported, and asking for it raises `StorageError`
on both backends rather than working on one and not the other.

Documents are dicts with a string `_id`. Values may be str, int (64-bit), finite float, bool,
None, timezone-aware datetime (kept to the millisecond, read back as UTC), bytes, lists and
nested dicts whose keys neither start with `$` nor contain `.`.

Filters are an AND of `path: condition`, a path being a field name or a dotted path into
nested dicts. A condition is a plain value (equality; `None` matches null or missing) or a
dict of operators: `$eq $ne $gt $gte $lt $lte $in $nin $exists`. Ranges compare values of the
same type only (numbers with numbers, strings with strings, datetimes with datetimes), as
MongoDB does; a boolean never equals a number. Not supported: `$or`/`$and`, regular
expressions, equality on whole embedded documents or arrays, and matching array elements
(a filter on a field that holds an array is unspecified: do not write one). A path never
indexes into an array: `a.0` names the key "0" of the embedded document `a`.

Updates use `$set $unset $inc $push $pull $setOnInsert`; one update may not touch the same
path (or a path and its parent) twice. Sorting is by one or more fields; missing and null
sort first ascending. Ties come back in an unspecified order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

Document = dict[str, Any]
Filter = Mapping[str, Any]
Update = Mapping[str, Mapping[str, Any]]
Sort = Sequence[tuple[str, int]]


class StorageError(Exception):
    """The store refused or failed an operation (bad query, type clash, unreachable...)."""


class DuplicateKeyError(StorageError):
    """A write would give two documents the same `_id` or the same unique-index key."""


@dataclass(frozen=True)
class Index:
    """An index a collection needs: fields in order, each ascending (1) or descending (-1).

    A unique index ignores documents that lack any of its fields (a field present with the
    value None still counts, as in MongoDB). `expire_after_seconds` makes it a TTL index on
    its single datetime field: see `Collection.purge_expired`.
    """

    fields: tuple[tuple[str, int], ...]
    unique: bool = False
    expire_after_seconds: int | None = None

    def __post_init__(self) -> None:
        if not self.fields:
            raise StorageError("an index needs at least one field")
        if any(type(d) is not int or d not in (1, -1) for _, d in self.fields):
            raise StorageError("index directions are 1 or -1")
        if self.expire_after_seconds is not None:
            if len(self.fields) != 1:
                raise StorageError("an expiring (TTL) index has exactly one field")
            if self.expire_after_seconds < 0:
                raise StorageError("expire_after_seconds cannot be negative")

    @classmethod
    def on(
        cls, *fields: str, unique: bool = False, expire_after_seconds: int | None = None
    ) -> Index:
        """Build an index from field names, a leading `-` meaning descending: `on("a", "-b")`."""
        pairs = tuple((f[1:], -1) if f.startswith("-") else (f, 1) for f in fields)
        return cls(pairs, unique=unique, expire_after_seconds=expire_after_seconds)


class Collection(Protocol):
    """A set of documents of one kind. Every returned document is a fresh copy."""

    def insert(self, doc: Document) -> Document:
        """Store a new document (it must carry `_id`) and return it as stored.

        Raises DuplicateKeyError when the `_id` or a unique key is already taken.
        """
        ...

    def get(self, _id: str) -> Document | None:
        """The document with this `_id`, or None."""
        ...

    def find(
        self, filter: Filter, *, sort: Sort | None = None, limit: int | None = None
    ) -> list[Document]:
        """Documents matching `filter`, in `sort` order, at most `limit` of them."""
        ...

    def find_one(self, filter: Filter, *, sort: Sort | None = None) -> Document | None:
        """The first document matching `filter` in `sort` order, or None."""
        ...

    def count(self, filter: Filter) -> int:
        """How many documents match `filter`."""
        ...

    def update_one(
        self, filter: Filter, update: Update, *, upsert: bool = False
    ) -> Document | None:
        """Atomically update one document matching `filter`; return it as it is afterwards.

        This is the compare-and-set every claim in the system relies on: the match and the
        change happen in one step, so of several racing callers with the same filter only
        one sees the document. Returns None when nothing matched. With `upsert`, a miss
        inserts a document built from the filter's equality conditions (a new uuid4 `_id`
        unless the filter names one), plus `$setOnInsert`, plus the update.
        Raises DuplicateKeyError on a unique-key clash (also when an upsert's `_id` exists
        but the rest of the filter did not match it).
        """
        ...

    def update_many(self, filter: Filter, update: Update) -> int:
        """Update every matching document in one step; return how many actually changed."""
        ...

    def delete_one(self, filter: Filter) -> bool:
        """Delete one matching document; say whether there was one."""
        ...

    def delete_many(self, filter: Filter) -> int:
        """Delete every matching document; return how many."""
        ...

    def group_writes(self) -> AbstractContextManager[None]:
        """A block whose writes become durable together when it ends, sparing a commit per
        write where the store has them (SQLite: one transaction for the whole file, each
        write in a savepoint of its own; MongoDB: nothing changes, each write stands alone).

        Each write inside is still its own compare-and-set, and one that fails undoes only
        itself. Nothing may be acted on (published, answered, sent) before the block ends,
        and each write must be safe on its own: a crash inside may keep all of them (MongoDB),
        or none (SQLite). Nothing inside may wait on anything but the store.
        """
        ...

    def purge_expired(self, now: datetime) -> int:
        """Delete documents whose TTL-indexed datetime is older than `now` minus the TTL.

        Only the TTL indexes declared through this Database's `ensure_indexes` count.
        MongoDB also expires documents by itself (within a minute or so); calling this makes
        expiry exact and deterministic, which tests and schedulers rely on.
        """
        ...


class Database(Protocol):
    """One service's store: its collections and their indexes."""

    def collection(self, name: str) -> Collection:
        """The collection called `name` (created on first write)."""
        ...

    def ensure_indexes(self, name: str, indexes: Sequence[Index]) -> None:
        """Create the indexes a collection needs; safe to repeat and to race other processes."""
        ...

    def describe(self) -> str:
        """Where the data lives, for the start-up log (never any credentials)."""
        ...

    def close(self) -> None:
        """Release the connection; the Database is unusable afterwards."""
        ...
