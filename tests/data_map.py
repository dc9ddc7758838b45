"""Reading docs/data-map.yaml: which stored fields it lists, and how documents are named.

Used by the unit test of the map's shape and by the end-to-end test that compares it with
every collection of every service's store.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DATA_MAP = REPO / "docs" / "data-map.yaml"
ATTRIBUTES = ("category", "purpose", "legal_basis", "retention", "export", "erasure")


@dataclass(frozen=True)
class Field:
    service: str
    collection: str
    path: str
    category: str
    purpose: str
    legal_basis: str
    retention: str
    export: bool
    erasure: str


@cache
def raw() -> dict[str, Any]:
    return yaml.safe_load(DATA_MAP.read_text())


def collections(service: str) -> dict[str, dict[str, Any]]:
    """Every collection the map lists for `service`, the common ones included."""
    return {**raw()["common_collections"], **raw()["services"][service]}


def fields(service: str, collection: str) -> list[Field]:
    """The fields of one collection, each with its attributes resolved."""
    spec = collections(service)[collection]
    listed = {**spec.get("fields", {}), **raw()["common_fields"]}
    resolved = []
    for path, own in listed.items():
        values = {name: own.get(name, spec.get(name)) for name in ATTRIBUTES}
        resolved.append(Field(service, collection, path, **values))
    return resolved


def paths_of(doc: Any, prefix: str = "") -> set[str]:
    """Every leaf path of a stored document (`a.b`, `a[].b`); empty containers count."""
    if isinstance(doc, dict) and doc:
        found: set[str] = set()
        for key, value in doc.items():
            found |= paths_of(value, f"{prefix}.{key}" if prefix else key)
        return found
    if isinstance(doc, list) and doc:
        found = set()
        for item in doc:
            found |= paths_of(item, f"{prefix}[]")
        return found
    return {prefix}


def covers(listed: str, path: str) -> bool:
    """Whether the map's `listed` field covers the stored `path` (itself or inside it)."""
    want = _segments(listed)
    have = _segments(path)
    if len(have) < len(want):
        return False
    return all(w == "*" or w == h for w, h in zip(want, have, strict=False))


def _segments(path: str) -> list[str]:
    return path.replace("[]", ".[]").split(".")


def unlisted(service: str, collection: str, paths: set[str]) -> list[str]:
    """The stored paths of a collection that the map does not cover."""
    listed = [field.path for field in fields(service, collection)]
    return sorted(path for path in paths if not any(covers(entry, path) for entry in listed))
