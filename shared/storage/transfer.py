"""Moving a service's store between backends: every document of every collection, out to a
file and back into any store behind the port (SQLite to MongoDB, or back).

The file is JSON lines: a header naming the service and its collections, one line per
document, and a trailer with the count of each collection. Values the port stores that
JSON has no word for are tagged, as MongoDB's extended JSON does: `{"$date": "<ISO-8601>"}`
and `{"$bytes": "<base64>"}` (documents never have keys starting with `$`, so a tag cannot
be mistaken for data). An import refuses a file without its trailer (cut short) and one
written for another service.

Import is idempotent: a document already present and identical is skipped, so an
interrupted import is simply run again; one present but different is a conflict, reported,
and left as it is.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from shared.storage.port import Collection, Database, Document, DuplicateKeyError, StorageError

FORMAT = "jicm-store-export"
VERSION = 1
PAGE = 500


class TransferError(StorageError):
    """The file is not a complete export of this service."""


@dataclass
class ImportReport:
    """What an import did, per collection."""

    inserted: dict[str, int] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)
    conflicts: list[tuple[str, str]] = field(default_factory=list)

    def count(self, table: dict[str, int], collection: str) -> None:
        table[collection] = table.get(collection, 0) + 1


def encode(value: Any) -> Any:
    """A stored value as JSON (datetimes and bytes tagged)."""
    if isinstance(value, datetime):
        return {"$date": value.astimezone(UTC).isoformat()}
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, Mapping):
        return {key: encode(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [encode(item) for item in value]
    return value


def decode(value: Any) -> Any:
    """The inverse of `encode`."""
    if isinstance(value, dict):
        if value.keys() == {"$date"}:
            return datetime.fromisoformat(value["$date"])
        if value.keys() == {"$bytes"}:
            return base64.b64decode(value["$bytes"])
        return {key: decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode(item) for item in value]
    return value


def every_document(collection: Collection) -> Iterator[Document]:
    """All documents of `collection` in `_id` order, a page at a time (no long cursor)."""
    after: str | None = None
    while True:
        condition = {} if after is None else {"_id": {"$gt": after}}
        page = collection.find(condition, sort=[("_id", 1)], limit=PAGE)
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1]["_id"]


def export_store(db: Database, service: str, collections: Sequence[str], out: IO[str],
                 now: datetime) -> dict[str, int]:
    """Write every document of `collections` to `out`; the count of each."""
    _write(out, {"format": FORMAT, "version": VERSION, "service": service,
                 "collections": list(collections), "exported_at": now.isoformat()})
    counts = {}
    for name in collections:
        counts[name] = 0
        for doc in every_document(db.collection(name)):
            _write(out, {"collection": name, "doc": encode(doc)})
            counts[name] += 1
    _write(out, {"end": True, "counts": counts})
    return counts


def import_store(db: Database, service: str, lines: Iterable[str]) -> ImportReport:
    """Insert every document of an export of `service` into `db` (see the module)."""
    records = (json.loads(line) for line in lines if line.strip())
    header = next(records, None)
    if not header or header.get("format") != FORMAT or header.get("version") != VERSION:
        raise TransferError("not a jicm store export (or of another version)")
    if header["service"] != service:
        raise TransferError(f"this export is of {header['service']}, not {service}")
    report = ImportReport()
    seen: dict[str, int] = {}
    for record in records:
        if record.get("end"):
            if record["counts"] != {name: seen.get(name, 0) for name in header["collections"]}:
                raise TransferError("the export's counts do not match its documents")
            return report
        name = record["collection"]
        seen[name] = seen.get(name, 0) + 1
        _insert(db.collection(name), name, decode(record["doc"]), report)
    raise TransferError("the export ends before its trailer: it was cut short")


def _insert(collection: Collection, name: str, doc: Document, report: ImportReport) -> None:
    try:
        collection.insert(doc)
    except DuplicateKeyError:
        if collection.get(doc["_id"]) == doc:
            report.count(report.unchanged, name)
        else:
            report.conflicts.append((name, doc["_id"]))
        return
    report.count(report.inserted, name)


def _write(out: IO[str], record: dict) -> None:
    out.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
