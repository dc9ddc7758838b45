"""The vault's cryptography: fields bound to their place, data keys bound to their user
and KEK, keys configured from the environment or a key file, a bounded key cache."""

from __future__ import annotations

import base64
import os
import time
from datetime import UTC, datetime

import pytest

from services.vault.crypto import DataKey, DecryptionFailed, field_ad, new_data_key_bytes
from services.vault.keys import (
    DataKeyCache,
    DataKeys,
    Kek,
    Keyring,
    MissingDataKey,
    UnknownKek,
    keyring_from_settings,
)
from services.vault.storage import DATA_KEYS, INDEXES
from shared.config import ConfigError, load_settings
from shared.storage import open_database

NOW = datetime(2030, 1, 1, tzinfo=UTC)
PLACE = {"user_id": "user-a", "message_id": "msg-1", "rev": 0, "field": "body"}


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.fixture
def key() -> DataKey:
    return DataKey(new_data_key_bytes())


# Fields -------------------------------------------------------------------------------


def test_a_sealed_field_opens_in_its_own_place_only(key):
    sealed = key.seal("the safe code is 4921", **PLACE)
    assert key.open(sealed, **PLACE) == "the safe code is 4921"
    assert b"4921" not in sealed


@pytest.mark.parametrize(
    "moved",
    [
        {"user_id": "user-b"},  # copied into another user's message
        {"message_id": "msg-2"},  # moved to another message of the same user
        {"rev": 1},  # replayed from an older revision
        {"field": "subject"},  # swapped with another field
        {"field": "recipient.r1.email"},
    ],
)
def test_a_ciphertext_moved_elsewhere_fails_to_decrypt(key, moved):
    sealed = key.seal("for Grace only", **PLACE)
    with pytest.raises(DecryptionFailed):
        key.open(sealed, **{**PLACE, **moved})


def test_another_users_data_key_cannot_open_a_field(key):
    sealed = key.seal("private", **PLACE)
    with pytest.raises(DecryptionFailed):
        DataKey(new_data_key_bytes()).open(sealed, **PLACE)


def test_a_tampered_ciphertext_fails_to_decrypt(key):
    sealed = bytearray(key.seal("do not touch", **PLACE))
    sealed[-1] ^= 1
    with pytest.raises(DecryptionFailed):
        key.open(bytes(sealed), **PLACE)


def test_the_same_text_seals_differently_every_time(key):
    assert key.seal("same", **PLACE) != key.seal("same", **PLACE)


def test_associated_data_cannot_be_forged_with_separators():
    with pytest.raises(ValueError):
        field_ad("user-a|msg=x", "msg-1", 0, "body")
    with pytest.raises(ValueError):
        field_ad("user-a", "msg-1", -1, "body")


def test_a_data_key_never_shows_its_bytes(key):
    assert repr(key) == "DataKey(<hidden>)"


# Wrapping ----------------------------------------------------------------------------------


def test_a_data_key_is_wrapped_for_one_user_under_one_kek():
    keyring = Keyring(Kek("1", os.urandom(32)))
    secret = new_data_key_bytes()
    wrapped, kek_id = keyring.wrap("user-a", secret)
    assert kek_id == "1"
    assert secret not in wrapped
    assert keyring.unwrap("user-a", wrapped, "1") == secret
    with pytest.raises(DecryptionFailed):
        keyring.unwrap("user-b", wrapped, "1")


def test_an_old_kek_still_unwraps_and_an_unconfigured_one_is_named():
    old, new = Kek("1", os.urandom(32)), Kek("2", os.urandom(32))
    wrapped, _ = Keyring(old).wrap("user-a", b"k" * 32)
    assert Keyring(new, [old]).unwrap("user-a", wrapped, "1") == b"k" * 32
    with pytest.raises(UnknownKek, match="'1'"):
        Keyring(new).unwrap("user-a", wrapped, "1")


def test_a_kek_id_is_bound_into_the_wrapping():
    one, two = os.urandom(32), os.urandom(32)
    keyring = Keyring(Kek("2", two), [Kek("1", one), Kek("3", one)])
    wrapped, _ = Keyring(Kek("1", one)).wrap("user-a", b"k" * 32)
    with pytest.raises(DecryptionFailed):
        keyring.unwrap("user-a", wrapped, "3")  # same key bytes, another id


# Configuration --------------------------------------------------------------------------------


def test_the_kek_comes_from_the_environment_with_its_id_and_old_keks():
    current, old = os.urandom(32), os.urandom(32)
    settings = load_settings({"JICM_VAULT_KEK": b64(current), "JICM_VAULT_KEK_ID": "2024-b",
                              "JICM_VAULT_OLD_KEKS": f"2024-a:{b64(old)}"})
    keyring = keyring_from_settings(settings)
    assert keyring.current == Kek("2024-b", current)
    assert keyring.known_ids == ["2024-a", "2024-b"]


def test_a_key_file_gives_the_current_kek_first_and_old_ones_after(tmp_path):
    current, old = os.urandom(32), os.urandom(32)
    key_file = tmp_path / "kek"
    key_file.write_text(f"# rotated in May\n7:{b64(current)}\n6:{b64(old)}\n")
    settings = load_settings({"JICM_VAULT_KEK_FILE": str(key_file),
                              "JICM_VAULT_KEK": b64(os.urandom(32))})
    keyring = keyring_from_settings(settings)
    assert keyring.current == Kek("7", current)
    assert keyring.known_ids == ["6", "7"]


@pytest.mark.parametrize(
    "environment, problem",
    [
        ({"JICM_VAULT_KEK": b64(b"short")}, "JICM_VAULT_KEK"),
        ({"JICM_VAULT_KEK": b64(os.urandom(48))}, "exactly 32 bytes"),
        ({"JICM_VAULT_KEK_ID": "has space"}, "JICM_VAULT_KEK_ID"),
        ({"JICM_VAULT_OLD_KEKS": b64(os.urandom(32))}, "id:base64"),
        ({"JICM_VAULT_OLD_KEKS": f"a:{b64(os.urandom(32))},b:nope"}, "entry 2"),
    ],
)
def test_a_malformed_kek_setting_is_refused_and_named(environment, problem):
    with pytest.raises(ConfigError, match=problem):
        load_settings(environment)


@pytest.mark.parametrize(
    "content, problem",
    [(None, "cannot be read"), ("", "holds no key"), ("x:notbase64", "entry 1"),
     (f"1:{b64(os.urandom(32))}\n{b64(os.urandom(32))}\n", "needs its id")],
)
def test_a_bad_key_file_is_refused_and_named(tmp_path, content, problem):
    key_file = tmp_path / "kek"
    if content is not None:
        key_file.write_text(content)
    settings = load_settings({"JICM_VAULT_KEK_FILE": str(key_file)})
    with pytest.raises(ConfigError, match=problem):
        keyring_from_settings(settings)


def test_the_same_kek_id_twice_is_refused():
    settings = load_settings({"JICM_VAULT_KEK": b64(os.urandom(32)), "JICM_VAULT_KEK_ID": "1",
                              "JICM_VAULT_OLD_KEKS": f"1:{b64(os.urandom(32))}"})
    with pytest.raises(ConfigError, match="repeated: 1"):
        keyring_from_settings(settings)


def test_the_vault_needs_a_kek_inline_or_as_a_file():
    with pytest.raises(ConfigError, match="JICM_VAULT_KEK or JICM_VAULT_KEK_FILE: missing"):
        load_settings({}, require=("JICM_VAULT_KEK|JICM_VAULT_KEK_FILE",))


def test_a_kek_is_never_shown_in_the_settings_repr():
    secret = b64(os.urandom(32))
    settings = load_settings({"JICM_VAULT_KEK": secret, "JICM_VAULT_OLD_KEKS": f"0:{secret}"})
    assert secret not in repr(settings)
    assert secret not in repr(keyring_from_settings(settings).current)


# Data keys ------------------------------------------------------------------------------------


@pytest.fixture
def data_keys(tmp_path):
    db = open_database("vault", mongo_uri=None, data_dir=tmp_path)
    db.ensure_indexes(DATA_KEYS, INDEXES[DATA_KEYS])
    yield DataKeys(db.collection(DATA_KEYS), Keyring(Kek("1", os.urandom(32))), DataKeyCache())
    db.close()


def test_a_user_gets_one_data_key_stored_only_wrapped(data_keys):
    key = data_keys.get_or_create("user-a", NOW)
    sealed = key.seal("hello", **PLACE)
    stored = data_keys.collection.get("user-a")
    assert stored["kek_id"] == "1"
    assert len(stored["wrapped"]) == 32 + 24 + 16  # key, nonce, tag: nothing in clear
    data_keys.cache.forget("user-a")
    assert data_keys.get_or_create("user-a", NOW).open(sealed, **PLACE) == "hello"
    assert data_keys.collection.count({}) == 1


class MissThenRace:
    """A collection whose first lookup misses while another writer stores its key."""

    def __init__(self, collection, competitor: DataKeys) -> None:
        self.collection = collection
        self.competitor = competitor

    def get(self, user_id):
        if self.competitor is not None:
            competitor, self.competitor = self.competitor, None
            competitor.get_or_create(user_id, NOW)
            return None
        return self.collection.get(user_id)

    def insert(self, doc):
        return self.collection.insert(doc)


def test_two_first_messages_at_once_share_one_data_key(data_keys):
    competitor = DataKeys(data_keys.collection, data_keys.keyring, DataKeyCache())
    racing = DataKeys(MissThenRace(data_keys.collection, competitor), data_keys.keyring,
                      DataKeyCache())
    ours = racing.get_or_create("user-a", NOW)
    theirs = competitor.get("user-a")
    assert ours.open(theirs.seal("same key", **PLACE), **PLACE) == "same key"
    assert data_keys.collection.count({}) == 1


def test_a_shredded_data_key_is_gone_from_the_store_and_the_cache(data_keys):
    data_keys.get_or_create("user-a", NOW)
    assert data_keys.shred("user-a") is True
    with pytest.raises(MissingDataKey):
        data_keys.get("user-a")
    assert data_keys.shred("user-a") is False


def test_the_cache_is_bounded_and_forgets_old_entries(monkeypatch):
    cache = DataKeyCache(size=2, seconds=60)
    keys = [DataKey(new_data_key_bytes()) for _ in range(3)]
    for number, key in enumerate(keys):
        cache.put(f"user-{number}", key)
    assert cache.get("user-0") is None
    assert cache.get("user-2") is keys[2]
    # A minute and a second later, whatever the machine's monotonic clock reads now.
    later = time.monotonic() + 61
    monkeypatch.setattr("services.vault.keys.time.monotonic", lambda: later)
    assert cache.get("user-2") is None


def test_the_vault_process_stops_at_once_naming_an_unreadable_key_file(
    tmp_path, monkeypatch, capsys
):
    from shared import runner

    for name, value in {"JICM_ENV": "test", "JICM_DATA_DIR": str(tmp_path / "data"),
                        "JICM_VAULT_KEK_FILE": str(tmp_path / "missing")}.items():
        monkeypatch.setenv(name, value)
    assert runner.main(["runner", "vault"]) == 2
    assert "JICM_VAULT_KEK_FILE" in capsys.readouterr().err
