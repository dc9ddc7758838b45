"""What only the MongoDB adapter does: real TTL and partial unique indexes, and a client that
connects lazily and never shows credentials. Runs on mongomock; the shared behaviour is in
test_storage_contract.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import bson
import mongomock

from shared.storage import Index, open_database
from shared.storage.mongo import MongoDatabase


def make_database() -> tuple[mongomock.MongoClient, MongoDatabase]:
    client = mongomock.MongoClient(tz_aware=True)
    db = open_database("accounts", mongo_uri=None, data_dir=Path("unused"), mongo_client=client)
    return client, db


def test_it_uses_the_database_named_after_the_service():
    client, db = make_database()
    db.collection("users").insert({"_id": "u1"})

    assert client["jicm_accounts"]["users"].find_one() == {"_id": "u1"}


def test_it_creates_real_ttl_and_partial_unique_indexes():
    client, db = make_database()
    db.ensure_indexes(
        "users", [Index.on("email", unique=True), Index.on("seen_at", expire_after_seconds=60)]
    )

    info = client["jicm_accounts"]["users"].index_information()
    assert info["email_1"]["unique"] is True
    assert info["email_1"]["partialFilterExpression"] == {"email": {"$exists": True}}
    assert info["seen_at_1"]["expireAfterSeconds"] == 60


def test_values_written_by_other_clients_come_back_in_the_ports_types():
    client = mongomock.MongoClient()  # not tz_aware: naive datetimes come back
    db = MongoDatabase(client, "jicm_x")
    client["jicm_x"]["t"].insert_one(
        {"_id": "a", "at": datetime(2030, 1, 1), "b": bson.Binary(b"\x01", 0), "n": bson.Int64(5)}
    )

    doc = db.collection("t").get("a")
    assert doc["at"] == datetime(2030, 1, 1, tzinfo=UTC) and doc["at"].tzinfo is not None
    assert type(doc["b"]) is bytes and type(doc["n"]) is int


def test_open_database_with_a_uri_connects_lazily_and_hides_credentials(tmp_path):
    db = open_database(
        "accounts",
        mongo_uri="mongodb://user:secret@db1.example:27017,db2.example:27018/?replicaSet=rs0",
        data_dir=tmp_path,
    )

    description = db.describe()
    db.close()
    assert description == "MongoDB database jicm_accounts at db1.example:27017,db2.example:27018"
    assert "secret" not in description and "user" not in description
    assert not list(tmp_path.iterdir())
