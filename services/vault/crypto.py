"""Authenticated encryption of message fields with a user's data key.

Every field (subject, body, each recipient's name and address, a read token) is sealed
separately with XChaCha20-Poly1305 (libsodium through PyNaCl's `nacl.secret.Aead`) under a
random 24-byte nonce. The associated data names the user, the message, its revision and the
field, so a ciphertext copied to another user, message, revision or field fails to open
instead of showing the wrong text:

    jicm/msg/v1|user=<user id>|msg=<message id>|rev=<revision>|field=<field name>

A sealed value is stored as bytes: nonce followed by ciphertext and tag.
"""

from __future__ import annotations

import re
import secrets

import nacl.exceptions
import nacl.secret

KEY_BYTES = nacl.secret.Aead.KEY_SIZE
FIELD_AD = "jicm/msg/v1|user={user}|msg={msg}|rev={rev}|field={field}"

# Ids and field names end up inside the associated data, whose parts are separated by
# `|` and `=`: refusing those characters keeps two different bindings from ever
# producing the same bytes.
_AD_PART = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class DecryptionFailed(Exception):
    """A ciphertext did not open: wrong key, tampered bytes, or bound to something else."""


class DataKey:
    """A user's 32-byte data key, unwrapped. Its bytes never appear in a repr or a log."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a data key is {KEY_BYTES} bytes")
        self._aead = nacl.secret.Aead(key)

    def __repr__(self) -> str:
        return "DataKey(<hidden>)"

    def seal(self, plaintext: str, *, user_id: str, message_id: str, rev: int, field: str) -> bytes:
        """Encrypt `plaintext` bound to (user, message, revision, field)."""
        aad = field_ad(user_id, message_id, rev, field)
        return bytes(self._aead.encrypt(plaintext.encode("utf-8"), aad))

    def open(self, sealed: bytes, *, user_id: str, message_id: str, rev: int, field: str) -> str:
        """Decrypt a value sealed for exactly this (user, message, revision, field)."""
        aad = field_ad(user_id, message_id, rev, field)
        try:
            return self._aead.decrypt(bytes(sealed), aad).decode("utf-8")
        except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
            raise DecryptionFailed(f"field {field} of message {message_id} does not open") from exc


def new_data_key_bytes() -> bytes:
    """32 fresh random bytes from the operating system's CSPRNG."""
    return secrets.token_bytes(KEY_BYTES)


def field_ad(user_id: str, message_id: str, rev: int, field: str) -> bytes:
    """The associated data binding a ciphertext to its place."""
    for part in (user_id, message_id, field):
        if not _AD_PART.fullmatch(part):
            raise ValueError(f"{part!r} cannot be bound into associated data")
    if isinstance(rev, bool) or not isinstance(rev, int) or rev < 0:
        raise ValueError("a revision is a non-negative integer")
    return FIELD_AD.format(user=user_id, msg=message_id, rev=rev, field=field).encode("ascii")
