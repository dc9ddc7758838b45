"""The `database` fixture: every contract test runs once per backend.

- `sqlite`: the embedded adapter on a file in the test's tmp_path;
- `mongomock`: the pymongo adapter on mongomock, so its code path runs in every test run;
- `mongo`: the pymongo adapter on a real MongoDB at $MONGO_URI, skipped when that is unset.

Where mongomock itself strays from MongoDB, a test carries
`@pytest.mark.mongomock_differs("why")` and is skipped on mongomock only.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import mongomock
import pymongo
import pytest

from shared.storage import Database, open_database

BACKENDS = ["sqlite", "mongomock", pytest.param("mongo", marks=pytest.mark.mongo)]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "mongomock_differs(reason): mongomock is not faithful to MongoDB here"
    )


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the backend under test."""
    marker = request.node.get_closest_marker("mongomock_differs")
    if request.param == "mongomock" and marker is not None:
        pytest.skip(f"mongomock differs from MongoDB: {marker.args[0]}")
    return request.param


@pytest.fixture
def database(backend: str, tmp_path) -> Iterator[Database]:
    """A fresh, empty Database on the backend under test."""
    if backend == "sqlite":
        db = open_database("contract", mongo_uri=None, data_dir=tmp_path)
        yield db
        db.close()
    elif backend == "mongomock":
        db = open_database(
            "contract",
            mongo_uri=None,
            data_dir=tmp_path,
            mongo_client=mongomock.MongoClient(tz_aware=True),
        )
        yield db
        db.close()
    else:
        yield from _real_mongo(tmp_path)


def _real_mongo(tmp_path) -> Iterator[Database]:
    uri = os.environ.get("MONGO_URI")
    if not uri:
        pytest.skip("MONGO_URI is not set: no real MongoDB to test against")
    client = pymongo.MongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=5000)
    name = f"contract_{uuid.uuid4().hex[:12]}"
    db = open_database(name, mongo_uri=None, data_dir=tmp_path, mongo_client=client)
    try:
        yield db
    finally:
        client.drop_database(f"jicm_{name}")
        client.close()
