"""Erasing a user from the vault: crypto-shredding first, then the documents.

The data key goes first. From that moment nothing the user wrote can be decrypted by
anyone, whatever copies of the message documents survive (a backup, a replica that
has not caught up, a crash before the next line). Then the documents themselves go.
Running it again is harmless: it finds nothing and deletes nothing. The vault's
`ErasureRequested` handler (its part of privacy's erasure saga) calls it.
"""

from __future__ import annotations

import logging

from services.vault.keys import DataKeys
from services.vault.storage import VaultRepository

log = logging.getLogger(__name__)


def erase_user(repo: VaultRepository, keys: DataKeys, user_id: str) -> dict[str, int]:
    """Shred the user's data key, then delete their messages and everything about them."""
    shredded = keys.shred(user_id)
    summary = {"data_keys": int(shredded), **repo.delete_everything_of(user_id)}
    log.info("erased user %s from the vault: %s", user_id, summary)
    return summary
