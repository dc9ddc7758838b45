"""How documents are kept in SQLite: the JSON encoding, and filters compiled to SQL.

A document is one row `(id TEXT PRIMARY KEY, doc TEXT)` with `doc` holding JSON. Datetimes
and bytes have no JSON type, so they become one-key tagged objects: `{"$date": "...Z"}` in a
fixed-width ISO form and `{"$binary": base64}`. `json_extract` returns an object as its
minified text, so comparing it with the same minified encoding of a bound parameter is
exact, and for datetimes text order is time order.

Indexes are expression indexes on `json_extract(doc, '$."a"."b"')`, and filters and sorts use
the very same expression text, which is what lets SQLite's planner use them. Conditions
also check `json_type`, because SQLite compares across types where MongoDB does not: it
would find the string "x" greater than 5, and the JSON `true` equal to 1. The check reads
the document, so it is left out where it cannot change the answer (`_needs_guard`).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from shared.storage._rules import check_name, check_path, iter_conditions
from shared.storage.port import Document, Index, StorageError

_SQL_OPERATORS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}

# ---------------------------------------------------------------------------- encoding


def encode(doc: Document) -> str:
    """The JSON text stored for a normalized document (its `_id` lives in its own column)."""
    body = {key: _tag(value) for key, value in doc.items() if key != "_id"}
    return _dumps(body)


def decode(_id: str, text: str) -> Document:
    """The document a row holds, `_id` first as MongoDB returns it."""
    return {"_id": _id, **json.loads(text, object_hook=_untag)}


def _dumps(value: Any) -> str:
    # Minified like json_extract's output, so tagged values compare equal as text.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _tag(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$date": _format_date(value)}
    if isinstance(value, bytes):
        return {"$binary": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {key: _tag(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_tag(item) for item in value]
    return value


def _format_date(moment: datetime) -> str:
    # Zero-padded by hand: strftime does not pad years below 1000 on every platform.
    m = moment.astimezone(UTC)
    return (
        f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}"
        f".{m.microsecond // 1000:03d}Z"
    )


def _untag(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        if "$date" in obj:
            # The stored form (`_format_date`) is ISO 8601 with a Z: fromisoformat reads
            # it many times faster than strptime with a format.
            return datetime.fromisoformat(obj["$date"])
        if "$binary" in obj:
            return base64.b64decode(obj["$binary"])
    return obj


def _param(value: Any) -> Any:
    """A scalar as the bound parameter json_extract's result is compared with."""
    if isinstance(value, datetime | bytes):
        return _dumps(_tag(value))
    if isinstance(value, bool):
        return int(value)  # json_extract returns JSON true/false as 1/0
    return value


# ------------------------------------------------------------------------- expressions


def table(name: str) -> str:
    """The quoted table name of a collection."""
    return f'"{check_name(name)}"'


def _json_path(path: str) -> str:
    # Quoted labels, so that names like "a-b" or "0" mean object keys; check_path has
    # already ruled out quotes, so this literal cannot break out of the SQL string.
    return "$" + "".join(f'."{segment}"' for segment in check_path(path).split("."))


def key_expr(path: str) -> str:
    """The SQL expression of a field's value, identical in indexes and in queries."""
    return "id" if path == "_id" else f"json_extract(doc, '{_json_path(path)}')"


def _type_expr(path: str, tag: str | None = None) -> str:
    json_path = _json_path(path) + (f'."{tag}"' if tag else "")
    return f"json_type(doc, '{json_path}')"


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, datetime):
        return "date"
    if isinstance(value, bytes):
        return "binary"
    raise StorageError(f"cannot compare with {type(value).__name__}")


def _guard(path: str, kind: str) -> str:
    """SQL that is true only when the field holds a value of this kind."""
    if kind == "bool":
        return f"{_type_expr(path)} IN ('true', 'false')"
    if kind == "number":
        return f"{_type_expr(path)} IN ('integer', 'real')"
    if kind == "text":
        return f"{_type_expr(path)} = 'text'"
    tag = "$date" if kind == "date" else "$binary"
    return f"{_type_expr(path, tag)} = 'text'"


# ----------------------------------------------------------------------------- filters

Sql = tuple[str, list[Any]]


def compile_where(filter: Mapping[str, Any]) -> Sql:
    """A WHERE clause and its parameters for a normalized filter."""
    parts: list[str] = []
    params: list[Any] = []
    for path, op, operand in iter_conditions(filter):
        sql, more = _condition(path, op, operand)
        parts.append(sql)
        params.extend(more)
    return (" AND ".join(parts) or "1"), params


def _condition(path: str, op: str, operand: Any) -> Sql:
    if op == "$eq":
        return _one_of(path, [operand])
    if op == "$in":
        return _one_of(path, operand)
    if op in ("$ne", "$nin"):
        sql, params = _one_of(path, [operand] if op == "$ne" else operand)
        return f"NOT IFNULL({sql}, 0)", params
    if op == "$exists":
        present = "1" if path == "_id" else f"{_type_expr(path)} IS NOT NULL"
        return (present if operand else f"NOT {present}"), []
    return _compare(path, _SQL_OPERATORS[op], operand)


def _one_of(path: str, values: Sequence[Any]) -> Sql:
    """Equality with any of `values`: one `IN` per kind of value, so indexes still serve."""
    by_kind: dict[str, list[Any]] = {}
    for value in values:
        by_kind.setdefault("null" if value is None else _kind(value), []).append(value)
    parts: list[str] = []
    params: list[Any] = []
    for kind, group in by_kind.items():
        if kind == "null":
            parts.append(f"{key_expr(path)} IS NULL")
            continue
        marks = ", ".join("?" * len(group))
        sql = f"{key_expr(path)} IN ({marks})"
        guarded = path != "_id" and _needs_guard(kind, group)
        parts.append(f"({sql} AND {_guard(path, kind)})" if guarded else sql)
        params.extend(_param(value) for value in group)
    if not parts:
        return "0", []
    return (parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"), params


def _needs_guard(kind: str, values: Sequence[Any]) -> bool:
    """Whether equality with these values needs the field's JSON type checked as well.

    `json_extract` gives text only for a JSON string or, as its JSON text, for an object or
    an array, which starts with `{` or `[`; numbers, booleans and null never equal text in
    SQLite. So equality with a string that starts with neither is exact without the check,
    and a count by it is answered from the index alone, without reading a document.
    """
    return kind != "text" or any(value[:1] in ("{", "[") for value in values)


def _compare(path: str, sql_op: str, operand: Any) -> Sql:
    sql = f"{key_expr(path)} {sql_op} ?"
    if path != "_id":
        sql = f"({sql} AND {_guard(path, _kind(operand))})"
    return sql, [_param(operand)]


def compile_order(sort: Iterable[tuple[str, int]]) -> str:
    """An ORDER BY clause (or nothing); SQL NULL sorts first ascending, as null does in Mongo."""
    terms = [f"{key_expr(path)} {'ASC' if d == 1 else 'DESC'}" for path, d in sort]
    return f" ORDER BY {', '.join(terms)}" if terms else ""


# ----------------------------------------------------------------------------- indexes


def index_statements(collection: str, index: Index) -> list[str]:
    """The CREATE INDEX statements an Index needs: a lookup index, plus one for uniqueness.

    Lookups use `json_extract`, which returns SQL NULL for a JSON null; SQLite lets NULLs
    repeat in a unique index, so uniqueness is kept by a second index on `doc -> path` (the
    value's JSON text: 'null' for null, and '"1"', '1' and 'true' all distinct), partial on
    the fields being present, which is what MongoDB's partial unique index does.
    """
    statements = [_lookup_index(collection, index.fields)]
    if index.unique:
        statements.append(_unique_index(collection, index.fields))
    return statements


def _index_name(prefix: str, collection: str, fields: Sequence[tuple[str, int]]) -> str:
    # Index names are global in a SQLite file and paths may hold characters that would
    # be awkward in a name, so a short digest of the spec tells indexes apart.
    digest = hashlib.sha256(repr(tuple(fields)).encode()).hexdigest()[:12]
    return f'"{prefix}_{check_name(collection)}_{digest}"'


def _lookup_index(collection: str, fields: Sequence[tuple[str, int]]) -> str:
    columns = ", ".join(f"{key_expr(p)} {'ASC' if d == 1 else 'DESC'}" for p, d in fields)
    name = _index_name("ix", collection, fields)
    return f"CREATE INDEX IF NOT EXISTS {name} ON {table(collection)} ({columns})"


def _unique_index(collection: str, fields: Sequence[tuple[str, int]]) -> str:
    paths = [path for path, _ in fields]
    columns = ", ".join("id" if p == "_id" else f"doc -> '{_json_path(p)}'" for p in paths)
    present = [f"{_type_expr(p)} IS NOT NULL" for p in paths if p != "_id"]
    where = f" WHERE {' AND '.join(present)}" if present else ""
    name = _index_name("ux", collection, fields)
    return f"CREATE UNIQUE INDEX IF NOT EXISTS {name} ON {table(collection)} ({columns}){where}"
