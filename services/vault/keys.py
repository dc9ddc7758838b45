"""The key hierarchy: key-encryption keys from configuration, one data key per user.

- A **KEK** (key-encryption key) comes from configuration: `JICM_VAULT_KEK` (base64 of 32
  bytes) with its id `JICM_VAULT_KEK_ID`, or a key file `JICM_VAULT_KEK_FILE`. Older KEKs,
  kept only to unwrap data keys until the rotation command has re-wrapped them, come from
  `JICM_VAULT_OLD_KEKS` or the key file's further lines.
- A **data key** is 32 random bytes per user, created with the user's first message and
  stored only wrapped: XChaCha20-Poly1305 under the current KEK, with associated data
  naming the purpose, the user and the KEK id, next to that KEK id. Rotating the KEK
  re-wraps data keys; messages are never re-encrypted for it.
- Erasing a user deletes the data key first (crypto-shredding): whatever copy of the
  messages survives somewhere, a backup say, can no longer be opened.

Unwrapped data keys are kept in memory for a few minutes (a bounded LRU), so a burst of
reads does not unwrap the same key again and again. They are never logged.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import nacl.exceptions
import nacl.secret

from services.vault.crypto import DataKey, DecryptionFailed, new_data_key_bytes
from shared.config import ConfigError, Settings, decode_kek, parse_keks
from shared.storage import Collection, DuplicateKeyError

WRAP_AD = "jicm/dek/v1|user={user}|kek={kek}"

CACHE_SIZE = 1024
CACHE_SECONDS = 300.0


class UnknownKek(Exception):
    """A data key is wrapped by a KEK this process was not given."""

    def __init__(self, kek_id: str) -> None:
        super().__init__(f"data key wrapped by KEK {kek_id!r}, which is not configured")
        self.kek_id = kek_id


class MissingDataKey(Exception):
    """The user has no data key: no message was ever written, or the user was erased."""


@dataclass(frozen=True)
class Kek:
    """One key-encryption key and its id."""

    id: str
    key: bytes = field(repr=False)


class Keyring:
    """The current KEK (wraps new keys) and the older ones (only unwrap)."""

    def __init__(self, current: Kek, old: Sequence[Kek] = ()) -> None:
        self.current = current
        self._by_id = {kek.id: kek for kek in old}
        self._by_id[current.id] = current

    @property
    def current_id(self) -> str:
        return self.current.id

    @property
    def known_ids(self) -> list[str]:
        return sorted(self._by_id)

    def wrap(self, user_id: str, data_key: bytes) -> tuple[bytes, str]:
        """The data key wrapped by the current KEK, and that KEK's id."""
        aead = nacl.secret.Aead(self.current.key)
        return bytes(aead.encrypt(data_key, _wrap_ad(user_id, self.current.id))), self.current.id

    def unwrap(self, user_id: str, wrapped: bytes, kek_id: str) -> bytes:
        """The data key inside `wrapped`. UnknownKek or DecryptionFailed otherwise."""
        kek = self._by_id.get(kek_id)
        if kek is None:
            raise UnknownKek(kek_id)
        try:
            return nacl.secret.Aead(kek.key).decrypt(bytes(wrapped), _wrap_ad(user_id, kek_id))
        except nacl.exceptions.CryptoError as exc:
            raise DecryptionFailed(f"the data key of user {user_id} does not unwrap") from exc


def _wrap_ad(user_id: str, kek_id: str) -> bytes:
    return WRAP_AD.format(user=user_id, kek=kek_id).encode()


def keyring_from_settings(settings: Settings) -> Keyring:
    """The keyring configured for this process. ConfigError names what is wrong."""
    if settings.vault_kek_file is not None:
        current, old = _keks_from_file(settings.vault_kek_file, settings.vault_kek_id)
    elif settings.vault_kek:
        key = decode_kek(settings.vault_kek, "JICM_VAULT_KEK")
        current, old = Kek(settings.vault_kek_id, key), []
    else:
        raise ConfigError(["JICM_VAULT_KEK or JICM_VAULT_KEK_FILE: missing (the vault needs it)"])
    if settings.vault_old_keks:
        entries = parse_keks(settings.vault_old_keks.replace(",", "\n"), "JICM_VAULT_OLD_KEKS")
        old += [Kek(str(kek_id), key) for kek_id, key in entries]
    _check_distinct(current, old)
    return Keyring(current, old)


def _keks_from_file(path, default_id: str) -> tuple[Kek, list[Kek]]:
    """The key file: one `id:base64` per line; the first is current, the rest are old."""
    name = f"JICM_VAULT_KEK_FILE ({path})"
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([f"{name}: cannot be read: {exc.strerror}"]) from None
    try:
        entries = parse_keks(text, name)
    except ValueError as exc:
        raise ConfigError([str(exc)]) from None
    if not entries:
        raise ConfigError([f"{name}: holds no key"])
    if any(kek_id is None for kek_id, _ in entries[1:]):
        raise ConfigError([f"{name}: every key after the first needs its id (id:base64)"])
    (first_id, first_key), rest = entries[0], entries[1:]
    # A bare key on the first line (a file holding one key) takes JICM_VAULT_KEK_ID.
    current = Kek(first_id or default_id, first_key)
    return current, [Kek(str(kek_id), key) for kek_id, key in rest]


def _check_distinct(current: Kek, old: Sequence[Kek]) -> None:
    ids = [current.id, *(kek.id for kek in old)]
    duplicates = sorted({kek_id for kek_id in ids if ids.count(kek_id) > 1})
    if duplicates:
        raise ConfigError([f"vault KEK ids must be distinct; repeated: {', '.join(duplicates)}"])


class DataKeyCache:
    """Unwrapped data keys by user id: at most `size` of them, each for `seconds`."""

    def __init__(self, size: int = CACHE_SIZE, seconds: float = CACHE_SECONDS) -> None:
        self.size = size
        self.seconds = seconds
        self._keys: OrderedDict[str, tuple[float, DataKey]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, user_id: str) -> DataKey | None:
        with self._lock:
            entry = self._keys.get(user_id)
            if entry is None:
                return None
            stored_at, key = entry
            if time.monotonic() - stored_at > self.seconds:
                del self._keys[user_id]
                return None
            self._keys.move_to_end(user_id)
            return key

    def put(self, user_id: str, key: DataKey) -> None:
        with self._lock:
            self._keys[user_id] = (time.monotonic(), key)
            self._keys.move_to_end(user_id)
            while len(self._keys) > self.size:
                self._keys.popitem(last=False)

    def forget(self, user_id: str) -> None:
        with self._lock:
            self._keys.pop(user_id, None)


class DataKeys:
    """Users' data keys over the `data_keys` collection: created once, unwrapped on use."""

    def __init__(self, collection: Collection, keyring: Keyring, cache: DataKeyCache) -> None:
        self.collection = collection
        self.keyring = keyring
        self.cache = cache

    def get(self, user_id: str) -> DataKey:
        """The user's data key; MissingDataKey if there is none."""
        cached = self.cache.get(user_id)
        if cached is not None:
            return cached
        doc = self.collection.get(user_id)
        if doc is None:
            raise MissingDataKey(user_id)
        key = DataKey(self.keyring.unwrap(user_id, doc["wrapped"], doc["kek_id"]))
        self.cache.put(user_id, key)
        return key

    def get_or_create(self, user_id: str, now: datetime) -> DataKey:
        """The user's data key, created (at the current KEK) if this is their first message."""
        try:
            return self.get(user_id)
        except MissingDataKey:
            pass
        wrapped, kek_id = self.keyring.wrap(user_id, new_data_key_bytes())
        # A concurrent first message may have created it: then use that one, never two keys.
        with contextlib.suppress(DuplicateKeyError):
            self.collection.insert(
                {"_id": user_id, "wrapped": wrapped, "kek_id": kek_id, "created_at": now}
            )
        return self.get(user_id)

    def shred(self, user_id: str) -> bool:
        """Delete the user's data key, here and in this process's cache. True if there was one."""
        self.cache.forget(user_id)
        return self.collection.delete_one({"_id": user_id})
