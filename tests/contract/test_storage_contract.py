"""The storage port's contract, run against every backend (see conftest.py).

A repository written against the port must behave the same on SQLite and on MongoDB; each
test here pins one rule of that contract.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.storage import Collection, Database, DuplicateKeyError, Index, StorageError

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def things(database: Database) -> Collection:
    return database.collection("things")


def ids(docs: list[dict]) -> list[str]:
    return [doc["_id"] for doc in docs]


def insert_all(collection: Collection, *docs: dict) -> None:
    for doc in docs:
        collection.insert(doc)


# ------------------------------------------------------------------- documents and values


def test_it_returns_an_inserted_document_by_id(things):
    stored = things.insert({"_id": "a", "name": "Ada", "age": 36})

    assert stored == {"_id": "a", "name": "Ada", "age": 36}
    assert things.get("a") == {"_id": "a", "name": "Ada", "age": 36}


def test_get_returns_none_for_an_unknown_id(things):
    assert things.get("nobody") is None


def test_it_refuses_a_second_document_with_the_same_id(things):
    things.insert({"_id": "a", "v": 1})

    with pytest.raises(DuplicateKeyError):
        things.insert({"_id": "a", "v": 2})
    assert things.get("a") == {"_id": "a", "v": 1}


def test_a_document_needs_a_string_id(things):
    with pytest.raises(StorageError):
        things.insert({"v": 1})
    with pytest.raises(StorageError):
        things.insert({"_id": 7})


def test_returned_documents_are_fresh_copies(things):
    original = {"_id": "a", "tags": ["x"], "inner": {"n": 1}}
    stored = things.insert(original)
    stored["tags"].append("changed")
    original["inner"]["n"] = 2
    things.get("a")["tags"].append("changed")
    things.find({})[0]["inner"]["n"] = 3

    assert things.get("a") == {"_id": "a", "tags": ["x"], "inner": {"n": 1}}


def test_every_kind_of_value_round_trips(things):
    doc = {
        "_id": "a",
        "text": 'héllo ✓ "quoted" {"$date": 1}',
        "big": 2**62,
        "negative": -5,
        "ratio": 0.1,
        "whole_float": 2.0,
        "yes": True,
        "no": False,
        "nothing": None,
        "list": [1, "two", None, {"three": 3}, [4]],
        "nested": {"deeper": {"deepest": "x"}, "empty": {}},
        "empty_list": [],
    }
    things.insert(doc)

    back = things.get("a")
    assert back == doc
    assert isinstance(back["whole_float"], float) and isinstance(back["big"], int)
    assert back["yes"] is True and back["no"] is False


def test_datetimes_come_back_as_utc_truncated_to_milliseconds(things):
    paris = timezone(timedelta(hours=2))
    written = datetime(2026, 11, 24, 22, 18, 46, 123987, tzinfo=paris)
    stored = things.insert({"_id": "a", "at": written, "list": [written], "in": {"at": written}})

    expected = datetime(2026, 11, 24, 20, 18, 46, 123000, tzinfo=UTC)
    for doc in (stored, things.get("a")):
        assert doc["at"] == expected and doc["list"] == [expected] and doc["in"]["at"] == expected
        assert doc["at"].utcoffset() == timedelta(0)


def test_it_refuses_naive_datetimes_everywhere(things):
    naive = datetime(2030, 1, 1)
    things.insert({"_id": "a", "at": T0})

    with pytest.raises(StorageError):
        things.insert({"_id": "b", "at": naive})
    with pytest.raises(StorageError):
        things.find({"at": {"$lt": naive}})
    with pytest.raises(StorageError):
        things.update_one({"_id": "a"}, {"$set": {"at": naive}})


def test_bytes_round_trip_as_bytes(things):
    blob = bytes(range(256))
    things.insert({"_id": "a", "blob": blob, "list": [b"\x00"], "in": {"b": bytearray(b"xy")}})

    back = things.get("a")
    assert back["blob"] == blob and type(back["blob"]) is bytes
    assert back["list"] == [b"\x00"] and type(back["list"][0]) is bytes
    assert back["in"]["b"] == b"xy" and type(back["in"]["b"]) is bytes


@pytest.mark.parametrize(
    "value",
    [
        {1, 2},
        object(),
        float("nan"),
        float("inf"),
        2**64,
        {"$date": "2030-01-01T00:00:00.000Z"},
        {"a.b": 1},
        {"": 1},
    ],
    ids=["set", "object", "nan", "inf", "huge-int", "dollar-key", "dotted-key", "empty-key"],
)
def test_it_refuses_values_it_cannot_store(things, value):
    with pytest.raises(StorageError):
        things.insert({"_id": "a", "v": value})
    assert things.get("a") is None


# --------------------------------------------------------------------------------- filters


def test_equality_on_a_dotted_path_reaches_into_nested_documents(things):
    insert_all(
        things,
        {"_id": "a", "owner": {"address": {"city": "Lyon"}}},
        {"_id": "b", "owner": {"address": {"city": "Oslo"}}},
        {"_id": "c", "owner": "not a document"},
    )

    assert ids(things.find({"owner.address.city": "Oslo"})) == ["b"]


def test_none_matches_a_null_or_a_missing_field(things):
    insert_all(things, {"_id": "a", "v": None}, {"_id": "b"}, {"_id": "c", "v": 0})

    assert sorted(ids(things.find({"v": None}))) == ["a", "b"]
    assert sorted(ids(things.find({"v": {"$eq": None}}))) == ["a", "b"]


def test_comparisons_on_numbers_mix_ints_and_floats(things):
    insert_all(things, *({"_id": str(n), "v": n} for n in (1, 2.5, 3, 4.0, 5)))

    assert sorted(ids(things.find({"v": {"$gt": 2.5}}))) == ["3", "4.0", "5"]
    assert sorted(ids(things.find({"v": {"$gte": 2.5, "$lt": 4}}))) == ["2.5", "3"]
    assert sorted(ids(things.find({"v": {"$lte": 1}}))) == ["1"]
    assert ids(things.find({"v": 4})) == ["4.0"]


def test_range_queries_on_datetimes_are_chronological(things):
    tokyo = timezone(timedelta(hours=9))
    insert_all(
        things,
        {"_id": "early", "at": T0 - timedelta(days=400)},
        {"_id": "noon", "at": T0},
        {"_id": "later-in-tokyo", "at": (T0 + timedelta(milliseconds=1)).astimezone(tokyo)},
        {"_id": "far", "at": datetime(2100, 1, 1, tzinfo=UTC)},
    )

    assert sorted(ids(things.find({"at": {"$gt": T0}}))) == ["far", "later-in-tokyo"]
    assert sorted(ids(things.find({"at": {"$lte": T0}}))) == ["early", "noon"]
    assert ids(things.find({"at": T0.astimezone(tokyo)})) == ["noon"]


def test_range_queries_on_strings_compare_lexicographically(things):
    insert_all(things, *({"_id": name, "name": name} for name in ("ab", "abc", "b", "B")))

    assert sorted(ids(things.find({"name": {"$gt": "ab", "$lt": "b"}}))) == ["abc"]
    assert ids(things.find({"name": {"$lt": "a"}})) == ["B"]


def test_ranges_only_match_values_of_the_same_type(things):
    insert_all(
        things,
        {"_id": "number", "v": 10},
        {"_id": "string", "v": "10"},
        {"_id": "date", "v": T0},
        {"_id": "bytes", "v": b"10"},
        {"_id": "bool", "v": True},
        {"_id": "document", "v": {"x": 1}},
        {"_id": "null", "v": None},
    )

    assert ids(things.find({"v": {"$gt": 5}})) == ["number"]
    assert ids(things.find({"v": {"$gte": ""}})) == ["string"]
    assert ids(things.find({"v": {"$gt": datetime(1970, 1, 1, tzinfo=UTC)}})) == ["date"]


def test_a_string_never_equals_a_datetime_or_bytes(things):
    insert_all(things, {"_id": "date", "v": T0}, {"_id": "bytes", "v": b"x"})

    assert things.find({"v": '{"$date":"2030-01-01T12:00:00.000Z"}'}) == []
    assert things.find({"v": '{"$binary":"eA=="}'}) == []
    assert ids(things.find({"v": T0})) == ["date"]
    assert ids(things.find({"v": b"x"})) == ["bytes"]


@pytest.mark.mongomock_differs("mongomock takes True for 1 in queries, $pull and unique keys")
def test_a_boolean_never_equals_a_number(database, things):
    database.ensure_indexes("things", [Index.on("v", unique=True)])
    insert_all(things, {"_id": "true", "v": True}, {"_id": "one", "v": 1}, {"_id": "zero", "v": 0})
    things.insert({"_id": "list", "items": [True, 1, False, 0]})

    assert ids(things.find({"v": True})) == ["true"]
    assert ids(things.find({"v": 1})) == ["one"]
    assert ids(things.find({"v": {"$in": [False, 0]}})) == ["zero"]
    assert sorted(ids(things.find({"v": {"$ne": True}}))) == ["list", "one", "zero"]
    assert things.update_one({"_id": "list"}, {"$pull": {"items": 1}})["items"] == [True, False, 0]


def test_in_matches_any_listed_value_and_nin_none_of_them(things):
    insert_all(
        things,
        {"_id": "a", "v": "x"},
        {"_id": "b", "v": "y"},
        {"_id": "c", "v": 3},
        {"_id": "d"},
    )

    assert sorted(ids(things.find({"v": {"$in": ["x", 3]}}))) == ["a", "c"]
    assert sorted(ids(things.find({"v": {"$in": ["y", None]}}))) == ["b", "d"]
    assert sorted(ids(things.find({"v": {"$nin": ["x", 3]}}))) == ["b", "d"]
    assert sorted(ids(things.find({"v": {"$nin": [None]}}))) == ["a", "b", "c"]
    assert things.find({"v": {"$in": []}}) == []
    assert len(things.find({"v": {"$nin": []}})) == 4
    assert sorted(ids(things.find({"_id": {"$in": ["a", "d", "zz"]}}))) == ["a", "d"]


def test_ne_also_matches_documents_without_the_field(things):
    insert_all(things, {"_id": "a", "v": 1}, {"_id": "b", "v": 2}, {"_id": "c"})

    assert sorted(ids(things.find({"v": {"$ne": 1}}))) == ["b", "c"]
    assert sorted(ids(things.find({"v": {"$ne": None}}))) == ["a", "b"]


def test_exists_tells_present_fields_even_null_from_missing_ones(things):
    insert_all(things, {"_id": "a", "v": None}, {"_id": "b", "v": 0}, {"_id": "c"})

    assert sorted(ids(things.find({"v": {"$exists": True}}))) == ["a", "b"]
    assert ids(things.find({"v": {"$exists": False}})) == ["c"]


def test_all_conditions_must_hold(things):
    insert_all(
        things,
        {"_id": "a", "state": "due", "at": T0},
        {"_id": "b", "state": "due", "at": T0 + timedelta(hours=1)},
        {"_id": "c", "state": "sent", "at": T0},
    )

    found = things.find({"state": "due", "at": {"$gte": T0, "$lt": T0 + timedelta(minutes=1)}})
    assert ids(found) == ["a"]


@pytest.mark.parametrize(
    "bad_filter",
    [
        {"$or": [{"a": 1}, {"b": 2}]},
        {"$and": [{"a": 1}]},
        {"a": {"$regex": "^x"}},
        {"a": {"$elemMatch": {"b": 1}}},
        {"a": {"b": 1}},
        {"a": [1, 2]},
        {"a": {"$in": "not a list"}},
        {"a": {"$gt": None}},
        {"a": {"$exists": 1}},
        {"a') OR 1=1 --": 1},
        {"a\n": 1},
        {"a..b": 1},
        {"_id": 5},
        {"_id.x": "y"},
    ],
    ids=[
        "or",
        "and",
        "regex",
        "elemMatch",
        "embedded-equality",
        "array-equality",
        "in-without-list",
        "gt-null",
        "exists-non-bool",
        "injection",
        "trailing-newline",
        "empty-segment",
        "non-string-id",
        "dotted-id",
    ],
)
def test_it_refuses_filters_outside_the_contract(things, bad_filter):
    with pytest.raises(StorageError):
        things.find(bad_filter)


# --------------------------------------------------------------------------- sort and limit


def test_sort_puts_missing_and_null_first_ascending_and_last_descending(things):
    insert_all(
        things,
        {"_id": "two", "rank": 2},
        {"_id": "missing"},
        {"_id": "one", "rank": 1},
        {"_id": "null", "rank": None},
    )

    ascending = ids(things.find({}, sort=[("rank", 1)]))
    descending = ids(things.find({}, sort=[("rank", -1)]))
    assert ascending[2:] == ["one", "two"] and set(ascending[:2]) == {"missing", "null"}
    assert descending[:2] == ["two", "one"] and set(descending[2:]) == {"missing", "null"}


def test_sort_by_several_fields_and_by_datetimes(things):
    insert_all(
        things,
        {"_id": "a", "group": "x", "at": T0 + timedelta(seconds=2)},
        {"_id": "b", "group": "y", "at": T0},
        {"_id": "c", "group": "x", "at": T0 + timedelta(milliseconds=1)},
        {"_id": "d", "group": "y", "at": T0 + timedelta(days=1)},
    )

    assert ids(things.find({}, sort=[("group", 1), ("at", -1)])) == ["a", "c", "d", "b"]
    assert ids(things.find({}, sort=[("at", 1)])) == ["b", "c", "a", "d"]


def test_limit_caps_the_results_and_zero_gives_none(things):
    insert_all(things, *({"_id": f"d{n}", "n": n} for n in range(5)))

    assert ids(things.find({}, sort=[("n", -1)], limit=2)) == ["d4", "d3"]
    assert things.find({}, limit=0) == []
    assert len(things.find({}, limit=10)) == 5
    with pytest.raises(StorageError):
        things.find({}, limit=-1)


def test_find_one_returns_the_first_match_in_sort_order(things):
    insert_all(things, *({"_id": f"d{n}", "n": n, "odd": n % 2 == 1} for n in range(5)))

    assert things.find_one({"odd": True}, sort=[("n", -1)])["_id"] == "d3"
    assert things.find_one({"n": {"$gt": 10}}) is None


def test_count_counts_the_matches(things):
    insert_all(things, *({"_id": f"d{n}", "n": n} for n in range(5)))

    assert things.count({}) == 5
    assert things.count({"n": {"$gte": 3}}) == 2
    assert things.count({"n": "3"}) == 0


# --------------------------------------------------------------------------------- updates


def test_update_one_is_a_compare_and_set_that_returns_the_new_document(things):
    things.insert({"_id": "job", "state": "free", "tries": 0})

    claimed = things.update_one(
        {"_id": "job", "state": "free"}, {"$set": {"state": "claimed"}, "$inc": {"tries": 1}}
    )
    again = things.update_one({"_id": "job", "state": "free"}, {"$set": {"state": "claimed"}})

    assert claimed == {"_id": "job", "state": "claimed", "tries": 1}
    assert again is None
    assert things.get("job") == claimed


def test_update_one_changes_only_one_of_several_matches(things):
    insert_all(things, *({"_id": f"d{n}", "state": "free"} for n in range(3)))

    things.update_one({"state": "free"}, {"$set": {"state": "taken"}})

    assert things.count({"state": "taken"}) == 1


def test_update_one_without_a_match_changes_nothing(things):
    things.insert({"_id": "a", "v": 1})

    assert things.update_one({"_id": "b"}, {"$set": {"v": 2}}) is None
    assert things.find({}) == [{"_id": "a", "v": 1}]


def test_set_replaces_values_and_creates_nested_documents_on_dotted_paths(things):
    things.insert({"_id": "a", "v": 1, "settings": {"keep": True}})

    after = things.update_one(
        {"_id": "a"}, {"$set": {"v": "one", "settings.mail.to": "x@y.z", "at": T0}}
    )

    assert after == {
        "_id": "a",
        "v": "one",
        "settings": {"keep": True, "mail": {"to": "x@y.z"}},
        "at": T0,
    }


def test_unset_removes_fields_and_ignores_missing_ones(things):
    things.insert({"_id": "a", "v": 1, "inner": {"x": 1, "y": 2}})

    after = things.update_one({"_id": "a"}, {"$unset": {"v": "", "inner.x": "", "nope.deep": ""}})

    assert after == {"_id": "a", "inner": {"y": 2}}


def test_inc_adds_to_numbers_and_starts_missing_fields_from_zero(things):
    things.insert({"_id": "a", "n": 1, "f": 0.5})

    after = things.update_one({"_id": "a"}, {"$inc": {"n": 2, "f": 1, "new": -3, "stats.sent": 1}})

    assert after == {"_id": "a", "n": 3, "f": 1.5, "new": -3, "stats": {"sent": 1}}
    assert isinstance(after["n"], int)


def test_push_appends_one_value_creating_the_array_if_needed(things):
    things.insert({"_id": "a", "log": ["first"]})

    things.update_one({"_id": "a"}, {"$push": {"log": "second", "outbox": {"id": "e1"}}})
    after = things.update_one({"_id": "a"}, {"$push": {"log": ["a", "list"]}})

    assert after == {
        "_id": "a",
        "log": ["first", "second", ["a", "list"]],
        "outbox": [{"id": "e1"}],
    }


def test_push_each_appends_several_values_in_one_write(things):
    things.insert({"_id": "a", "outbox": [{"id": "e0"}]})

    after = things.update_one({"_id": "a"},
                              {"$push": {"outbox": {"$each": [{"id": "e1"}, {"id": "e2"}]}}})

    assert after["outbox"] == [{"id": "e0"}, {"id": "e1"}, {"id": "e2"}]


def test_push_each_takes_only_a_list(things):
    things.insert({"_id": "a"})
    with pytest.raises(StorageError):
        things.update_one({"_id": "a"}, {"$push": {"log": {"$each": "abc"}}})
    with pytest.raises(StorageError):
        things.update_one({"_id": "a"}, {"$push": {"log": {"$each": [1], "$slice": 2}}})


def test_pull_removes_every_element_equal_to_a_scalar(things):
    things.insert({"_id": "a", "tags": ["x", "y", "x", 1, 1.0, "1"]})

    assert things.update_one({"_id": "a"}, {"$pull": {"tags": "x"}})["tags"] == ["y", 1, 1.0, "1"]
    assert things.update_one({"_id": "a"}, {"$pull": {"tags": 1}})["tags"] == ["y", "1"]


def test_pull_with_in_removes_any_listed_scalar(things):
    things.insert({"_id": "a", "tags": ["x", "y", "z"]})

    after = things.update_one({"_id": "a"}, {"$pull": {"tags": {"$in": ["x", "z", "nope"]}}})

    assert after["tags"] == ["y"]


def test_pull_removes_subdocuments_matching_every_condition(things):
    outbox = [
        {"id": "e1", "state": "sent"},
        {"id": "e2", "state": "pending"},
        {"id": "e3", "state": "sent"},
        {"id": "e4", "state": "sent"},
        "not a document",
    ]
    things.insert({"_id": "a", "outbox": outbox})

    after = things.update_one(
        {"_id": "a"}, {"$pull": {"outbox": {"state": "sent", "id": {"$in": ["e1", "e2", "e3"]}}}}
    )

    assert after["outbox"] == [
        {"id": "e2", "state": "pending"},
        {"id": "e4", "state": "sent"},
        "not a document",
    ]


def test_pull_from_a_missing_array_does_nothing(things):
    things.insert({"_id": "a"})

    assert things.update_one({"_id": "a"}, {"$pull": {"tags": "x"}}) == {"_id": "a"}


def test_one_update_may_combine_operators(things):
    things.insert({"_id": "a", "state": "draft", "outbox": [], "old": 1, "n": 0})

    after = things.update_one(
        {"_id": "a", "state": "draft"},
        {
            "$set": {"state": "armed"},
            "$unset": {"old": ""},
            "$inc": {"n": 1},
            "$push": {"outbox": {"id": "e1", "type": "armed"}},
        },
    )

    assert after == {
        "_id": "a",
        "state": "armed",
        "outbox": [{"id": "e1", "type": "armed"}],
        "n": 1,
    }


@pytest.mark.parametrize(
    "bad_update",
    [
        {"$set": {"a": 1}, "$unset": {"a": ""}},
        {"$set": {"a": {"b": 1}, "a.b": 2}},
        {"$set": {"a": 1}, "$inc": {"a.b": 1}},
        {"$rename": {"a": "b"}},
        {"a": 1},
        {},
        {"$set": {"_id": "other"}},
        {"$inc": {"n": "1"}},
        {"$inc": {"n": True}},
        {"$set": {"a.$": 1}},
    ],
    ids=[
        "same-path-twice",
        "parent-and-child",
        "across-operators",
        "unknown-operator",
        "replacement-document",
        "empty",
        "change-id",
        "inc-by-string",
        "inc-by-bool",
        "positional-operator",
    ],
)
def test_it_refuses_updates_outside_the_contract(things, bad_update):
    things.insert({"_id": "a", "n": 1})

    with pytest.raises(StorageError):
        things.update_one({"_id": "a"}, bad_update)
    assert things.get("a") == {"_id": "a", "n": 1}


@pytest.mark.mongomock_differs("mongomock raises TypeError or silently ignores these")
@pytest.mark.parametrize(
    "clash",
    [
        {"$inc": {"text": 1}},
        {"$push": {"text": 1}},
        {"$pull": {"text": "x"}},
        {"$set": {"text.inner": 1}},
    ],
    ids=["inc-a-string", "push-onto-a-string", "pull-from-a-string", "set-inside-a-string"],
)
def test_type_clashes_in_an_update_raise_storage_error(things, clash):
    things.insert({"_id": "a", "text": "hello"})

    with pytest.raises(StorageError):
        things.update_one({"_id": "a"}, clash)
    assert things.get("a") == {"_id": "a", "text": "hello"}


def test_update_many_updates_every_match_and_counts_the_changed_ones(things):
    insert_all(
        things,
        {"_id": "a", "state": "due", "n": 0},
        {"_id": "b", "state": "due", "n": 0},
        {"_id": "c", "state": "done", "n": 0},
    )

    assert things.update_many({"state": "due"}, {"$set": {"state": "late"}, "$inc": {"n": 1}}) == 2
    assert things.update_many({}, {"$set": {"state": "late"}}) == 1
    assert things.update_many({"state": "nope"}, {"$set": {"x": 1}}) == 0
    assert sorted((d["_id"], d["n"]) for d in things.find({"state": "late"})) == [
        ("a", 1),
        ("b", 1),
        ("c", 0),
    ]


def test_update_many_refuses_set_on_insert(things):
    with pytest.raises(StorageError):
        things.update_many({}, {"$setOnInsert": {"a": 1}})


# --------------------------------------------------------------------------------- upserts


def test_an_upsert_inserts_the_filters_equalities_then_set_on_insert_then_the_update(things):
    created = things.update_one(
        {"_id": "k1", "owner": "u1", "meta.kind": "key", "n": {"$gt": 5}},
        {"$setOnInsert": {"created": T0}, "$set": {"state": "new"}, "$inc": {"uses": 1}},
        upsert=True,
    )

    assert created == {
        "_id": "k1",
        "owner": "u1",
        "meta": {"kind": "key"},
        "created": T0,
        "state": "new",
        "uses": 1,
    }
    assert things.get("k1") == created


def test_an_upsert_without_an_id_makes_a_uuid_string(things):
    created = things.update_one({"email": "a@b.c"}, {"$set": {"seen": True}}, upsert=True)

    assert uuid.UUID(created["_id"]).version == 4
    assert things.get(created["_id"]) == created


def test_an_upsert_that_matches_updates_and_ignores_set_on_insert(things):
    things.insert({"_id": "a", "owner": "u1", "uses": 1, "created": T0})

    after = things.update_one(
        {"_id": "a", "owner": "u1"},
        {"$setOnInsert": {"created": T0 + timedelta(days=1)}, "$inc": {"uses": 1}},
        upsert=True,
    )

    assert after == {"_id": "a", "owner": "u1", "uses": 2, "created": T0}
    assert things.count({}) == 1


def test_an_upsert_whose_id_exists_but_does_not_match_raises_duplicate_key_error(things):
    things.insert({"_id": "a", "state": "claimed"})

    with pytest.raises(DuplicateKeyError):
        things.update_one(
            {"_id": "a", "state": "free"}, {"$set": {"state": "claimed"}}, upsert=True
        )
    assert things.get("a") == {"_id": "a", "state": "claimed"}


def test_set_on_insert_without_upsert_is_ignored(things):
    things.insert({"_id": "a"})

    assert things.update_one({"_id": "a"}, {"$setOnInsert": {"x": 1}}) == {"_id": "a"}


# --------------------------------------------------------------------------------- deletes


def test_delete_one_deletes_a_single_match(things):
    insert_all(things, *({"_id": f"d{n}", "kind": "temp"} for n in range(3)))

    assert things.delete_one({"kind": "temp"}) is True
    assert things.count({}) == 2
    assert things.delete_one({"kind": "other"}) is False


def test_delete_many_deletes_every_match(things):
    insert_all(things, *({"_id": f"d{n}", "n": n} for n in range(5)))

    assert things.delete_many({"n": {"$lt": 3}}) == 3
    assert sorted(ids(things.find({}))) == ["d3", "d4"]
    assert things.delete_many({"n": {"$lt": 3}}) == 0


# --------------------------------------------------------------------------------- indexes


def test_it_refuses_a_second_document_with_the_same_unique_key(database, things):
    database.ensure_indexes("things", [Index.on("email", unique=True)])
    things.insert({"_id": "a", "email": "x@y.z"})

    with pytest.raises(DuplicateKeyError):
        things.insert({"_id": "b", "email": "x@y.z"})
    assert things.get("b") is None


def test_an_update_that_breaks_a_unique_key_raises_duplicate_key_error(database, things):
    database.ensure_indexes("things", [Index.on("email", unique=True)])
    insert_all(things, {"_id": "a", "email": "a@x"}, {"_id": "b", "email": "b@x"})

    with pytest.raises(DuplicateKeyError):
        things.update_one({"_id": "b"}, {"$set": {"email": "a@x"}})
    with pytest.raises(DuplicateKeyError):
        things.update_one({"_id": "new"}, {"$set": {"email": "a@x"}}, upsert=True)
    assert things.get("b") == {"_id": "b", "email": "b@x"}
    assert things.get("new") is None


def test_unique_keys_compare_by_type(database, things):
    database.ensure_indexes("things", [Index.on("key", unique=True)])

    insert_all(
        things,
        {"_id": "a", "key": "1"},
        {"_id": "b", "key": 1},
        {"_id": "c", "key": T0},
        {"_id": "d", "key": '{"$date":"2030-01-01T12:00:00.000Z"}'},
        {"_id": "e", "key": b"1"},
    )
    assert things.count({}) == 5


def test_unique_indexes_ignore_documents_without_the_field(database, things):
    database.ensure_indexes("things", [Index.on("email", unique=True)])

    insert_all(things, {"_id": "a"}, {"_id": "b"}, {"_id": "c", "email": "x"})
    assert things.count({}) == 3


def test_a_null_in_a_unique_field_is_a_value_like_any_other(database, things):
    database.ensure_indexes("things", [Index.on("email", unique=True)])
    things.insert({"_id": "a", "email": None})

    with pytest.raises(DuplicateKeyError):
        things.insert({"_id": "b", "email": None})


def test_a_unique_nested_field_works_like_a_top_level_one(database, things):
    database.ensure_indexes("things", [Index.on("auth.subject", unique=True)])
    things.insert({"_id": "a", "auth": {"subject": "s1"}})

    with pytest.raises(DuplicateKeyError):
        things.insert({"_id": "b", "auth": {"subject": "s1"}})
    things.insert({"_id": "c", "auth": {"subject": "s2"}})


def test_compound_unique_indexes_clash_only_on_the_whole_key(database, things):
    database.ensure_indexes("things", [Index.on("consumer", "event_id", unique=True)])
    insert_all(
        things,
        {"_id": "1", "consumer": "mailer", "event_id": "e1"},
        {"_id": "2", "consumer": "mailer", "event_id": "e2"},
        {"_id": "3", "consumer": "billing", "event_id": "e1"},
        {"_id": "4", "consumer": "billing"},
        {"_id": "5", "consumer": "billing"},
    )

    with pytest.raises(DuplicateKeyError):
        things.insert({"_id": "6", "consumer": "mailer", "event_id": "e1"})


def test_ensure_indexes_can_be_called_again_and_again(database, things):
    indexes = [
        Index.on("email", unique=True),
        Index.on("state", "-due_at"),
        Index.on("seen_at", expire_after_seconds=60),
    ]
    for _ in range(3):
        database.ensure_indexes("things", indexes)
    things.insert({"_id": "a", "email": "x", "state": "s", "due_at": T0, "seen_at": T0})

    assert things.find({"state": "s"}, sort=[("due_at", -1)])[0]["_id"] == "a"
    assert things.purge_expired(T0 + timedelta(seconds=61)) == 1


def test_a_unique_index_cannot_be_built_over_existing_duplicates(database, things):
    insert_all(things, {"_id": "a", "email": "x"}, {"_id": "b", "email": "x"})

    with pytest.raises(StorageError):
        database.ensure_indexes("things", [Index.on("email", unique=True)])


def test_index_declarations_are_checked():
    with pytest.raises(StorageError):
        Index(fields=())
    with pytest.raises(StorageError):
        Index(fields=(("a", 2),))
    with pytest.raises(StorageError):
        Index(fields=(("a", True),))
    with pytest.raises(StorageError):
        Index.on("a", "b", expire_after_seconds=5)
    assert Index.on("a", "-b", unique=True) == Index((("a", 1), ("b", -1)), unique=True)


# ---------------------------------------------------------------------------------- expiry


def test_purge_expired_deletes_documents_older_than_their_ttl(database, things):
    database.ensure_indexes("things", [Index.on("seen_at", expire_after_seconds=3600)])
    insert_all(
        things,
        {"_id": "old", "seen_at": T0 - timedelta(hours=2)},
        {"_id": "just-expired", "seen_at": T0 - timedelta(hours=1, milliseconds=1)},
        {"_id": "exactly-an-hour", "seen_at": T0 - timedelta(hours=1)},
        {"_id": "fresh", "seen_at": T0},
        {"_id": "no-date", "seen_at": "yesterday"},
        {"_id": "missing"},
    )

    assert things.purge_expired(T0) == 2
    assert sorted(ids(things.find({}))) == ["exactly-an-hour", "fresh", "missing", "no-date"]
    assert things.purge_expired(T0) == 0


def test_purge_expired_does_nothing_without_a_ttl_index(database, things):
    database.ensure_indexes("things", [Index.on("seen_at")])
    things.insert({"_id": "old", "seen_at": T0 - timedelta(days=365)})

    assert things.purge_expired(T0) == 0
    assert things.count({}) == 1


def test_purge_expired_wants_an_aware_datetime(database, things):
    database.ensure_indexes("things", [Index.on("seen_at", expire_after_seconds=1)])

    with pytest.raises(StorageError):
        things.purge_expired(datetime(2030, 1, 1))


# ------------------------------------------------------------------------ the database


def test_collections_are_separate_and_cached(database):
    database.collection("one").insert({"_id": "a"})

    assert database.collection("two").get("a") is None
    assert database.collection("one") is database.collection("one")


@pytest.mark.parametrize("name", ["", "has space", "a;drop", "sqlite_master", "x" * 64, "1abc"])
def test_it_refuses_odd_collection_names(database, name):
    with pytest.raises(StorageError):
        database.collection(name).insert({"_id": "a"})


def test_it_describes_where_the_data_lives(database, backend):
    description = database.describe()

    expected = "embedded SQLite at" if backend == "sqlite" else "MongoDB database jicm_"
    assert description.startswith(expected)


# Grouped writes ------------------------------------------------------------------------------


def test_grouped_writes_are_each_a_compare_and_set_and_all_kept(database, things):
    others = database.collection("others")
    things.insert({"_id": "a", "n": 1})
    with things.group_writes():
        assert things.update_one({"_id": "a", "n": 1}, {"$inc": {"n": 1}})["n"] == 2
        assert things.update_one({"_id": "a", "n": 1}, {"$inc": {"n": 1}}) is None, "n is 2 now"
        things.insert({"_id": "b"})
        others.insert({"_id": "c"})
        with things.group_writes():  # a group inside a group is part of it
            things.delete_one({"_id": "b"})
        assert things.get("a")["n"] == 2, "a group reads its own writes"
    assert things.get("a")["n"] == 2
    assert things.get("b") is None
    assert others.get("c") == {"_id": "c"}


def test_a_write_that_fails_in_a_group_undoes_only_itself(database, things):
    things.insert({"_id": "a"})
    with things.group_writes():
        things.insert({"_id": "b"})
        with pytest.raises(DuplicateKeyError):
            things.insert({"_id": "a", "second": True})
        things.insert({"_id": "c"})
    assert sorted(ids(things.find({}))) == ["a", "b", "c"]
    assert things.get("a") == {"_id": "a"}
