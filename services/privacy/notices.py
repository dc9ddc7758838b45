"""The privacy notices we published, kept word for word, one file per version.

A consent receipt names the notice the person was shown: its version and the SHA-256 of
its exact text. `notices/<version>.txt` is that text as published, so anyone can check a
receipt years later by hashing the file. A new policy version means a new file here (never
an edit of an old one) and a new `JICM_POLICY_VERSION`; privacy refuses to start when the
configured version has no file.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from shared.config import ConfigError

NOTICES_DIR = Path(__file__).resolve().parent / "notices"
VERSION_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(frozen=True)
class Notice:
    """One published version of the privacy policy."""

    version: str
    sha256: str


@cache
def notice(version: str) -> Notice | None:
    """The notice of `version`, or None when we never published one by that name."""
    if not VERSION_PATTERN.fullmatch(version):
        return None
    path = NOTICES_DIR / f"{version}.txt"
    if not path.is_file():
        return None
    return Notice(version=version, sha256=hashlib.sha256(path.read_bytes()).hexdigest())


def current_notice(version: str) -> Notice:
    """The notice of the configured policy version; ConfigError if its text is missing."""
    found = notice(version)
    if found is None:
        raise ConfigError([
            f"JICM_POLICY_VERSION: no published text for {version!r} "
            f"(expected services/privacy/notices/{version}.txt)"
        ])
    return found
