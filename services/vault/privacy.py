"""The vault's part in privacy: the export of a person's messages, opened, and the erasure.

The export holds every message its author wrote, decrypted (subject, body, sender name
and address, each recipient's name and address: the recipients' data is part of the
author's export, as the policy's "personal information of others you share with us"
asks), with its switch, state and times. It travels only in the RPC reply to privacy,
which seals it at once; nothing of it is logged.

The erasure is `erasure.erase_user`: the data key first (crypto-shredding), then the
documents. A message whose data key is already gone cannot be opened by anyone any more;
the export says so rather than leaving it out.
"""

from __future__ import annotations

from typing import Any

from services.vault.keys import DataKeys, MissingDataKey
from services.vault.sealed_fields import Sealer
from services.vault.storage import VaultRepository


def export_user(repo: VaultRepository, keys: DataKeys, user_id: str) -> dict[str, Any]:
    """The vault's part of an export: every message of the author, opened."""
    docs = repo.messages_of(user_id)
    key = None
    if docs:
        try:
            key = keys.get(user_id)
        except MissingDataKey:
            key = None
    data_key = repo.data_keys.get(user_id)
    return {
        "messages": [_message(key, doc) for doc in docs],
        "data_key": None if data_key is None else {
            "created_at": data_key.get("created_at"), "kek_id": data_key.get("kek_id"),
            "note": "your messages' encryption key; it is itself encrypted and not included"},
    }


def _message(key, doc: dict[str, Any]) -> dict[str, Any]:
    exported: dict[str, Any] = {
        "id": doc["_id"],
        "switch_id": doc["switch_id"],
        "state": doc["state"],
        "inline": doc["inline"],
        "release_delay_seconds": doc["release_delay_seconds"],
        "created_at": doc["created_at"],
        "updated_at": doc["updated_at"],
        "released_at": doc.get("released_at"),
        "dispatched_at": doc.get("dispatched_at"),
    }
    if key is None:
        exported["content"] = None
        exported["note"] = "this message's key was erased: it can no longer be opened"
        return exported
    content = Sealer.of(key, doc).open_content(doc)
    exported["content"] = {
        "subject": content.subject,
        "body": content.body,
        "sender_name": content.sender_name,
        "sender_email": content.sender_email,
        "recipients": [{"id": r.id, "name": r.name, "email": r.email}
                       for r in content.recipients],
    }
    return exported
