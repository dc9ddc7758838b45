"""The vault's part in privacy: the export of a person's messages, opened, and the erasure.

The export holds every message its author wrote, decrypted (subject, body, sender name
and address, each recipient's name and address: the recipients' data is part of the
author's export, as the policy's "personal information of others you share with us"
asks), with its switch, state and times; and the test releases the author sent themselves (when,
of which switch, how many mails; never their links). It travels only in the RPC reply to privacy,
which seals it at once; nothing of it is logged.

The erasure is `erasure.erase_user`: the data key first (crypto-shredding), then the
documents. A message whose data key is already gone cannot be opened by anyone any more;
the export says so rather than leaving it out.
"""

from __future__ import annotations

from typing import Any

from services.vault.keys import DataKeys, MissingDataKey
from services.vault.records import StoredMessage
from services.vault.sealed_fields import Sealer
from services.vault.storage import VaultRepository
from services.vault.test_release import test_releases_of


def export_user(repo: VaultRepository, keys: DataKeys, user_id: str) -> dict[str, Any]:
    """The vault's part of an export: every message of the author, opened."""
    messages = repo.messages_of(user_id)
    key = None
    if messages:
        try:
            key = keys.get(user_id)
        except MissingDataKey:
            key = None
    data_key = repo.data_keys.get(user_id)
    return {
        "messages": [_message(key, message) for message in messages],
        "test_releases": [release.exported() for release in test_releases_of(repo, user_id)],
        "data_key": None if data_key is None else {
            "created_at": data_key.get("created_at"), "kek_id": data_key.get("kek_id"),
            "note": "your messages' encryption key; it is itself encrypted and not included"},
    }


EXPORTED = ("id", "switch_id", "state", "inline", "release_delay_seconds", "created_at",
            "updated_at", "released_at", "dispatched_at")


def _message(key, message: StoredMessage) -> dict[str, Any]:
    exported: dict[str, Any] = {name: getattr(message, name) for name in EXPORTED}
    if key is None:
        exported["content"] = None
        exported["note"] = "this message's key was erased: it can no longer be opened"
        return exported
    content = Sealer.of(key, message).open_content(message)
    exported["content"] = {
        "subject": content.subject,
        "body": content.body,
        "sender_name": content.sender_name,
        "sender_email": content.sender_email,
        "recipients": [{"id": r.id, "name": r.name, "email": r.email}
                       for r in content.recipients],
    }
    return exported
