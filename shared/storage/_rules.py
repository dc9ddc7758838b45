"""Validation shared by both adapters, so that they accept exactly the same language.

Every document, filter, update and sort goes through here before an adapter sees it. The
result is a normalized copy: datetimes truncated to milliseconds in UTC (MongoDB's precision,
so a value reads back equal to what was written), bytes-like values as bytes, tuples as lists.
Anything outside the port's contract raises StorageError here, on both backends alike.
"""

from __future__ import annotations

import itertools
import math
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from shared.clock import to_utc_ms
from shared.storage.port import Document, Filter, Index, Sort, StorageError, Update

# Paths end up inside SQL text (index expressions cannot take bound parameters), so they are
# held to a pattern that cannot carry quotes, spaces or JSON-path syntax.
_SEGMENT = r"[A-Za-z0-9_-]+"
_PATH = re.compile(rf"{_SEGMENT}(\.{_SEGMENT})*")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}")
_INT64 = (-(2**63), 2**63 - 1)

COMPARISONS = ("$gt", "$gte", "$lt", "$lte")
FILTER_OPERATORS = frozenset({"$eq", "$ne", "$in", "$nin", "$exists", *COMPARISONS})
UPDATE_OPERATORS = frozenset({"$set", "$unset", "$inc", "$push", "$pull", "$setOnInsert"})


def check_name(name: str) -> str:
    """A collection name both backends accept as a table or collection name."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name.lower().startswith("sqlite"):
        raise StorageError(f"invalid collection name {name!r}: letters, digits and _ only")
    return name


def check_path(path: str) -> str:
    """A field path: dotted names of letters, digits, `_` and `-`; `_id` only on its own."""
    if not isinstance(path, str) or not _PATH.fullmatch(path):
        raise StorageError(f"invalid field path {path!r}")
    if path.startswith("_id."):
        raise StorageError(f"invalid field path {path!r}: _id is a plain string")
    return path


def normalize_value(value: Any) -> Any:
    """A deep, normalized copy of a storable value; StorageError for anything else."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise StorageError(f"integer {value} does not fit in 64 bits")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise StorageError("NaN and infinite floats are not storable")
        return value
    if isinstance(value, datetime):
        return _normalize_datetime(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, list | tuple):
        return [normalize_value(item) for item in value]
    if isinstance(value, Mapping):
        return {_check_key(key): normalize_value(item) for key, item in value.items()}
    raise StorageError(f"values of type {type(value).__name__} are not storable")


def _normalize_datetime(value: datetime) -> datetime:
    try:
        return to_utc_ms(value)
    except ValueError as exc:
        raise StorageError(str(exc)) from None


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not key or key.startswith("$") or "." in key or "\0" in key:
        raise StorageError(f"invalid field name {key!r}: no leading $, no dots, not empty")
    return key


def normalize_document(doc: Mapping[str, Any]) -> Document:
    """A normalized copy of a document, which must have a string `_id`."""
    if not isinstance(doc, Mapping):
        raise StorageError("a document is a dict")
    if not isinstance(doc.get("_id"), str):
        raise StorageError("a document needs a string _id")
    return normalize_value(doc)


def _scalar(value: Any, *, where: str) -> Any:
    if isinstance(value, list | tuple | Mapping):
        raise StorageError(f"{where}: matching whole arrays or embedded documents is unsupported")
    return normalize_value(value)


def normalize_filter(filter: Filter) -> dict[str, Any]:
    """A normalized copy of a filter: plain values stay plain, operator dicts are checked."""
    if not isinstance(filter, Mapping):
        raise StorageError("a filter is a dict")
    result: dict[str, Any] = {}
    for path, condition in filter.items():
        if isinstance(path, str) and path.startswith("$"):
            raise StorageError(f"unsupported filter operator {path!r}")
        check_path(path)
        if isinstance(condition, Mapping):
            result[path] = _normalize_operators(path, condition)
        else:
            result[path] = _check_id_type(path, _scalar(condition, where=path))
    return result


def _normalize_operators(path: str, condition: Mapping[str, Any]) -> dict[str, Any]:
    if not condition or not all(isinstance(op, str) and op.startswith("$") for op in condition):
        raise StorageError(f"{path}: matching whole embedded documents is unsupported")
    normalized: dict[str, Any] = {}
    for op, operand in condition.items():
        if op not in FILTER_OPERATORS:
            raise StorageError(f"unsupported filter operator {op!r}")
        normalized[op] = _normalize_operand(path, op, operand)
    return normalized


def _normalize_operand(path: str, op: str, operand: Any) -> Any:
    where = f"{path} {op}"
    if op == "$exists":
        if not isinstance(operand, bool):
            raise StorageError(f"{where} takes True or False")
        return operand
    if op in ("$in", "$nin"):
        if not isinstance(operand, list | tuple):
            raise StorageError(f"{where} takes a list")
        return [_check_id_type(path, _scalar(item, where=where)) for item in operand]
    value = _check_id_type(path, _scalar(operand, where=where))
    if op in COMPARISONS and (value is None or isinstance(value, bool | bytes)):
        raise StorageError(f"{where} compares numbers, strings or datetimes only")
    return value


def _check_id_type(path: str, value: Any) -> Any:
    # SQLite would quietly compare 5 with "5" on the id column; MongoDB never matches them.
    if path == "_id" and value is not None and not isinstance(value, str):
        raise StorageError("_id is always a string")
    return value


def iter_conditions(filter: Mapping[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """(path, operator, operand) triples of a normalized filter; a plain value is `$eq`."""
    for path, condition in filter.items():
        if isinstance(condition, dict):
            for op, operand in condition.items():
                yield path, op, operand
        else:
            yield path, "$eq", condition


def normalize_update(update: Update, *, allow_set_on_insert: bool = True) -> dict[str, dict]:
    """A normalized copy of an update, refusing paths that collide with each other."""
    if not isinstance(update, Mapping) or not update:
        raise StorageError("an update is a non-empty dict of operators")
    result: dict[str, dict[str, Any]] = {}
    for op, fields in update.items():
        if op not in UPDATE_OPERATORS:
            raise StorageError(f"unsupported update operator {op!r}")
        if op == "$setOnInsert" and not allow_set_on_insert:
            raise StorageError("$setOnInsert only makes sense in update_one(..., upsert=True)")
        if not isinstance(fields, Mapping):
            raise StorageError(f"{op} takes a dict of paths")
        result[op] = {
            _check_update_path(op, path): _normalize_update_operand(op, path, value)
            for path, value in fields.items()
        }
    _refuse_conflicts([path for fields in result.values() for path in fields])
    return result


def _check_update_path(op: str, path: str) -> str:
    if path == "_id" and op != "$setOnInsert":
        raise StorageError("_id cannot be changed")
    return check_path(path)


def _normalize_update_operand(op: str, path: str, value: Any) -> Any:
    if op == "$unset":
        return ""
    if op == "$inc":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise StorageError(f"$inc {path} takes a number")
        return normalize_value(value)
    if op == "$pull":
        return _normalize_pull(path, value)
    if op == "$push" and isinstance(value, Mapping) and "$each" in value:
        if set(value) != {"$each"} or not isinstance(value["$each"], list | tuple):
            raise StorageError(f"$push {path} takes a value or {{'$each': [...]}}")
        return {"$each": normalize_value(value["$each"])}
    if op == "$setOnInsert" and path == "_id" and not isinstance(value, str):
        raise StorageError("_id is always a string")
    return normalize_value(value)


def _normalize_pull(path: str, condition: Any) -> Any:
    if not isinstance(condition, Mapping):
        return _scalar(condition, where=f"$pull {path}")
    if set(condition) == {"$in"}:
        return {"$in": _normalize_in(path, condition["$in"])}
    pulled: dict[str, Any] = {}
    for sub, wanted in condition.items():
        check_path(sub)
        if isinstance(wanted, Mapping):
            if set(wanted) != {"$in"}:
                raise StorageError(f"$pull {path}.{sub} takes a value or {{'$in': [...]}}")
            pulled[sub] = {"$in": _normalize_in(path, wanted["$in"])}
        else:
            pulled[sub] = _scalar(wanted, where=f"$pull {path}.{sub}")
    if not pulled:
        raise StorageError(f"$pull {path} needs a condition")
    return pulled


def _normalize_in(path: str, values: Any) -> list[Any]:
    if not isinstance(values, list | tuple):
        raise StorageError(f"$pull {path} $in takes a list")
    return [_scalar(value, where=f"$pull {path}") for value in values]


def _refuse_conflicts(paths: list[str]) -> None:
    # MongoDB refuses an update touching "a" and "a.b" (or "a" twice); refuse it everywhere.
    ordered = sorted(paths)
    for first, second in itertools.pairwise(ordered):
        if second == first or second.startswith(first + "."):
            raise StorageError(f"update paths {first!r} and {second!r} conflict")


def normalize_sort(sort: Sort | None) -> list[tuple[str, int]]:
    """A checked list of (path, 1 or -1)."""
    if sort is None:
        return []
    pairs = [tuple(pair) for pair in sort]
    for pair in pairs:
        if len(pair) != 2 or pair[1] not in (1, -1) or isinstance(pair[1], bool):
            raise StorageError("sort is a list of (field, 1 or -1)")
        check_path(pair[0])
    return [(path, direction) for path, direction in pairs]


def check_limit(limit: int | None) -> int | None:
    """None (no limit) or a non-negative int; 0 means no documents, unlike MongoDB's 0."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise StorageError("limit is None or a non-negative integer")
    return limit


def with_upsert_id(filter: Mapping[str, Any], update: dict[str, dict]) -> dict[str, dict]:
    """The update, given a fresh uuid4 `_id` to insert with if neither it nor the filter has one.

    Left to itself MongoDB would invent an ObjectId; the port promises string ids everywhere.
    """
    named = any(path == "_id" and op == "$eq" for path, op, _ in iter_conditions(filter))
    if named or "_id" in update.get("$setOnInsert", {}):
        return update
    on_insert = {**update.get("$setOnInsert", {}), "_id": str(uuid.uuid4())}
    return {**update, "$setOnInsert": on_insert}


def upsert_seed(filter: Mapping[str, Any]) -> Document:
    """The document an upsert starts from: the filter's equality conditions."""
    seed: Document = {}
    for path, op, value in iter_conditions(filter):
        if op == "$eq":
            set_path(seed, path, value)
    return seed


def set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted path, creating nested dicts; StorageError if a non-dict is in the way."""
    *parents, leaf = path.split(".")
    target = doc
    for name in parents:
        target = target.setdefault(name, {})
        if not isinstance(target, dict):
            raise StorageError(f"cannot create {path!r}: {name!r} is not an embedded document")
    target[leaf] = value


def remember_expiries(known: list[tuple[str, int]], indexes: Sequence[Index]) -> None:
    """Add the (path, seconds) of each TTL index to `known`, once each."""
    for index in indexes:
        if index.expire_after_seconds is not None:
            entry = (index.fields[0][0], index.expire_after_seconds)
            if entry not in known:
                known.append(entry)


def expiry_filters(now: datetime, expiries: Sequence[tuple[str, int]]) -> list[dict[str, Any]]:
    """One filter per TTL index, matching the documents it has let expire by `now`."""
    moment = normalize_value(now)
    if not isinstance(moment, datetime):
        raise StorageError("purge_expired takes a datetime")
    return [{path: {"$lt": moment - timedelta(seconds=s)}} for path, s in expiries]
