"""docs/scaling.md names a sharding key for every collection of every service, and no
collection that does not exist, so the table cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jicm.store import SERVICES, service_indexes

DOC = Path(__file__).resolve().parents[2] / "docs" / "scaling.md"
ROW = re.compile(r"^\| (\w+) \| (\w+) \| (unsharded|`\{[^`]+\}`) \| .+ \|$", re.MULTILINE)


def table() -> dict[tuple[str, str], str]:
    return {(service, collection): key
            for service, collection, key in ROW.findall(DOC.read_text())}


def test_every_collection_of_every_service_has_a_sharding_key_and_no_other_is_listed():
    kept = {(service, collection) for service in SERVICES for collection in
            service_indexes(service)}
    assert set(table()) == kept


@pytest.mark.parametrize("service", SERVICES)
def test_a_collection_with_a_unique_key_besides_its_id_is_left_unsharded(service):
    for collection, indexes in service_indexes(service).items():
        if any(index.unique for index in indexes):
            assert table()[(service, collection)] == "unsharded", collection
