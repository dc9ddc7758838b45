"""Update operators applied to a Python document, with MongoDB's semantics.

MongoDB applies updates on the server; the SQLite adapter applies them here, inside the
same transaction that read the document. Type clashes that MongoDB refuses (`$inc` on a
string, `$push` onto a non-array, a path through a scalar) raise StorageError.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.storage._rules import normalize_value, set_path
from shared.storage.port import Document, StorageError

_MISSING = object()


def apply_update(doc: Document, update: dict[str, dict], *, inserting: bool,
                 in_place: bool = False) -> Document:
    """A copy of `doc` with a normalized update applied; `$setOnInsert` only when inserting.

    `in_place=True` changes `doc` itself, for a caller whose `doc` is its own fresh copy
    (just decoded from the store). The result never shares a value with `update`.
    """
    result = doc if in_place else fresh_copy(doc)
    for op, fields in update.items():
        if op == "$setOnInsert" and not inserting:
            continue
        for path, operand in fields.items():
            _OPERATORS[op](result, path, fresh_copy(operand))
    return result


def fresh_copy(value: Any) -> Any:
    """A deep copy of a document's value: its dicts and lists anew, its scalars shared.

    Documents hold only dicts, lists and immutable scalars (str, numbers, bools, None,
    datetimes, bytes), so this is `copy.deepcopy` without its memo and dispatch.
    """
    if isinstance(value, dict):
        return {key: fresh_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [fresh_copy(item) for item in value]
    return value


def _parent(doc: Document, path: str, *, create: bool) -> tuple[dict | None, str]:
    """The dict holding the last segment of `path` (None if absent and not created)."""
    *parents, leaf = path.split(".")
    target: Any = doc
    for name in parents:
        if not isinstance(target, dict):
            raise StorageError(f"cannot reach {path!r}: {name!r} is inside a non-document")
        if name not in target:
            if not create:
                return None, leaf
            target[name] = {}
        target = target[name]
    if not isinstance(target, dict):
        raise StorageError(f"cannot reach {path!r}: its parent is not an embedded document")
    return target, leaf


def _set(doc: Document, path: str, value: Any) -> None:
    set_path(doc, path, value)


def _unset(doc: Document, path: str, _: Any) -> None:
    try:
        parent, leaf = _parent(doc, path, create=False)
    except StorageError:
        return  # MongoDB quietly ignores $unset of a path through a scalar
    if parent is not None:
        parent.pop(leaf, None)


def _inc(doc: Document, path: str, amount: int | float) -> None:
    parent, leaf = _parent(doc, path, create=True)
    assert parent is not None
    current = parent.get(leaf, 0)
    if isinstance(current, bool) or not isinstance(current, int | float):
        raise StorageError(f"cannot $inc {path!r}: it holds a non-number")
    parent[leaf] = normalize_value(current + amount)


def _push(doc: Document, path: str, value: Any) -> None:
    parent, leaf = _parent(doc, path, create=True)
    assert parent is not None
    current = parent.setdefault(leaf, [])
    if not isinstance(current, list):
        raise StorageError(f"cannot $push onto {path!r}: it is not an array")
    if isinstance(value, dict) and "$each" in value:
        current.extend(value["$each"])
    else:
        current.append(value)


def _pull(doc: Document, path: str, condition: Any) -> None:
    parent, leaf = _parent(doc, path, create=False)
    if parent is None or leaf not in parent:
        return
    current = parent[leaf]
    if not isinstance(current, list):
        raise StorageError(f"cannot $pull from {path!r}: it is not an array")
    parent[leaf] = [item for item in current if not _pull_matches(item, condition)]


def _pull_matches(item: Any, condition: Any) -> bool:
    if not isinstance(condition, dict):
        return same_value(item, condition)
    if set(condition) == {"$in"}:
        return any(same_value(item, wanted) for wanted in condition["$in"])
    if not isinstance(item, dict):
        return False
    return all(_field_matches(_lookup(item, sub), wanted) for sub, wanted in condition.items())


def _field_matches(actual: Any, wanted: Any) -> bool:
    if isinstance(wanted, dict):
        return any(_field_matches(actual, option) for option in wanted["$in"])
    if wanted is None:
        return actual is _MISSING or actual is None
    return actual is not _MISSING and same_value(actual, wanted)


def _lookup(doc: dict, path: str) -> Any:
    value: Any = doc
    for name in path.split("."):
        if not isinstance(value, dict) or name not in value:
            return _MISSING
        value = value[name]
    return value


def same_value(a: Any, b: Any) -> bool:
    """Equality as MongoDB sees it: numbers across int/float, but True is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


_OPERATORS: dict[str, Callable[[Document, str, Any], None]] = {
    "$set": _set,
    "$setOnInsert": _set,
    "$unset": _unset,
    "$inc": _inc,
    "$push": _push,
    "$pull": _pull,
}
