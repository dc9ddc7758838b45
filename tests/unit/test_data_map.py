"""The data map (docs/data-map.yaml) is complete in shape: every collection a service
declares is listed, and every field says its category (in the policy's words), purpose,
legal basis, retention and whether export and erasure cover it. That stored documents hold
no field the map leaves out is checked end to end (tests/e2e/test_privacy_story.py)."""

from __future__ import annotations

import importlib

import pytest

from tests import data_map

SERVICES = ("accounts", "billing", "delivery", "privacy", "scheduler", "vault")


@pytest.mark.parametrize("service", SERVICES)
def test_every_collection_a_service_declares_is_in_the_map(service):
    storage = importlib.import_module(f"services.{service}.storage")
    declared = set(storage.INDEXES)
    assert declared - set(data_map.collections(service)) == set()


@pytest.mark.parametrize("service", SERVICES)
def test_every_field_says_what_it_is_why_we_keep_it_for_how_long_and_what_erasure_does(
        service):
    vocabulary = data_map.raw()["vocabulary"]
    for collection in data_map.collections(service):
        for field in data_map.fields(service, collection):
            where = f"{service}.{collection}.{field.path}"
            assert field.category in vocabulary["categories"], where
            assert field.legal_basis in vocabulary["legal_bases"], where
            assert field.erasure in vocabulary["erasure"], where
            assert isinstance(field.export, bool), where
            assert field.purpose and field.retention, where


def test_the_categories_are_the_policys_own_words():
    with open(data_map.REPO / "services/privacy/notices/2024-04-29.txt") as policy:
        text = policy.read().lower()
    for category in ("contact information", "account credentials", "commercial information",
                     "communications", "device identifiers", "preference information"):
        assert category in text
    assert set(data_map.raw()["vocabulary"]["categories"]) == {
        "contact", "credentials", "commercial", "communications", "device", "preferences",
        "none"}


def test_the_path_rules_cover_nested_fields_and_run_time_keys():
    assert data_map.paths_of({"a": {"b": 1}, "c": [{"d": 2}], "e": [], "f": {}}) == {
        "a.b", "c[].d", "e", "f"}
    assert data_map.covers("read_tokens.*.hash", "read_tokens.r1.hash")
    assert data_map.covers("outbox", "outbox[].data.user_id")
    assert data_map.covers("recipients[].email", "recipients[].email")
    assert not data_map.covers("recipients[].email", "recipients[].name")
    assert not data_map.covers("email", "email_key")
