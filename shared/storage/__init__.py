"""The storage port and its two adapters: MongoDB in production, SQLite embedded.

Services call `open_database` once, in their dependency provider's `setup()`, and write
their repositories against the `Database` and `Collection` protocols only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared.storage._rules import check_name
from shared.storage.port import Collection, Database, DuplicateKeyError, Index, StorageError

__all__ = [
    "Collection",
    "Database",
    "DuplicateKeyError",
    "Index",
    "StorageError",
    "open_database",
]


def open_database(
    name: str, *, mongo_uri: str | None, data_dir: Path, mongo_client: Any = None
) -> Database:
    """The store of the service `name`.

    With a `mongo_uri` (or a ready `mongo_client`, such as a mongomock one), the MongoDB
    database `jicm_<name>`; otherwise the embedded SQLite file `data_dir/<name>.sqlite3`.
    """
    check_name(name)
    if mongo_uri or mongo_client is not None:
        # Imported here so that processes on the embedded default never load pymongo.
        from shared.storage.mongo import MongoDatabase, lazy_client

        if mongo_client is not None:
            return MongoDatabase(mongo_client, f"jicm_{name}")
        client, address = lazy_client(mongo_uri)
        return MongoDatabase(client, f"jicm_{name}", address=address, owns_client=True)
    from shared.storage.sqlite import SqliteDatabase

    return SqliteDatabase(Path(data_dir) / f"{name}.sqlite3")
