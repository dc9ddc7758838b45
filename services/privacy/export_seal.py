"""A finished export at rest: sealed, in chunks, bound to its request and its owner.

An export holds the person's decrypted messages and recipients, so it never rests in
clear: the JSON document is cut into chunks of at most 1 MiB (MongoDB refuses documents
over 16 MiB, and a large export is larger than that), each sealed with XChaCha20-Poly1305
under a key derived from `JICM_SECRET_KEY` for this purpose only. The associated data
names the request, the user, the chunk's place and the number of chunks, so a chunk moved
to another export, reordered, or one missing, fails to open.

Rotating `JICM_SECRET_KEY` makes exports not yet downloaded unreadable: ask for a new one.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

import nacl.exceptions
import nacl.secret

KEY_PURPOSE = "privacy/exports"
CHUNK_BYTES = 1 << 20


class UnreadableExport(Exception):
    """The export's chunks do not open: incomplete, altered, or sealed under another key."""


def _aad(request_id: str, user_id: str, n: int, total: int) -> bytes:
    return f"jicm/privacy/export/v1|request={request_id}|user={user_id}|chunk={n}|of={total}" \
        .encode()


def encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def seal_export(key: bytes, request_id: str, user_id: str, payload: bytes,
                expires_at: datetime) -> list[dict[str, Any]]:
    """The chunk documents of an export (ids `<request id>:<n>`)."""
    aead = nacl.secret.Aead(key)
    pieces = [payload[start:start + CHUNK_BYTES]
              for start in range(0, max(len(payload), 1), CHUNK_BYTES)]
    total = len(pieces)
    return [
        {
            "_id": f"{request_id}:{n:05d}",
            "request_id": request_id,
            "n": n,
            "of": total,
            "data": bytes(aead.encrypt(piece, _aad(request_id, user_id, n, total))),
            "expires_at": expires_at,
        }
        for n, piece in enumerate(pieces)
    ]


def open_export(key: bytes, request_id: str, user_id: str,
                chunks: list[dict[str, Any]]) -> bytes:
    """The export's JSON bytes; UnreadableExport if any chunk is missing or does not open."""
    if not chunks:
        raise UnreadableExport("the export has no chunks")
    total = chunks[0]["of"]
    if [chunk["n"] for chunk in chunks] != list(range(total)):
        raise UnreadableExport("chunks are missing")
    aead = nacl.secret.Aead(key)
    try:
        return b"".join(bytes(aead.decrypt(chunk["data"],
                                           _aad(request_id, user_id, chunk["n"], total)))
                        for chunk in chunks)
    except nacl.exceptions.CryptoError:
        raise UnreadableExport("a chunk does not open with this key") from None


def digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()
