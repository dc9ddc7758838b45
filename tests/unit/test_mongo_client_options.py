"""A MongoDB client suits a replica set whatever MONGO_URI leaves out: majority writes,
retried across a failover, primary reads with majority read concern; what the URI sets
itself is left to it."""

from __future__ import annotations

import pytest
from pymongo import ReadPreference

from shared.storage import StorageError
from shared.storage.mongo import client_options, lazy_client


def test_a_plain_uri_gets_the_replica_set_defaults():
    client, address = lazy_client("mongodb://jicm:pw@mongo-0:27017,mongo-1:27017/?replicaSet=rs0")
    assert client.write_concern.document == {"w": "majority"}
    assert client.read_preference == ReadPreference.PRIMARY
    assert client.read_concern.level == "majority"
    assert client.options.retry_writes is True
    assert address == "mongo-0:27017,mongo-1:27017"
    client.close()


def test_what_the_uri_says_wins():
    options = client_options("mongodb://mongo/?w=1&readConcernLevel=local&retryWrites=false")
    assert {"w", "readConcernLevel", "retryWrites"}.isdisjoint(options)
    assert options["readPreference"] == "primary"


def test_a_bad_uri_is_a_storage_error_naming_the_variable():
    with pytest.raises(StorageError, match="MONGO_URI"):
        client_options("mongodb://")
