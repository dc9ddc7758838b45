"""The production store: a thin adapter over pymongo (it also runs on mongomock).

Filters and updates are already MongoDB's own language, checked and normalized by `_rules`
so that nothing reaches the server that SQLite would refuse. What comes back is normalized
too: bson Binary becomes bytes, datetimes become aware UTC whatever the client's tz_aware.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any

import pymongo
import pymongo.errors
import pymongo.uri_parser
from pymongo import ReturnDocument

from shared.storage._rules import (
    check_limit,
    check_name,
    check_path,
    expiry_filters,
    normalize_document,
    normalize_filter,
    normalize_sort,
    normalize_update,
    remember_expiries,
    with_upsert_id,
)
from shared.storage.port import (
    Document,
    DuplicateKeyError,
    Filter,
    Index,
    Sort,
    StorageError,
    Update,
)


class MongoDatabase:
    """The MongoDB database `db_name` reached through `client`.

    `address` is only for `describe()`. When `owns_client` is set, `close()` closes the client.
    """

    def __init__(
        self, client: Any, db_name: str, *, address: str | None = None, owns_client: bool = False
    ) -> None:
        self._client = client
        self._db = client[db_name]
        self._name = db_name
        self._address = address
        self._owns_client = owns_client
        self._collections: dict[str, MongoCollection] = {}
        self._expiries: dict[str, list[tuple[str, int]]] = {}

    def collection(self, name: str) -> MongoCollection:
        """The collection `name` (MongoDB creates it on first write)."""
        if name not in self._collections:
            expiries = self._expiries.setdefault(name, [])
            self._collections[name] = MongoCollection(self._db[check_name(name)], expiries)
        return self._collections[name]

    def ensure_indexes(self, name: str, indexes: Sequence[Index]) -> None:
        """Create the indexes; MongoDB treats re-creating an identical index as a no-op."""
        collection = self._db[check_name(name)]
        for index in indexes:
            keys, options = _index_spec(index)
            # One create_index per index: mongomock's create_indexes drops partial filters.
            with _translate_errors():
                collection.create_index(keys, **options)
        remember_expiries(self._expiries.setdefault(name, []), indexes)

    def describe(self) -> str:
        """Where the data lives, for the start-up log (the address never has credentials)."""
        where = f" at {self._address}" if self._address else ""
        return f"MongoDB database {self._name}{where}"

    def close(self) -> None:
        """Close the client if this database created it."""
        if self._owns_client:
            self._client.close()


def _index_spec(index: Index) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    keys = [(check_path(path), direction) for path, direction in index.fields]
    options: dict[str, Any] = {}
    if index.unique:
        # Partial rather than sparse: a compound index then skips a document lacking any of
        # its fields, which is what SQLite's unique index (NULLs never clash) does too.
        options["unique"] = True
        options["partialFilterExpression"] = {path: {"$exists": True} for path, _ in keys}
    if index.expire_after_seconds is not None:
        options["expireAfterSeconds"] = index.expire_after_seconds
    return keys, options


@contextmanager
def _translate_errors() -> Iterator[None]:
    try:
        yield
    except pymongo.errors.DuplicateKeyError as exc:
        raise DuplicateKeyError(str(exc)) from exc
    except pymongo.errors.PyMongoError as exc:
        raise StorageError(f"MongoDB: {exc}") from exc


class MongoCollection:
    """One MongoDB collection behind the port."""

    def __init__(self, collection: Any, expiries: list[tuple[str, int]]) -> None:
        self._collection = collection
        self._expiries = expiries

    def group_writes(self) -> AbstractContextManager[None]:
        """Nothing to group: every write stands alone and is durable when it returns."""
        return nullcontext()

    def insert(self, doc: Document) -> Document:
        """Store a new document; DuplicateKeyError if its `_id` or a unique key is taken."""
        doc = normalize_document(doc)
        with _translate_errors():
            # A copy: pymongo may add to the dict it is given.
            self._collection.insert_one(dict(doc))
        return doc

    def get(self, _id: str) -> Document | None:
        """The document with this `_id`, or None."""
        return self.find_one({"_id": _id})

    def find(
        self, filter: Filter, *, sort: Sort | None = None, limit: int | None = None
    ) -> list[Document]:
        """Matching documents in `sort` order, at most `limit`."""
        flt = normalize_filter(filter)
        order = normalize_sort(sort) or None
        if check_limit(limit) == 0:
            return []  # pymongo's limit 0 would mean "no limit"
        with _translate_errors():
            cursor = self._collection.find(flt, sort=order, limit=limit or 0)
            return [_from_mongo(doc) for doc in cursor]

    def find_one(self, filter: Filter, *, sort: Sort | None = None) -> Document | None:
        """The first matching document in `sort` order, or None."""
        found = self.find(filter, sort=sort, limit=1)
        return found[0] if found else None

    def count(self, filter: Filter) -> int:
        """How many documents match."""
        flt = normalize_filter(filter)
        with _translate_errors():
            return self._collection.count_documents(flt)

    def update_one(
        self, filter: Filter, update: Update, *, upsert: bool = False
    ) -> Document | None:
        """Atomic compare-and-set: update one match and return it after the update."""
        flt = normalize_filter(filter)
        upd = normalize_update(update)
        if upsert:
            upd = with_upsert_id(flt, upd)
        with _translate_errors():
            doc = self._collection.find_one_and_update(
                flt, upd, return_document=ReturnDocument.AFTER, upsert=upsert
            )
        return None if doc is None else _from_mongo(doc)

    def update_many(self, filter: Filter, update: Update) -> int:
        """Update every match; return how many changed."""
        flt = normalize_filter(filter)
        upd = normalize_update(update, allow_set_on_insert=False)
        with _translate_errors():
            return self._collection.update_many(flt, upd).modified_count

    def delete_one(self, filter: Filter) -> bool:
        """Delete one match; True if there was one."""
        flt = normalize_filter(filter)
        with _translate_errors():
            return self._collection.delete_one(flt).deleted_count == 1

    def delete_many(self, filter: Filter) -> int:
        """Delete every match; return how many."""
        flt = normalize_filter(filter)
        with _translate_errors():
            return self._collection.delete_many(flt).deleted_count

    def purge_expired(self, now: datetime) -> int:
        """Delete documents whose TTL-indexed datetime is older than `now` minus the TTL."""
        return sum(self.delete_many(flt) for flt in expiry_filters(now, self._expiries))


def _from_mongo(value: Any) -> Any:
    """A value as read back from MongoDB, in the port's types."""
    if isinstance(value, dict):
        return {key: _from_mongo(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_from_mongo(item) for item in value]
    if isinstance(value, bytes):
        return bytes(value)  # bson.Binary is a bytes subclass carrying a subtype
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, int) and type(value) not in (int, bool):
        return int(value)  # bson.Int64
    return value


# What a replica set needs of every client, unless MONGO_URI says otherwise: writes
# acknowledged by a majority (a write the primary alone holds can be rolled back when it
# fails over, and a claim or a release decision rolled back is a false or a lost release),
# retried once across a failover, and reads from the primary with majority read concern,
# so every read that decides a release sees only writes that cannot be rolled back.
REPLICA_SET_DEFAULTS: dict[str, Any] = {
    "w": "majority",
    "retryWrites": True,
    "readPreference": "primary",
    "readConcernLevel": "majority",
}


def client_options(uri: str) -> dict[str, Any]:
    """MongoClient keyword arguments for `uri`: ours, and the replica-set defaults that the
    URI does not set itself (the URI's own options win)."""
    try:
        given = pymongo.uri_parser.parse_uri(uri)["options"]
    except (pymongo.errors.PyMongoError, ValueError) as exc:
        raise StorageError(f"invalid MONGO_URI: {exc}") from None
    named = {key.lower() for key in given}
    defaults = {key: value for key, value in REPLICA_SET_DEFAULTS.items()
                if key.lower() not in named}
    # connect=False: no socket or monitor thread until first use, so a client made before
    # a fork (or before eventlet patches sockets) never carries a live connection over.
    return {"tz_aware": True, "serverSelectionTimeoutMS": 5000, "connect": False, **defaults}


def lazy_client(uri: str) -> tuple[Any, str]:
    """A lazily connecting client for `uri`, and its host:port list without credentials."""
    try:
        nodes = pymongo.uri_parser.parse_uri(uri)["nodelist"]
    except (pymongo.errors.PyMongoError, ValueError) as exc:
        raise StorageError(f"invalid MONGO_URI: {exc}") from None
    client = pymongo.MongoClient(uri, **client_options(uri))
    return client, ",".join(f"{host}:{port}" for host, port in nodes)
