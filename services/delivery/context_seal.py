"""A mail's values sealed at rest: XChaCha20-Poly1305 under a key derived from the secret key.

The values of a mail are its links (verification, password reset, one-click check-in, a
released message's reading link) and, for an inline release, a message's text: each is
enough to act as the person it was meant for. They are kept only sealed, bound to their
record by the associated data (so a sealed blob cannot be moved to another record), and
dropped once the mail has left. Rotating JICM_SECRET_KEY makes mail still queued at that
moment unreadable: it then fails with a reason that says so.
"""

from __future__ import annotations

import json

import nacl.exceptions
import nacl.secret

PURPOSE = "delivery/context"
VERSION = "v1"


class Unreadable(Exception):
    """A sealed context that this key cannot open (rotated key, or tampering)."""


class ContextSeal:
    """Seals and opens the context of one delivery record."""

    def __init__(self, key: bytes) -> None:
        self._aead = nacl.secret.Aead(key)

    def seal(self, record_id: str, context: dict[str, str]) -> bytes:
        plaintext = json.dumps(context, ensure_ascii=False, sort_keys=True).encode()
        return bytes(self._aead.encrypt(plaintext, _aad(record_id)))

    def open(self, record_id: str, sealed: bytes) -> dict[str, str]:
        try:
            plaintext = self._aead.decrypt(sealed, _aad(record_id))
        except nacl.exceptions.CryptoError:
            raise Unreadable("the mail's sealed values cannot be opened with this "
                             "JICM_SECRET_KEY (rotated key, or altered record)") from None
        return json.loads(plaintext)


def _aad(record_id: str) -> bytes:
    return f"jicm/{PURPOSE}/{VERSION}|record={record_id}".encode()
